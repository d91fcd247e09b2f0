"""Receive benchmark: DCMTK storescu -> storescp vs the cds node, one association.

Run from the repository root::

    python bench/receive.py --rounds 5

What it does:

1. Generates once (cached in ``bench/out/ct300``, which git ignores) a synthetic
   CT series: 300 slices of 512 x 512, 16 bit, Explicit VR Little Endian, a
   realistic CT header, about 525 KB per file.
2. Starts, once each, three receivers on free ports of 127.0.0.1:
   ``storescp`` with its defaults, ``storescp +B -pdu 131072`` (its fastest
   options: bit-preserving, PDVs written straight to disk, 128 KiB PDUs),
   and the cds node (``python -m cds serve`` with a fresh home).
3. For every round, gives the series fresh Study/Series/SOP Instance UIDs (a
   fixed-width token in every UID is rewritten in place, outside the timing),
   so the node really stores every instance instead of answering duplicates;
   then times ``/usr/bin/storescu +sd DIR`` (one association, all 300 files)
   into each receiver, in an order rotated per round.
4. Checks each receiver got every file, and prints median/min wall times,
   instances/s, MB/s and the ratio node / storescp.

storescp does not fsync what it writes; the node fsyncs every file and its
directory before it answers Success. So every round also times the node's
durable write alone (300 x write, fsync, rename, fsync of the folder, no
network) on the same disk: what durability costs in that round. Every DCMTK
process runs with ``TCP_NODELAY=1``. The CPU column is each receiver process's
user + system time per round.

``--baseline TREE`` also times a node run from another cds source tree in the
same rounds, for before/after figures from one run on a noisy machine::

    git archive HEAD | tar -x -C /tmp/base && python bench/receive.py --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"

#: every UID of the series is ``<root>.<token>.<kind>.<n>``; the 14-digit token
#: is rewritten in place to give the series fresh UIDs without re-encoding it
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as its generate_uid uses
TOKEN_DIGITS = 14
_TOKEN_RE = re.compile(rb"1\.2\.826\.0\.1\.3680043\.8\.498\.([1-9][0-9]{13})\.")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


# --- the synthetic series ---------------------------------------------------
def _new_token() -> str:
    return str(10 ** (TOKEN_DIGITS - 1) + secrets.randbelow(9 * 10 ** (TOKEN_DIGITS - 1)))


def _phantom(rows: int, cols: int) -> np.ndarray:
    """A water cylinder in air with a little noise, as stored values (HU + 1024)."""
    y, x = np.ogrid[:rows, :cols]
    r = np.hypot(y - rows / 2, x - cols / 2)
    img = np.where(r < rows * 0.42, 1024, 24).astype(np.int32)
    img += np.where(r < rows * 0.1, 60, 0)
    return img


#: header attributes every slice shares (a plausible CT chest/abdomen/pelvis)
_CT_STATIC: dict[str, object] = {
    "SpecificCharacterSet": "ISO_IR 100",
    "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
    "SOPClassUID": CTImageStorage,
    "StudyDate": "20240501",
    "SeriesDate": "20240501",
    "AcquisitionDate": "20240501",
    "ContentDate": "20240501",
    "StudyTime": "101500",
    "SeriesTime": "101500",
    "AccessionNumber": "BENCH0001",
    "Modality": "CT",
    "Manufacturer": "SYNTHETIC",
    "InstitutionName": "Bench Hospital",
    "ReferringPhysicianName": "Referrer^Bench",
    "StationName": "CT01",
    "StudyDescription": "CT CHEST ABDOMEN PELVIS",
    "SeriesDescription": "AXIAL 1.0 B30f",
    "ManufacturerModelName": "BenchScan 300",
    "PatientName": "Bench^Synthetic",
    "PatientID": "BENCH-0001",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "PatientAge": "054Y",
    "BodyPartExamined": "CHEST",
    "SliceThickness": "1.0",
    "KVP": "120",
    "DataCollectionDiameter": "500",
    "SoftwareVersions": "bench-1",
    "ReconstructionDiameter": "380",
    "GantryDetectorTilt": "0",
    "TableHeight": "150",
    "RotationDirection": "CW",
    "ExposureTime": "500",
    "XRayTubeCurrent": "200",
    "Exposure": "100",
    "FilterType": "BODY",
    "ConvolutionKernel": "B30f",
    "PatientPosition": "HFS",
    "StudyID": "1",
    "SeriesNumber": 2,
    "AcquisitionNumber": 1,
    "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"],
    "PositionReferenceIndicator": "",
    "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2",
    "Rows": 512,
    "Columns": 512,
    "PixelSpacing": ["0.742188", "0.742188"],
    "BitsAllocated": 16,
    "BitsStored": 12,
    "HighBit": 11,
    "PixelRepresentation": 0,
    "WindowCenter": "40",
    "WindowWidth": "400",
    "RescaleIntercept": "-1024",
    "RescaleSlope": "1",
    "RescaleType": "HU",
}


def generate_series(folder: Path, count: int) -> None:
    """Write ``count`` CT slices into ``folder`` (atomically: a .tmp folder then rename)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    token = _new_token()
    study, series, frame = (f"{UID_ROOT}{token}.{k}.1" for k in (1, 2, 4))
    rng = np.random.default_rng(20240501)
    base = _phantom(512, 512)
    for i in range(count):
        sop = f"{UID_ROOT}{token}.3.{i + 1}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        for keyword, value in _CT_STATIC.items():
            setattr(ds, keyword, value)
        z = -150.0 + i * 1.0
        ds.update(
            {
                "SOPInstanceUID": sop,
                "StudyInstanceUID": study,
                "SeriesInstanceUID": series,
                "FrameOfReferenceUID": frame,
                "AcquisitionTime": f"1016{i % 60:02d}",
                "ContentTime": f"1016{i % 60:02d}",
                "InstanceNumber": i + 1,
                "ImagePositionPatient": ["-190.0", "-190.0", f"{z:.1f}"],
                "SliceLocation": f"{z:.1f}",
            }
        )
        noise = rng.integers(0, 40, size=base.shape, dtype=np.int32)
        ds.PixelData = np.clip(base + noise, 0, 4095).astype("<u2").tobytes()
        ds.save_as(tmp / f"CT{i + 1:04d}.dcm", enforce_file_format=True)
    os.replace(tmp, folder)


