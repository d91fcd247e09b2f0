"""``cds demo``: the whole round trip on one machine, on a synthetic study.

A throw-away Orthanc plays the hospital PACS: a generated CT study (no patient
data: the patient is ``DEMO^CDS``) is uploaded to it, Orthanc sends it to a cds
node running in this process (C-STORE, exactly as a PACS would), the node's
routing rules run the bundled reference models, and the advisory results (SEG,
SR, GSPS, SC) are delivered back into the same study in Orthanc. Everything
listens on 127.0.0.1 on free ports, in a temporary folder that is removed at
the end: ``--keep`` leaves everything running until Ctrl-C, ``--out DIR`` keeps a
copy of the result files. The demo never prints a path that is gone when it ends.

Without Orthanc the node still receives the study (sent by cds' own C-STORE
SCU) and runs the models; the demo then lists the result objects it wrote.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cds.config import (
    AssemblySettings,
    DeliverySettings,
    DicomSettings,
    HttpSettings,
    InferenceSettings,
    LogSettings,
    ResultsSettings,
    RoutingSettings,
    Settings,
    SpoolSettings,
)
from cds.delivery.scu import store_batch
from cds.demo_study import DEMO_PATIENT_NAME, DemoStudy, synthetic_ct
from cds.destinations import Destination
from cds.domain import DeliveryState, StudyState
from cds.logging import configure_logging
from cds.orchestrator import Node

#: models the demo's routing file runs (bundled in the repository's models/)
DEMO_MODELS = ("cds-ref-ct-bone", "cds-ref-blob-detect")
ORTHANC_AE = "ORTHANC"

Echo = Callable[[str], None]


def demo_routing(destination_port: int | None) -> dict[str, Any]:
    """The demo's routing file: deploy/routing.example.yaml's adult CT rule, both CT
    reference models, every result kind, sent to Orthanc when there is one."""
    dests = ["pacs"] if destination_port is not None else []
    doc: dict[str, Any] = {
        "destinations": {},
        "pipelines": {
            "ct-bone": {
                "model": "cds-ref-ct-bone",
                "results": ["SEG", "SR"],
                "destinations": dests,
            },
            "ct-hyperdensity": {
                "model": "cds-ref-blob-detect",
                "results": ["GSPS", "SR", "SC"],
                "destinations": dests,
            },
        },
        "rules": [
            {
                "name": "adult CT",
                "priority": 10,
                "match": [
                    {"attribute": "Modality", "equals": "CT"},
                    {"attribute": "SliceThickness", "range": {"max": 5}},
                ],
                "exclude": [
                    {"attribute": "PatientAge", "range": {"max": 17.99}},
                    {"attribute": "ImageType", "in": ["LOCALIZER", "DERIVED"]},
                ],
                "select": "thinnest",
                "pipelines": ["ct-bone", "ct-hyperdensity"],
            }
        ],
    }
    if destination_port is not None:
        doc["destinations"]["pacs"] = {
            "ae_title": ORTHANC_AE,
            "host": "127.0.0.1",
            "port": destination_port,
        }
    return doc


# --- helpers -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_orthanc() -> Path | None:
    found = shutil.which("Orthanc")
    for candidate in (Path("/usr/sbin/Orthanc"), Path(found) if found else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def find_models(given: Path | None) -> Path | None:
    """The folder holding the demo's models: ``given``, ./models, or the source tree's."""
    candidates = (
        [given] if given is not None else [Path("models"), Path(__file__).parents[1] / "models"]
    )
    for c in candidates:
        if all((c / name / "manifest.yaml").is_file() for name in DEMO_MODELS):
            return c.resolve()
    return None


class OrthancPacs:
    """A throw-away Orthanc on loopback: its REST API with urllib (no extra dependency)."""

    def __init__(self, binary: Path, workdir: Path, node_ae: str, node_port: int) -> None:
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "cds-demo",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AE,
            "DicomModalities": {"cds": [node_ae, "127.0.0.1", node_port]},
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
        }
        (workdir / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
        self._log = (workdir / "orthanc.log").open("ab")
        self.log_path = workdir / "orthanc.log"
        self.proc = subprocess.Popen(
            [str(binary), str(workdir / "orthanc.json")],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "1"},
        )

    def call(self, method: str, path: str, body: bytes | None = None, timeout: float = 300) -> Any:
        req = urllib.request.Request(self.url + path, data=body, method=method)  # noqa: S310 - loopback URL we built
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            return json.loads(r.read() or b"null")

    def wait_ready(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.proc.returncode}); see {self.log_path}")
            try:
                return str(self.call("GET", "/system", timeout=2)["Version"])
            except (OSError, urllib.error.URLError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not answer in {timeout:.0f} s") from None
                time.sleep(0.1)

    def series(self, study_id: str) -> list[dict[str, Any]]:
        out = []
        for s in self.call("GET", f"/studies/{study_id}/series"):
            tags = s.get("MainDicomTags", {})
            out.append(
                {
                    "modality": tags.get("Modality", "?"),
                    "number": tags.get("SeriesNumber", ""),
                    "description": tags.get("SeriesDescription", ""),
                    "instances": len(s.get("Instances", [])),
                }
            )
        return sorted(out, key=lambda s: (s["modality"] != "CT", s["modality"], s["description"]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # throw-away state: no graceful stop needed
            self.proc.wait(10)
        self._log.close()


# --- the run -----------------------------------------------------------------


class DemoError(Exception):
    """The demo cannot go on; the message says why (no path that is about to be removed)."""


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "empty log"


@dataclass
class DemoOutcome:
    ok: bool
    series: list[dict[str, Any]] = field(default_factory=list)  # in Orthanc, or written locally
    problems: list[str] = field(default_factory=list)


@contextmanager
def _workdir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="cds-demo-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def demo_settings(home: Path, routing: Path, models: Path, lang: str) -> Settings:
    """The node's settings: loopback, free ports, a 2 s quiet time, quick retries."""
    return Settings(
        home=home,
        dicom=DicomSettings(ae_title="CDS", host="127.0.0.1", port=free_port()),
        http=HttpSettings(host="127.0.0.1", port=free_port()),
        spool=SpoolSettings(min_free_mb=64),
        assembly=AssemblySettings(quiet_time_s=2, check_interval_s=0.2),
        routing=RoutingSettings(file=routing, reload_interval_s=60),
        inference=InferenceSettings(model_dirs=[models]),
        results=ResultsSettings(language="fr" if lang == "fr" else "en"),
        delivery=DeliverySettings(backoff_initial_s=1, backoff_max_s=5, poll_interval_s=0.2),
        log=LogSettings(format="console", level="warning"),
    )


