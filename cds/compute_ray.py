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
goes to a free actor.

Placement: ``executor.gpu_workers`` of the actors hold the GPUs (default: all), the others
run on the CPU, and each actor says what it runs on (the CPU, or a GPU and its memory).
A model whose manifest states ``resources`` (``requires_gpu``, ``gpu_memory_mib``) is
sent only to the actors that fit it (``fits``); when none does, its work fails at once
with the model and what it needs, rather than wait for an actor that will never come.

An actor that dies during a work (kill -9 of its process, a lost machine) is restarted
by Ray and the work is tried once more, on whichever fitting actor is free (what it runs
on is asked again); the node records the result only when a work returns, and result
UIDs are derived from the inputs and the model, so a retried work makes the same
objects, once.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds.compute import (
    Compute,
    ExecutorKind,
    Runner,
    SeriesOutcome,
    SeriesWork,
    WorkerStats,
    _worker_init,
    loaded_models,
    run_in_worker,
)
from cds.errors import CdsError, ModelError
from cds.inference.manifest import Resources, load_manifest
from cds.inference.preread import PreRead
from cds.inference.registry import ModelRegistry
from cds.inference.session import visible_gpus
from cds.logging import get_logger

log = get_logger("cds.compute")

#: tries of one work: the first, and one more after its actor died
_TRIES = 2
#: how long a retry waits for Ray to restart the actor that died
_RESTART_WAIT_S = 60.0
#: how long a work with resource needs waits for the actors to say what they run on
_DEVICE_WAIT_S = 60.0


@dataclass(frozen=True)
class ActorDevice:
    """What an actor runs on, as it says: the CPU, or a GPU and (when the driver tells)
    the memory of its share of that GPU."""

    gpu: bool
    gpu_memory_mib: int | None = None

    @classmethod
    def of(cls, said: dict[str, Any], share: float) -> ActorDevice:
        """From the actor's ``device()``; ``share``: the part of its GPU it holds."""
        if said.get("device") != "GPU":
            return cls(gpu=False)
        memory = said.get("gpu_memory_mib")
        return cls(True, None if memory is None else int(memory * min(1.0, share)))

    def describe(self) -> str:
        if not self.gpu:
            return "CPU"
        return (
            "GPU, memory unknown"
            if self.gpu_memory_mib is None
            else (f"GPU, {self.gpu_memory_mib} MiB")
        )


def fits(needs: Resources | None, device: ActorDevice | None) -> bool:
    """Whether an actor on ``device`` (``None``: it did not say) may run a model that
    needs ``needs``. Unstated needs fit anywhere; a GPU's unknown memory fits no stated
    memory need."""
    if needs is None or needs == Resources():
        return True
    if device is None:
        return False
    if not device.gpu:
        return not needs.requires_gpu
    need = needs.gpu_memory_mib
    return need is None or (device.gpu_memory_mib is not None and device.gpu_memory_mib >= need)


class ActorSlots:
    """One work at a time on each actor. A work waits for a free actor among those it
    fits; free actors go to the highest priority waiting first (STAT), then the earliest,
    each to the first free actor it fits, so a work that fits an actor nobody ahead of it
    can use is not held up. Waiting here is the executor's backpressure."""

    def __init__(self, n: int) -> None:
        self._free = [True] * n
        self._cond = threading.Condition()
        self._waiting: dict[tuple[int, int], tuple[int, ...]] = {}  # ticket -> actors it fits
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def acquire(self, fit: Sequence[int], priority: int = 0) -> int:
        """The index of a free actor of ``fit`` (not empty), once it is this work's turn."""
        if not fit:
            raise ValueError("a work must fit at least one actor")
        with self._cond:
            ticket = (-priority, next(self._arrivals))
            self._waiting[ticket] = tuple(fit)
            while (i := self._granted(ticket)) is None:
                self._cond.wait()
            del self._waiting[ticket]
            self._free[i] = False
            self._cond.notify_all()  # the next in line may take another free actor
            return i

    def _granted(self, ticket: tuple[int, int]) -> int | None:
        free = {i for i, f in enumerate(self._free) if f}
        for t in sorted(self._waiting):  # those ahead take their actors first
            pick = next((i for i in self._waiting[t] if i in free), None)
            if t == ticket:
                return pick
            if pick is not None:
                free.discard(pick)
        return None

    def release(self, i: int) -> None:
        with self._cond:
            self._free[i] = True
            self._cond.notify_all()


class InferenceActor:
    """Wrapped by ``ray.remote`` when the executor starts (Ray is an optional extra)."""

    def __init__(self, log_format: str, log_level: str) -> None:
        _worker_init(log_format, log_level)

    def run(self, work: SeriesWork) -> SeriesOutcome:
        return run_in_worker(work)

    def pid(self) -> int:
        return os.getpid()

    def device(self) -> dict[str, Any]:
        """What it runs on: ``{"device": "CPU"}``, or the GPU Ray gave it and that GPU's
        memory (``None`` when the driver does not tell)."""
        import ray  # noqa: PLC0415 - in the actor's process, where Ray is

        ids = ray.get_gpu_ids()
        if not ids:
            return {"device": "CPU"}
        gpus = visible_gpus()  # Ray set CUDA_VISIBLE_DEVICES to the GPUs it gave
        memory = min(g.memory_mib for g in gpus) if gpus else None
        return {"device": "GPU", "gpu_ids": [str(g) for g in ids], "gpu_memory_mib": memory}

    def info(self) -> dict[str, object]:
        """Where the actor runs, on what device, and what it holds loaded."""
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **self.device(),
            "loaded": sorted(f"{m.name} {m.version} ({m.provider})" for m in loaded_models()),
        }