def ensure_series(count: int) -> Path:
    folder = OUT / f"ct{count}"
    if folder.is_dir() and len(list(folder.glob("*.dcm"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    print(f"generating {count} CT slices in {folder.relative_to(REPO)} (once) ...", flush=True)
    generate_series(folder, count)
    return folder


@dataclass
class UidRewriter:
    """Gives the series fresh UIDs per round by rewriting the token in place."""

    files: list[Path]
    offsets: dict[Path, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path in self.files:
            with path.open("rb") as f:
                head = f.read(8192)
            end = head.find(_PIXEL_DATA_TAG)
            head = head[: end if end > 0 else len(head)]
            offs = [m.start(1) for m in _TOKEN_RE.finditer(head)]
            if len(offs) < 5:  # meta SOP UID, SOP UID, study, series, frame of reference
                raise SystemExit(f"{path}: UID token not found; delete {OUT} and rerun")
            self.offsets[path] = offs

    def fresh(self) -> None:
        token = _new_token().encode()
        for path, offs in self.offsets.items():
            fd = os.open(path, os.O_WRONLY)
            try:
                for off in offs:
                    os.pwrite(fd, token, off)
            finally:
                os.close(fd)


# --- processes --------------------------------------------------------------
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _kill_children() -> None:
    for proc in _CHILDREN:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in _CHILDREN:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _CHILDREN.clear()


def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd or REPO,
            start_new_session=True,  # its own process group: killed whole at exit
        )
    _CHILDREN.append(proc)
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"receiver exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"receiver not listening on {port} after {timeout} s")


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"node exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=1) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"node not healthy at {url} after {timeout} s:\n{log.read_text()[-2000:]}")


# --- receivers --------------------------------------------------------------
@dataclass
class Receiver:
    name: str
    ae_title: str
    port: int
    fsync: str
    out_dir: Path | None = None
    spool: Path | None = None
    times: list[float] = field(default_factory=list)
    pid: int | None = None
    is_node: bool = False
    #: CPU seconds (user + system, every thread) the receiver spent per timed round
    cpu: list[float] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        if self.pid is None:
            return 0.0
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stored(self) -> int:
        root = self.out_dir if self.out_dir is not None else self.spool
        assert root is not None
        return sum(1 for p in root.rglob("*") if p.is_file() and p.suffix != ".part")

    def after_round(self) -> None:
        if self.out_dir is not None:  # storescp: keep the disk from filling
            for p in self.out_dir.iterdir():
                p.unlink()
        # let the page cache write back what this round left dirty, so the next
        # receiver is not timed against another one's write-back
        os.sync()


def start_storescp(run: Path, name: str, extra: list[str]) -> Receiver:
    port = free_port()
    out = run / name
    out.mkdir()
    log = run / f"{name}.log"
    argv = [STORESCP, "-aet", "STORESCP", *extra, "-od", str(out), str(port)]
    proc = spawn(argv, log, dcmtk_env())
    wait_listening(port, proc, log, 10)
    name = f"storescp {' '.join(extra)}".strip()
    return Receiver(name, "STORESCP", port, "no", out_dir=out, pid=proc.pid)


def start_node(run: Path, tree: Path | None = None) -> Receiver:
    """The node from this checkout, or (``tree``) from another source tree of cds."""
    port, http = free_port(), free_port()
    tag = "" if tree is None else "-baseline"
    home = run / f"cds-home{tag}"
    cfg = run / f"cds{tag}.yaml"
    cfg.write_text(
        f"dicom: {{ae_title: CDS, host: 127.0.0.1, port: {port}}}\n"
        f"http: {{host: 127.0.0.1, port: {http}}}\n"
        "spool: {min_free_mb: 100}\n"
        "log: {level: warning}\n"
    )
    log = run / f"node{tag}.log"
    argv = [sys.executable, "-m", "cds", "serve", "--config", str(cfg), "--home", str(home)]
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree.resolve())}
    proc = spawn(argv, log, env, cwd=tree)
    wait_healthy(f"http://127.0.0.1:{http}/health", proc, log, 60)
    name = "cds node" if tree is None else f"cds node {tree}"
    rx = Receiver(name, "CDS", port, "yes: file + dir per instance", pid=proc.pid, is_node=True)
    rx.spool = home / "spool" / "studies"
    return rx


_PROFILER: list[subprocess.Popen[bytes]] = []


def start_profiler(node: Receiver, out: Path, run: Path) -> None:
    if node.pid is None:
        raise SystemExit("--profile needs the node (not --only storescp)")
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    argv = [py_spy, "record", "--pid", str(node.pid), "--threads", "--nonblocking", "--rate", "250",
            "--format", "raw", "--output", str(out.resolve())]  # fmt: skip
    _PROFILER.append(spawn(argv, run / "py-spy.log"))
    time.sleep(1.0)  # let it attach


def stop_profiler() -> None:
    for proc in _PROFILER:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # py-spy writes its file on SIGINT
        proc.wait(timeout=30)
        print(f"py-spy profile written (rc {proc.returncode})")
    _PROFILER.clear()


def storescu_argv(rx: Receiver, series: Path) -> list[str]:
    return [
        STORESCU, "-aet", "BENCH", "-aec", rx.ae_title, "127.0.0.1", str(rx.port),
        "+sd", str(series),
    ]  # fmt: skip


def send(rx: Receiver, series: Path, senders: int = 1) -> float:
    """Wall seconds for storescu to send the series: one association, or ``senders``
    storescu at once, each sending its share of the files (every ``senders``-th)."""
    if senders == 1:
        argvs = [storescu_argv(rx, series)]
    else:
        files = sorted(str(p) for p in series.glob("*.dcm"))
        argvs = [storescu_argv(rx, series)[:-2] + files[i::senders] for i in range(senders)]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(a, env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for a in argvs
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    elapsed = time.perf_counter() - t0
    for p, out in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(
                f"storescu -> {rx.name} failed ({p.returncode}):\n"
                f"{out.decode(errors='replace')[-2000:]}"
            )
    return elapsed


def durable_writes(folder: Path, n: int, size: int) -> float:
    """Seconds to write ``n`` files of ``size`` bytes as the node's spool does (write,
    fsync the file, rename into place, fsync the folder), without any network: the
    share of the node's time that durability costs on this disk in this round."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    data = b"\0" * size
    os.sync()
    t0 = time.perf_counter()
    for i in range(n):
        tmp, final = folder / f"{i}.part", folder / f"{i}.dcm"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    return elapsed


# --- main -------------------------------------------------------------------
def start_receivers(run: Path, args: argparse.Namespace) -> list[Receiver]:
    receivers: list[Receiver] = []
    if args.only != "node":
        fork = ["--fork"] if args.senders > 1 else []
        receivers.append(start_storescp(run, "storescp-default", fork))
        receivers.append(start_storescp(run, "storescp-fast", ["+B", "-pdu", "131072", *fork]))
    if args.only != "storescp":
        if args.baseline is not None:
            receivers.append(start_node(run, args.baseline))
        receivers.append(start_node(run))
    return receivers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--files", type=int, default=300, help="slices in the series (300)")
    parser.add_argument(
        "--senders",
        type=int,
        default=1,
        help="storescu sending at once, each its share of the files (default 1: one "
        "association); storescp then runs with --fork (a process per association)",
    )
    parser.add_argument(
        "--only", choices=["node", "storescp"], help="time only these receivers (for profiling)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="record the node with py-spy (on-CPU samples per thread, collapsed stacks) "
        "during the timed rounds into FILE",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="TREE",
        help="also time a node run from another cds source tree (e.g. one made by "
        "git archive REV | tar -x -C TREE), in the same rounds: before/after in one run",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    for tool in (STORESCU, STORESCP):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} not found: apt-get install dcmtk")
    atexit.register(_kill_children)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    series = ensure_series(args.files)
    files = sorted(series.glob("*.dcm"))
    total_bytes = sum(p.stat().st_size for p in files)
    rewriter = UidRewriter(files)

    OUT.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="run-", dir=OUT))  # same disk as a real spool
    try:
        receivers = start_receivers(run, args)

        floor: list[float] = []
        for r in range(args.warmup + args.rounds):
            if r == args.warmup and args.profile is not None:
                start_profiler(receivers[-1], args.profile, run)
            rewriter.fresh()  # fresh UIDs for every round: the node stores, never dedups
            order = receivers[r % len(receivers) :] + receivers[: r % len(receivers)]
            seen: dict[str, float] = {}
            for rx in order:
                before, cpu_before = rx.stored(), rx.cpu_seconds()
                seen[rx.name] = send(rx, series, args.senders)
                cpu = rx.cpu_seconds() - cpu_before
                got = rx.stored() - before
                if got != len(files):
                    raise SystemExit(f"{rx.name}: stored {got} of {len(files)} files")
                rx.after_round()
                if r >= args.warmup:
                    rx.times.append(seen[rx.name])
                    rx.cpu.append(cpu)
            durable = durable_writes(run / "durable", len(files), total_bytes // len(files))
            if r >= args.warmup:
                floor.append(durable)
            label = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}"
            line = "  ".join(f"{rx.name} {seen[rx.name]:.3f} s" for rx in receivers)
            line += f"  (durable writes alone {durable:.3f} s)"
            print(f"{label:>8}: {line}", flush=True)
        stop_profiler()
        report(receivers, floor, len(files), total_bytes, series, args)
    finally:
        _kill_children()
        shutil.rmtree(run, ignore_errors=True)
    return 0


def report(  # noqa: PLR0917 (the figures of one run)
    receivers: list[Receiver],
    floor: list[float],
    n: int,
    total_bytes: int,
    series: Path,
    args: argparse.Namespace,
) -> None:
    print()
    print(
        f"{n} files, {total_bytes / 1e6:.1f} MB ({total_bytes // n} B each), "
        f"{'one association' if args.senders == 1 else f'{args.senders} associations at once'}, "
        f"{args.rounds} rounds after {args.warmup} warm-up, order rotated per round"
    )
    print(
        f"{'receiver':<30} {'median s':>9} {'min s':>7} {'inst/s':>7} {'MB/s':>7} "
        f"{'CPU s':>6}  fsync"
    )
    for rx in receivers:
        med = statistics.median(rx.times)
        print(
            f"{rx.name:<30} {med:>9.3f} {min(rx.times):>7.3f} {n / med:>7.0f} "
            f"{total_bytes / 1e6 / med:>7.1f} {statistics.median(rx.cpu):>6.2f}  {rx.fsync}"
        )
    print(
        "(CPU s: the receiver process's median user + system CPU per round, all threads"
        + ("; storescp --fork: the parent's only)" if args.senders > 1 else ")")
    )
    print(
        f"durable writes alone: median {statistics.median(floor):.3f} s, min {min(floor):.3f} s "
        f"({n} x write + fsync file + rename + fsync folder, no network, "
        f"{1000 * statistics.median(floor) / n:.2f} ms per instance)"
    )
    for node in (rx for rx in receivers if rx.is_node):
        for rx in receivers:
            if rx is node:
                continue
            ratio_med = statistics.median(node.times) / statistics.median(rx.times)
            ratio_min = min(node.times) / min(rx.times)
            print(f"ratio {node.name} / {rx.name}: median {ratio_med:.2f}x, min {ratio_min:.2f}x")
    print()
    print(f"command: python bench/receive.py {shlex.join(sys.argv[1:])}")
    for rx in receivers:
        print(f"  {rx.name}: TCP_NODELAY=1 {shlex.join(storescu_argv(rx, series))}")
    print(
        "  storescp is started as: TCP_NODELAY=1 /usr/bin/storescp -aet STORESCP [+B -pdu 131072]"
        " -od DIR PORT; the node as: python -m cds serve --config CFG --home FRESH_HOME"
    )


if __name__ == "__main__":
    sys.exit(main())