class _Demo:
    """One run: the study, the optional Orthanc, the node; ``close`` stops them."""

    def __init__(self, work: Path, echo: Echo, settings: Settings) -> None:
        self.work = work
        self.echo = echo
        self.settings = settings
        self.pacs: OrthancPacs | None = None
        self.node: Node | None = None
        self.orthanc_study = ""
        self.study_key = ""
        self.kept: Path | None = None  # where --out copied the result files

    def start(self, binary: Path | None, wanted: bool = True) -> None:
        if binary is not None:
            self.pacs = OrthancPacs(binary, self.work / "orthanc", "CDS", self.settings.dicom.port)
            try:
                version = self.pacs.wait_ready()
            except RuntimeError as exc:  # its log is in the folder about to be removed
                raise DemoError(
                    f"{str(exc).split(';')[0]}: {_last_line(self.pacs.log_path)}"
                ) from None
            self.echo(
                f"[1/5] Orthanc {version} plays the PACS: {self.pacs.url}/app/explorer.html, "
                f"DICOM {ORTHANC_AE}@127.0.0.1:{self.pacs.dicom_port}"
            )
        elif not wanted:
            self.echo(
                "[1/5] Orthanc not used (--no-orthanc): cds' own C-STORE sends the study and "
                "the results stay in the node's results folder."
            )
        else:
            self.echo(
                "[1/5] Orthanc not found (/usr/sbin/Orthanc or Orthanc on PATH): the results "
                "stay in the node's results folder. To see them delivered into a PACS, install "
                "Orthanc (Debian/Ubuntu: sudo apt-get install orthanc) and run cds demo again."
            )
        routing = demo_routing(self.pacs.dicom_port if self.pacs else None)
        assert self.settings.routing.file is not None
        self.settings.routing.file.write_text(
            yaml.safe_dump(routing, sort_keys=False), encoding="utf-8"
        )
        self.node = Node(self.settings)
        self.node.start()
        loaded = [f"{m.name} {m.version} on {m.provider}" for m in self.node.models.all()]
        self.echo(
            f"[2/5] cds node: DICOM CDS@127.0.0.1:{self.settings.dicom.port}, "
            f"models: {', '.join(loaded)}"
        )

    def send(self, study: DemoStudy) -> None:
        if self.pacs is not None:
            ids = {
                self.pacs.call("POST", "/instances", f.read_bytes())["ParentStudy"]
                for f in study.files
            }
            (self.orthanc_study,) = ids
            job = self.pacs.call("POST", "/modalities/cds/store", self.orthanc_study.encode())
            failed = int(job.get("FailedInstancesCount", 0)) if isinstance(job, dict) else 0
            self.echo(
                f"[3/5] {len(study.files)} instances uploaded to Orthanc, which sent the study "
                f"to cds (C-STORE){f': {failed} failed' if failed else ''}"
            )
        else:
            dest = Destination(ae_title="CDS", host="127.0.0.1", port=self.settings.dicom.port)
            sent = store_batch(study.files, dest, "DEMO", 30)
            self.echo(f"[3/5] {sum(o.ok for o in sent)} instances sent to cds (C-STORE)")

    def wait(self, study_uid: str, timeout: float) -> str:
        """Until the node finished the study and its deliveries; returns the study state."""
        assert self.node is not None
        store = self.node.store
        deadline = time.monotonic() + timeout
        state = "not received"
        while time.monotonic() < deadline:
            found = [s for s in store.list_studies(None, limit=1000) if s.study_uid == study_uid]
            if found:
                self.study_key, state = found[0].study_key, found[0].state.value
                finished = found[0].state in (StudyState.DONE, StudyState.FAILED)
                pending = store.list_deliveries(self.study_key, DeliveryState.PENDING)
                if finished and not pending:
                    break
            time.sleep(0.2)
        else:
            state += f" (gave up after {timeout:.0f} s)"
        jobs = ", ".join(
            f"{j.kind.split(':')[0]} {j.state.value}"
            for j in store.list_jobs(study_key=self.study_key or None)
        )
        self.echo(
            f"[4/5] cds: study {self.study_key[:12]}... {state} after the "
            f"{self.settings.assembly.quiet_time_s:.0f} s quiet time; jobs: {jobs or 'none'}"
        )
        return state

    def keep_results(self, out: Path) -> None:
        """Copy the result files into ``out`` (``--out``): one folder per kind of object."""
        src = self.settings.results_path / self.study_key if self.study_key else None
        if src is None or not src.is_dir():
            self.echo(f"no result files to copy into {out}")
            return
        try:
            shutil.copytree(src, out, dirs_exist_ok=True)
        except OSError as exc:
            raise DemoError(f"--out {out}: cannot copy the result files ({exc})") from None
        self.kept = out

    def report(self, seconds: float, keep: bool) -> DemoOutcome:
        """What was delivered and what Orthanc now holds, or what was written locally.
        Paths and links only where they outlive the demo (``--out``, or ``--keep``)."""
        assert self.node is not None
        key = self.study_key
        deliveries = self.node.store.list_deliveries(key, limit=10_000) if key else []
        by_state: dict[str, int] = {}
        problems = []
        for d in deliveries:
            by_state[d.state.value] = by_state.get(d.state.value, 0) + 1
            if d.state is not DeliveryState.DELIVERED and d.last_error:
                problems.append(f"{d.modality} to {d.destination}: {d.state.value}: {d.last_error}")
        if self.pacs is None:
            series = self._local_results(keep)
        else:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())) or "none"
            self.echo(f"[5/5] deliveries to Orthanc: {counts} ({seconds:.1f} s after the upload)")
            series = self.pacs.series(self.orthanc_study)
            self.echo(f"Orthanc now holds in the study ({self.orthanc_study}):")
            for s in series:
                self.echo(f"  {s['modality']:4} {s['instances']:3} instance(s)  {s['description']}")
            if keep:
                self.echo(
                    f"Open it: {self.pacs.url}/app/explorer.html#study?uuid={self.orthanc_study}"
                )
            else:
                self.echo(
                    "Orthanc stops and its copy of the study is removed when the demo ends "
                    "(cds demo --keep leaves it running to browse)"
                )
            if self.kept is not None:
                self.echo(f"The result files are also in {self.kept}")
        missing = {"SR", "SEG"} - {s["modality"] for s in series}
        if missing:
            where = "Orthanc holds" if self.pacs is not None else "the node wrote"
            problems.append(f"{where} no {' and no '.join(sorted(missing))} result")
        for p in problems:
            self.echo(f"  problem: {p}")
        return DemoOutcome(not missing, series, problems)

    def _local_results(self, keep: bool) -> list[dict[str, Any]]:
        key = self.study_key
        root = self.kept or self.settings.results_path / key
        files = sorted(root.rglob("*.dcm")) if key else []
        shown = keep or self.kept is not None  # the folder outlives the demo
        where = f" in {root}" if shown else ""
        self.echo(f"[5/5] {len(files)} result object(s) written{where}:")
        series = []
        for folder in sorted({f.parent for f in files}):
            n = sum(f.parent == folder for f in files)
            series.append({"modality": folder.name, "instances": n, "description": ""})
            self.echo(f"  {folder.name:4} {n:3} object(s){f' in {folder}' if shown else ''}")
        if not shown:
            self.echo(
                "  (in a temporary folder, removed when the demo ends: --out DIR keeps the "
                "files, --keep keeps everything running until Ctrl-C)"
            )
        return series

    def close(self) -> None:
        if self.node is not None:
            self.node.stop()
        if self.pacs is not None:
            self.pacs.stop()


