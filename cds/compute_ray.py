"""``executor.kind: ray``: a model's work on a series runs on Ray actors (``cds[ray]``).

Each actor is a worker process of a Ray cluster that keeps the packages it was asked
for loaded and warm (the same loading, SHA-256 check and logging as the ``process``
kind's workers: ``cds.compute.run_in_worker``). ``executor.workers`` actors are made,
each reserving ``executor.gpus_per_worker`` GPUs (0: CPU); Ray places them on the
cluster's machines.

``executor.address``: ``local`` starts a Ray instance inside the node (stopped with
it); ``auto`` joins the cluster started on this machine with ``ray start --head``;
``ray://host:port`` joins a remote cluster through Ray Client. Work and results cross
as values (``SeriesWork`` -> ``SeriesOutcome``): the node stays the one writer of the
state store, the spool and the results folder, so the files a work names must be
readable by the actors at the same paths (one machine, or a shared file system).

Each actor takes one work at a time; when all are busy, works wait in the node, the
highest routing-rule priority first (a STAT study overtakes routine ones), and the next
goes to the actor with the fewest works in flight. An actor that dies during a
work (kill -9 of its process, a lost machine) is restarted by Ray and the work is
tried once more, on whichever actor is free; the node records the result only when a
work returns, and result UIDs are derived from the inputs and the model, so a retried
work makes the same objects, once.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from cds.compute import (
    Compute,
    ExecutorKind,
    PrioritySlots,
    Runner,
    SeriesOutcome,
    SeriesWork,
    WorkerStats,
    _worker_init,
    loaded_models,
    run_in_worker,
)
from cds.errors import CdsError
from cds.inference.registry import ModelRegistry
from cds.logging import get_logger

log = get_logger("cds.compute")

#: tries of one work: the first, and one more after its actor died
_TRIES = 2
#: how long a retry waits for Ray to restart the actor that died
_RESTART_WAIT_S = 60.0


class InferenceActor:
    """Wrapped by ``ray.remote`` when the executor starts (Ray is an optional extra)."""

    def __init__(self, log_format: str, log_level: str) -> None:
        _worker_init(log_format, log_level)

    def run(self, work: SeriesWork) -> SeriesOutcome:
        return run_in_worker(work)

    def pid(self) -> int:
        return os.getpid()

    def info(self) -> dict[str, object]:
        """Where the actor runs and what it holds loaded."""
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "loaded": sorted(f"{m.name} {m.version} ({m.provider})" for m in loaded_models()),
        }


class RayCompute:
    """Runs ``SeriesWork`` on Ray actors (see the module)."""

    kind = "ray"

    def __init__(
        self,
        address: str,
        workers: int,
        gpus_per_worker: float = 0.0,
        *,
        log_format: str = "json",
        log_level: str = "info",
        actor_class: type[InferenceActor] | None = None,
    ) -> None:
        """``actor_class``: a subclass of the inference actor (the scaling benchmark's
        simulated accelerator); the default runs the work itself."""
        try:
            import ray  # noqa: PLC0415
        except ImportError:
            raise CdsError(
                "executor.kind ray needs Ray: install cds with the ray extra (pip install "
                "'cds[ray]')"
            ) from None
        self._ray = ray
        self.address = address
        self.workers = workers
        self._started_ray = False
        if not ray.is_initialized():
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self._started_ray = address == "local"
        actor = ray.remote(actor_class or InferenceActor).options(
            num_gpus=gpus_per_worker, max_restarts=-1, max_task_retries=0
        )
        self._actors: list[Any] = [actor.remote(log_format, log_level) for _ in range(workers)]
        self._busy = [0] * workers
        self._stats = [WorkerStats(f"actor {i}", "ray") for i in range(workers)]
        self._slots = PrioritySlots(workers)  # one work per actor; STAT first when all busy
        self._lock = threading.Lock()
        log.info("compute.ray_started", address=address, workers=workers, gpus=gpus_per_worker)

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "workers": self.workers, "address": self.address}

    def workers_info(self) -> list[dict[str, object]]:
        """For ``cds workers``: each actor, what the node sent it, where it runs and what it
        holds loaded (an actor that does not answer within 5 s says so)."""
        ray = self._ray
        out = []
        for actor, stats in zip(self._actors, self._stats, strict=True):
            row = stats.as_dict()
            try:
                row.update(ray.get(actor.info.remote(), timeout=5))
            except Exception as exc:  # a dead or busy actor: the node's figures stay
                row["unreachable"] = type(exc).__name__
            out.append(row)
        return out

    def actor_pids(self) -> list[int]:
        """The process ids of the actors (for ``cds workers`` and the tests)."""
        ray = self._ray
        return [int(ray.get(a.pid.remote())) for a in self._actors]

    def _take(self) -> int:
        with self._lock:
            i = min(range(len(self._busy)), key=self._busy.__getitem__)
            self._busy[i] += 1
            return i

    def _give(self, i: int) -> None:
        with self._lock:
            self._busy[i] -= 1

    def run(self, work: SeriesWork) -> SeriesOutcome:
        ray = self._ray
        for attempt in range(1, _TRIES + 1):
            self._slots.acquire(work.priority)
            i = self._take()
            started, ok = self._stats[i].begin(work.model), False
            try:
                outcome: SeriesOutcome = ray.get(self._actors[i].run.remote(work))
                ok = True
                return outcome
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                log.error(
                    "compute.actor_died",
                    model=work.model,
                    actor=i,
                    attempt=attempt,
                    error_type=type(exc).__name__,
                )
                self._wait_restarted(i)
            except ray.exceptions.RayTaskError as exc:  # the work's own error, re-raised
                cause = exc.cause if isinstance(exc.cause, Exception) else None
                if cause is not None:
                    raise cause from None
                raise CdsError(f"model {work.model}: the work failed on Ray") from None
            finally:
                self._stats[i].end(started, ok)
                self._give(i)
                self._slots.release()
        raise CdsError(
            f"model {work.model}: the Ray worker running it died {_TRIES} times (a crash, "
            "the memory limit or a lost machine); the job can be retried"
        )

    def _wait_restarted(self, i: int) -> None:
        """Wait (bounded) until Ray has restarted actor ``i``, so the next try does not
        fall on an actor still coming back."""
        ray = self._ray
        try:
            ray.get(self._actors[i].pid.remote(), timeout=_RESTART_WAIT_S)
        except Exception as exc:  # not back in time: the next try says what happens
            log.warning("compute.actor_not_back", actor=i, error_type=type(exc).__name__)

    def shutdown(self) -> None:
        ray = self._ray
        for a in self._actors:
            try:
                ray.kill(a)
            except Exception as exc:  # an actor already gone
                log.info("compute.ray_kill_failed", error_type=type(exc).__name__)
        self._actors = []
        if self._started_ray:
            ray.shutdown()


def make_compute(
    models: ModelRegistry,
    kind: ExecutorKind,
    workers: int,
    *,
    address: str = "local",
    gpus_per_worker: float = 0.0,
    log_format: str = "json",
    log_level: str = "info",
) -> Runner:
    """The executor of ``kind``; Ray is imported only for ``ray``."""
    if kind == "ray":
        return RayCompute(
            address, workers, gpus_per_worker, log_format=log_format, log_level=log_level
        )
    return Compute(models, kind, workers, log_format=log_format, log_level=log_level)
