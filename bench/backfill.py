"""Backfill throughput and the rate limit's accuracy (issue 22), against a real Orthanc.

    python bench/backfill.py [--studies 8] [--slices 300] [--size 512]
                             [--max-associations 2]
                             [--rate-studies 6] [--rate 60]

It starts a throw-away Orthanc (the DIMSE archive) and the node (``python -m cds
serve``, model ``cds-ref-ct-bone``, SR results, quiet time 1 s) exactly as
``integration_tests/test_backfill.py`` does, reusing its helpers, then runs
``cds backfill`` as its own process twice:

1. **Rate.** ``--rate-studies`` synthetic CTs of January 2024 (4 slices each) fetched at
   ``--rate`` studies a minute: the retrieve start times from the audit trail against the
   asked spacing (``60 / rate`` s), in %.
2. **Throughput.** ``--studies`` synthetic head CTs of February 2024 (``--slices``
   slices of ``--size`` x ``--size``, 16 bit, a skull ring ``cds-ref-ct-bone``
   segments) fetched with no effective rate limit (100000/min) and
   ``--max-associations`` retrievals at once: from the start of ``cds backfill`` to the
   last study done (its last history event), in studies an hour; and the steady rate
   between the first and the last study done.

Prints the figures, the date, the machine and the command. See BENCHMARKS.md for what a
projection from them leaves out.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cds.demo_study import synthetic_ct  # noqa: E402
from integration_tests.conftest import CdsNode, Orthanc  # noqa: E402
from integration_tests.test_backfill import (  # noqa: E402
    _backfill,
    _node,
    _processed_once,
    _retrieves,
    _studies,
)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _february(folder: Path, orthanc: Orthanc, n: int, slices: int, size: int) -> list[str]:
    """N synthetic head CTs (``cds.demo_study.synthetic_ct``: a skull ring that
    ``cds-ref-ct-bone`` segments) dated February 2024, outside the rate phase's January."""
    uids = []
    for i in range(n):
        study = synthetic_ct(folder / f"f{i}", slices, size)
        for f in study.files:
            ds = pydicom.dcmread(f)
            ds.StudyDate = f"202402{i % 28 + 1:02d}"
            ds.save_as(f)
        orthanc.upload(study.files)
        uids.append(study.study_uid)
    return uids


def _run(cmd: list[str]) -> float:
    """Run ``cds backfill``; return its wall time. Its summary line is echoed."""
    t0 = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    wall = time.monotonic() - t0
    if run.returncode != 0:
        raise SystemExit(f"cds backfill exited {run.returncode}:\n{run.stderr[-2000:]}")
    print(f"  cds backfill: {run.stdout.strip().splitlines()[-1]} ({wall:.2f} s)")
    return wall


def _done_at(node: CdsNode, uid: str, timeout: float) -> float:
    s: dict[str, Any] = node.wait_study(
        uid, lambda s: s["state"] in ("done", "failed"), timeout, "study run"
    )
    if s["state"] != "done":
        raise SystemExit(f"a study ended {s['state']}: {[e['kind'] for e in s['history']]}")
    jobs = node.http.get("/api/jobs", params={"study_key": s["study_key"]}).json()
    if len(jobs) != 1:
        raise SystemExit(f"a study was run {len(jobs)} times, not once")
    return datetime.fromisoformat(s["history"][-1]["at"]).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=8, help="studies of the throughput phase")
    ap.add_argument("--slices", type=int, default=300, help="slices a study")
    ap.add_argument("--size", type=int, default=512, help="rows = columns of a slice")
    ap.add_argument("--max-associations", type=int, default=2)
    ap.add_argument("--rate-studies", type=int, default=6, help="studies of the rate phase")
    ap.add_argument("--rate", type=float, default=60.0, help="studies a minute, rate phase")
    args = ap.parse_args()
    if not 2 <= args.rate_studies <= 21:
        ap.error("--rate-studies: 2 to 21 (one a January day, as the integration test)")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cds-bench-backfill-") as tmp:
        root = Path(tmp)
        made: list[CdsNode | Orthanc] = []

        def node_factory(*, start: bool = True) -> CdsNode:
            (root / "node").mkdir()
            n = CdsNode(root / "node", {})
            made.append(n)
            return n.start() if start else n

        def orthanc_factory(cds: CdsNode) -> Orthanc:
            (root / "orthanc").mkdir()
            o = Orthanc(root / "orthanc", cds)
            made.append(o)
            return o.start()

        try:
            node, orthanc = _node(root, node_factory, orthanc_factory)
            # 1. the rate limit
            uids = _studies(root / "rate", orthanc, args.rate_studies)
            print(f"rate phase: {args.rate_studies} studies at {args.rate:g}/min")
            _run(_backfill(node, "--rate", f"{args.rate:g}/min", "--max-associations", "2"))
            _processed_once(node, uids)
            starts = sorted(float(d["started_at"]) for d in _retrieves(node))
            # 2. throughput
            feb = _february(root / "feb", orthanc, args.studies, args.slices, args.size)
            print(
                f"throughput phase: {args.studies} studies of {args.slices} slices, "
                f"--max-associations {args.max_associations}"
            )
            cmd = _backfill(
                node, "--rate", "100000/min", "--max-associations", str(args.max_associations)
            )
            cmd[cmd.index("--since") + 1] = "2024-02-01"
            cmd[cmd.index("--until") + 1] = "2024-02-29"
            t0 = time.time()
            _run(cmd)
            done = sorted(_done_at(node, uid, 300) for uid in feb)
            problems = node.log_problems()
        finally:
            for p in reversed(made):
                p.stop()
    load = (load_before[0], os.getloadavg()[0])
    _report(args, starts=starts, done=done, t0=t0, problems=len(problems), load=load)
    return 0


def _report(
    args: argparse.Namespace,
    *,
    starts: list[float],
    done: list[float],
    t0: float,
    problems: int,
    load: tuple[float, float],
) -> None:
    asked = 60.0 / args.rate
    mean_gap = (starts[-1] - starts[0]) / (len(starts) - 1)
    worst = max(abs(b - a - asked) for a, b in itertools.pairwise(starts))
    total = done[-1] - t0
    per_hour = args.studies / total * 3600
    steady = (len(done) - 1) / (done[-1] - done[0]) * 3600 if len(done) > 1 else float("nan")
    print()
    print(
        f"rate limit: asked {args.rate:g}/min = one start every {asked:.3f} s; measured "
        f"{len(starts)} starts over {starts[-1] - starts[0]:.3f} s, mean spacing "
        f"{mean_gap:.3f} s ({(mean_gap - asked) / asked * 100:+.2f} %), worst gap off by "
        f"{worst:.3f} s ({worst / asked * 100:.2f} %)"
    )
    print(
        f"throughput: {args.studies} studies ({args.slices} x {args.size}x{args.size} "
        f"slices) from backfill start to last done in {total:.2f} s = {per_hour:.0f} "
        f"studies/hour; steady (first to last done) {steady:.0f} studies/hour; "
        f"node-hours per 1,000 studies {1000 / per_hour:.3f}"
    )
    print(f"node log problems: {problems}")
    print(
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.node()}, "
        f"{os.cpu_count()} CPUs ({_cpu()}), Python {platform.python_version()}; load "
        f"average before {load[0]:.2f}, after {load[1]:.2f}"
    )
    print(
        f"command: python bench/backfill.py --studies {args.studies} --slices {args.slices} "
        f"--size {args.size} "
        f"--max-associations {args.max_associations} --rate-studies {args.rate_studies} "
        f"--rate {args.rate:g}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