def run_demo(
    echo: Echo,
    *,
    slices: int = 40,
    size: int = 128,
    models: Path | None = None,
    lang: str = "en",
    timeout: float = 180,
    orthanc: Path | bool = True,
    wait_forever: Callable[[], None] | None = None,
    out: Path | None = None,
) -> DemoOutcome:
    """Run the round trip and report through ``echo``. ``orthanc``: True = find it,
    False = run without it, a path = that binary. ``wait_forever`` (``--keep``) is
    called once the results are shown; it returns when the user wants to stop.
    ``out`` (``--out``): a folder the result files are copied into, kept."""
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return DemoOutcome(False, problems=[f"--out {out}: cannot create ({exc.strerror})"])
    model_dir = find_models(models)
    if model_dir is None:
        return DemoOutcome(
            False,
            problems=[
                f"models {' and '.join(DEMO_MODELS)} not found in {models or './models'}: "
                "run cds demo from the repository root, or give --models DIR"
            ],
        )
    binary = find_orthanc() if orthanc is True else (orthanc or None)
    configure_logging("console", "warning")
    with _workdir() as work:
        package_dir = work / "models"  # only the demo's models: quicker to load
        package_dir.mkdir()
        for name in DEMO_MODELS:
            (package_dir / name).symlink_to(model_dir / name, target_is_directory=True)
        study = synthetic_ct(work / "study", slices, size)
        echo(
            f"cds demo: a synthetic CT study ({slices} slices of {size}x{size}, patient "
            f"{DEMO_PATIENT_NAME}, no real patient data)"
        )
        demo = _Demo(
            work, echo, demo_settings(work / "home", work / "routing.yaml", package_dir, lang)
        )
        try:
            demo.start(binary if isinstance(binary, Path) else None, wanted=orthanc is not False)
            t0 = time.monotonic()
            demo.send(study)
            demo.wait(study.study_uid, timeout)
            if out is not None:
                demo.keep_results(out)
            outcome = demo.report(time.monotonic() - t0, keep=wait_forever is not None)
            if wait_forever is not None:
                echo(
                    f"Look: cds studies --home {demo.settings.home}; Ctrl-C stops everything "
                    f"and removes {work}."
                )
                wait_forever()
            return outcome
        except DemoError as exc:
            return DemoOutcome(False, problems=[str(exc)])
        finally:
            demo.close()
