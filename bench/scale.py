"""Scaling of the Ray executor (executor.kind ray): studies per minute with 1, 2, 4 actors.

    python bench/scale.py [--workers 1,2,4] [--studies 16] [--slices 40] [--size 256]

What it does, in one run, on a local Ray started here:

1. Writes a synthetic CT series (``cds.demo_study.synthetic_ct``) and loads
   ``models/cds-ref-ct-bone`` the way the node does.
2. **Real (CPU)**: for 1 and 2 actors, sends ``--studies`` works (that series: decode,
   the model, SEG + SR encoding, in the actor) from as many node threads as twice the
   actors, through ``RayCompute`` (the node's own dispatch: one work per actor, STAT
   first, least busy), and times them. Each result crosses back to the node as values.
   On a 2-core machine real CPU work cannot scale past 2 actors.
3. **SIMULATED accelerator**: each actor does the real work once, then answers every
   work by holding for the device time measured in step 2 (the median time of one work
   on one actor) and returning that result: the node's dispatch, Ray's transport of
   the work and of the result (the SEG and SR as their PS3.10 files, encoded once in
   the actor, and the inference) are real; the accelerator is not. For 1, 2 and 4 actors.

Prints studies per minute and ``scaling efficiency 1->N`` (throughput with N actors
divided by N times that with 1), the device time used, the machine, the command and the
load average before and after (other work on the machine shows there).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import ray

from cds.compute import SeriesOutcome, SeriesWork, inputs_seed
from cds.compute_ray import InferenceActor, RayCompute
from cds.demo_study import synthetic_ct
from cds.inference.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "cds-ref-ct-bone"


class SimulatedDevice(InferenceActor):
    """Bench only: the real work once, then a hold of ``device_s`` seconds per work, as
    an accelerator busy with the batch, returning the same result (the class travels to
    the actors by value, with the device time set)."""

    device_s = 0.0

    def __init__(self, log_format: str, log_level: str) -> None:
        super().__init__(log_format, log_level)
        self._outcome: SeriesOutcome | None = None

    def run(self, work: SeriesWork) -> SeriesOutcome:
        if self._outcome is None:
            self._outcome = super().run(work)
            return self._outcome
        time.sleep(self.device_s)
        return self._outcome


def _throughput(compute: RayCompute, work: SeriesWork, studies: int, actors: int) -> float:
    """Studies per minute over ``studies`` works sent from 2 x ``actors`` node threads,
    after one warm-up work per actor (models loaded)."""
    with ThreadPoolExecutor(actors) as warm:
        list(warm.map(lambda _: compute.run(work), range(actors)))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2 * actors) as pool:
        list(pool.map(lambda _: compute.run(work), range(studies)))
    return studies / (time.perf_counter() - t0) * 60


def _one_work_seconds(compute: RayCompute, work: SeriesWork, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        compute.run(work)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2,4", help="actor counts to measure")
    ap.add_argument("--studies", type=int, default=16, help="works (studies) per measure")
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        study = synthetic_ct(Path(tmp) / "ct", args.slices, args.size)
        files = tuple(sorted(study.files))
        (model,) = ModelRegistry([MODEL], "cpu", warm=False).load()
        work = SeriesWork(
            model=model.name,
            package=MODEL,
            sha256=model.sha256 or "",
            providers="cpu",
            files=files,
            kinds=("SEG", "SR"),
            lang="en",
            seed=inputs_seed(files),
        )
        cpus = max(counts)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            print(f"# bench/scale.py {' '.join(sys.argv[1:])}")
            print(
                f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
                f"{os.cpu_count()} CPU cores, Ray {ray.__version__}, a local Ray of {cpus} "
                f"CPUs; work: {args.slices} x {args.size}^2 CT, cds-ref-ct-bone, SEG + SR"
            )
            print(f"# load average before: {_load()}")
            real: dict[int, float] = {}
            device_s = 0.0
            for n in [c for c in counts if c <= 2]:
                compute = RayCompute("local", n, log_level="warning")
                try:
                    if n == 1:
                        device_s = _one_work_seconds(compute, work)
                    real[n] = _throughput(compute, work, args.studies, n)
                finally:
                    compute.shutdown()
                print(f"real CPU   {n} actor(s): {real[n]:7.1f} studies/min")
            if 1 in real and 2 in real:
                print(f"real CPU scaling efficiency 1->2: {real[2] / (2 * real[1]):.2f}")
            SimulatedDevice.device_s = device_s
            print(
                f"SIMULATED accelerator: each work holds {device_s * 1000:.0f} ms (the median "
                "real work on 1 actor, measured above); dispatch and transport are real"
            )
            sim: dict[int, float] = {}
            for n in counts:
                compute = RayCompute("local", n, log_level="warning", actor_class=SimulatedDevice)
                try:
                    sim[n] = _throughput(compute, work, args.studies, n)
                finally:
                    compute.shutdown()
                line = f"SIMULATED  {n} actor(s): {sim[n]:7.1f} studies/min"
                if n > 1 and 1 in sim:
                    line += f"   scaling efficiency 1->{n}: {sim[n] / (n * sim[1]):.2f}"
                print(line)
            print(f"# load average after: {_load()}")
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