class RayCompute:
    """Runs ``SeriesWork`` on Ray actors (see the module)."""

    kind = "ray"
    preread: PreRead | None = None  # an actor reads its own files

    def __init__(
        self,
        address: str,
        workers: int,
        gpus_per_worker: float = 0.0,
        *,
        gpu_workers: int | None = None,
        log_format: str = "json",
        log_level: str = "info",
        actor_class: type[InferenceActor] | None = None,
    ) -> None:
        """``gpu_workers``: how many of the actors hold ``gpus_per_worker`` GPUs (default:
        all; the others run on the CPU). ``actor_class``: a subclass of the inference actor
        (the scaling benchmark's simulated accelerator); the default runs the work itself."""
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
        actor = ray.remote(actor_class or InferenceActor)
        on_gpu = workers if gpu_workers is None else min(gpu_workers, workers)
        self._shares = [gpus_per_worker if i < on_gpu else 0.0 for i in range(workers)]
        self._actors: list[Any] = [
            actor.options(num_gpus=share, max_restarts=-1, max_task_retries=0).remote(
                log_format, log_level
            )
            for share in self._shares
        ]
        self._stats = [WorkerStats(f"actor {i}", "ray") for i in range(workers)]
        self._slots = ActorSlots(workers)  # one work per actor; STAT first when all busy
        self._lock = threading.Lock()
        #: what each actor runs on: asked at start, read when a work states its needs
        self._device_refs: list[Any] = [a.device.remote() for a in self._actors]
        self._device_by = [time.monotonic() + _DEVICE_WAIT_S] * workers  # answer due by
        self._devices: list[ActorDevice | None] = [None] * workers
        self._needs: dict[tuple[Path, str], Resources | None] = {}
        log.info(
            "compute.ray_started",
            address=address,
            workers=workers,
            gpus=gpus_per_worker,
            gpu_workers=on_gpu,
        )

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

    def _needs_of(self, work: SeriesWork) -> Resources | None:
        """The model's ``resources``, from its manifest (read once per package version)."""
        key = (work.package, work.sha256)
        if key not in self._needs:
            self._needs[key] = load_manifest(work.package).resources
        return self._needs[key]

    def _known_devices(self) -> list[ActorDevice | None]:
        """What each actor said it runs on. Those yet to answer are waited for until
        ``_DEVICE_WAIT_S`` after they were asked, then count as unknown (never a hang)."""
        ray = self._ray
        with self._lock:
            pending = [i for i, r in enumerate(self._device_refs) if r is not None]
            if pending:
                left = max(self._device_by[i] for i in pending) - time.monotonic()
                refs = [self._device_refs[i] for i in pending]
                ray.wait(refs, num_returns=len(refs), timeout=max(0.0, left))
            for i in pending:
                try:
                    said = ray.get(self._device_refs[i], timeout=0)
                except ray.exceptions.GetTimeoutError:  # not yet: unknown for now
                    continue
                except Exception as exc:  # it died before it said: asked again once back
                    log.warning(
                        "compute.actor_device_unknown", actor=i, error_type=type(exc).__name__
                    )
                    self._device_refs[i] = None
                    continue
                self._devices[i] = ActorDevice.of(said, self._shares[i])
                self._device_refs[i] = None
            return list(self._devices)

    def fitting(self, work: SeriesWork) -> list[int]:
        """The actors that may run ``work``'s model; ModelError when none may."""
        needs = self._needs_of(work)
        if needs is None or needs == Resources():
            return list(range(len(self._actors)))
        devices = self._known_devices()
        fit = [i for i, d in enumerate(devices) if fits(needs, d)]
        if not fit:
            seen = ", ".join(
                f"actor {i}: {'did not say' if d is None else d.describe()}"
                for i, d in enumerate(devices)
            )
            raise ModelError(
                f"model {work.model} needs {needs.describe()} (manifest resources); no Ray "
                f"actor fits it ({seen}): set executor.gpus_per_worker and "
                "executor.gpu_workers, or run a cluster with such GPUs"
            )
        return fit

    def run(self, work: SeriesWork) -> SeriesOutcome:
        ray = self._ray
        for attempt in range(1, _TRIES + 1):
            i = self._slots.acquire(self.fitting(work), work.priority)
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
                self._slots.release(i)
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
        with self._lock:  # it may be back on another machine: ask again what it runs on
            self._devices[i] = None
            self._device_refs[i] = self._actors[i].device.remote()
            self._device_by[i] = time.monotonic() + _DEVICE_WAIT_S

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
    gpu_workers: int | None = None,
    log_format: str = "json",
    log_level: str = "info",
    gpus: Sequence[int] = (),
    preread_mb: int = 0,
) -> Runner:
    """The executor of ``kind``; Ray is imported only for ``ray`` (whose actors get their
    GPUs from Ray). ``gpus``: the GPU ids the process kind's workers take in turn."""
    if kind == "ray":
        return RayCompute(
            address,
            workers,
            gpus_per_worker,
            gpu_workers=gpu_workers,
            log_format=log_format,
            log_level=log_level,
        )
    return Compute(
        models,
        kind,
        workers,
        log_format=log_format,
        log_level=log_level,
        gpus=gpus,
        preread_mb=preread_mb,
    )
