"""A burst of studies: how busy the model's device stays while several arrive at once.

    python bench/burst.py [--model models/cds-ref-perf-unet] [--studies 10] [--slices 300]
                          [--size 512] [--providers auto]

Issue 19, item 7 asks, on a GPU machine, for the GPU busy >= 80 % during a burst of 10
studies. What it does, in one run:

1. Writes ``--studies`` synthetic CT studies (``cds.demo.synthetic_ct``, fresh UIDs each)
   of ``--slices`` slices of ``--size`` x ``--size``.
2. Starts a throw-away Orthanc and the node, routed as ``bench/e2e.py`` does (every CT to
   ``--model``, its results to that Orthanc), and, when ``nvidia-smi`` is there, samples
   the GPUs' utilisation every 100 ms.
3. Sends every study at once (one DCMTK ``storescu`` each) and waits until all are done
   and every delivery is acknowledged.
4. Prints, from the node's own records: the burst's span (the first study complete ->
   the last result acknowledged), each study's end to end (complete -> its last result
   acknowledged), studies per minute, the provider the model ran on, and the GPU busy
   share over the burst's span (the mean of ``utilization.gpu`` of the samples taken in
   it, per GPU), or says it was not measured (no ``nvidia-smi``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from e2e import get, prepare, start_node, start_pacs, ts, wait_done  # noqa: E402
from receive import STORESCU, _kill_children, dcmtk_env  # noqa: E402

from cds.demo import synthetic_ct  # noqa: E402


class GpuSampler:
    """``nvidia-smi``'s utilisation of each GPU, every 100 ms, with the time of each line."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, float]] = []  # (time, GPU index, busy %)
        binary = shutil.which("nvidia-smi")
        self._proc: subprocess.Popen[str] | None = None
        if binary is not None:
            query = ["--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"]
            self._proc = subprocess.Popen(
                [binary, *query, "-lms", "100"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        if self._proc is not None:
            threading.Thread(target=self._read, daemon=True).start()

    @property
    def present(self) -> bool:
        return self._proc is not None

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            index, _, busy = line.partition(",")
            try:
                self.samples.append((time.time(), int(index), float(busy)))
            except ValueError:  # a header or "[N/A]"
                continue

    def busy(self, start: float, end: float) -> dict[int, float]:
        """Each GPU's mean busy % over [start, end]."""
        per: dict[int, list[float]] = {}
        for t, gpu, pct in self.samples:
            if start <= t <= end:
                per.setdefault(gpu, []).append(pct)
        return {gpu: statistics.fmean(v) for gpu, v in sorted(per.items())}

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "cds-ref-perf-unet")
    ap.add_argument("--studies", type=int, default=10)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--quiet", type=float, default=2.0, help="assembly quiet time (excluded)")
    ap.add_argument("--providers", default="auto", choices=["auto", "tensorrt", "cuda", "cpu"])
    ap.add_argument("--timeout", type=float, default=1800)
    return ap.parse_args()


def main() -> int:
    args = _args()
    orthanc_bin = prepare(args.model)
    if orthanc_bin is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="cds-bench-burst-") as tmp:
        run = Path(tmp)
        t0 = time.perf_counter()
        studies = [
            synthetic_ct(run / f"ct{i}", args.slices, args.size) for i in range(args.studies)
        ]
        print(
            f"{args.studies} studies of {args.slices} slices {args.size}x{args.size} written in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        pacs = start_pacs(orthanc_bin, run, args.model)
        port, url, _ = start_node(run, run / "routing.yaml", args.quiet, args.providers)
        gpus = GpuSampler()
        argv = [STORESCU, "-aet", "BENCH", "-aec", "CDS", "127.0.0.1", str(port), "+sd"]
        senders = [
            subprocess.Popen([*argv, str(run / f"ct{i}")], env=dcmtk_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for i in range(args.studies)
        ]  # fmt: skip
        for p in senders:
            out = p.communicate(timeout=args.timeout)[0]
            if p.returncode != 0:
                raise SystemExit(f"storescu failed ({p.returncode}):\n{out[-2000:]!r}")
        done = [wait_done(url, s.study_uid, args.timeout) for s in studies]
        provider = {m["name"]: m["provider"] for m in get(f"{url}/health")["models"]}
        gpus.stop()
        _kill_children()
        pacs.stop()
    spans = []
    for detail, rows in done:
        bad = [r for r in rows if r["state"] != "delivered"]
        if detail["state"] != "done" or bad:
            raise SystemExit(f"a study is {detail['state']}, undelivered: {bad}")
        spans.append((ts(detail["completed_at"]), max(ts(r["delivered_at"]) for r in rows)))
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    each = sorted(e - s for s, e in spans)
    print(f"model {args.model.name} on {provider}")
    span = last - first
    print(f"burst: first study complete -> last result acknowledged  {span:8.3f} s")
    print(f"  studies per minute over the burst                      {60 * len(spans) / span:8.1f}")
    median = statistics.median(each)
    print(f"  each study complete -> its results acknowledged: median {median:.3f} s, ", end="")
    print(f"max {each[-1]:.3f} s")
    if gpus.present:
        busy = gpus.busy(first, last)
        shown = ", ".join(f"GPU {g} {pct:.0f} %" for g, pct in busy.items()) or "no sample"
        print(f"GPU busy over the burst (mean of utilization.gpu every 100 ms): {shown} "
              "(target >= 80 %)")  # fmt: skip
    else:
        print("GPU busy: not measured (no nvidia-smi on this machine)")
    print(f"command: python bench/burst.py {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
