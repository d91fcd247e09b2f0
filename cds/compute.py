"""The work of one model on one series, as a value: where it runs is the executor's choice.

A ``SeriesWork`` names everything the step needs and nothing of the node: the model
(name, package folder, SHA-256 of model.onnx, providers), the series' files, the result
kinds (and the pipeline's fallbacks), the language, the predecessors and the UID seed.
``process_series`` runs it: decode, preprocess, onnxruntime, postprocess, then encode
each result object on its own, and the fallback of one that could not be made. It
returns a ``SeriesOutcome`` (the inference and the encoded objects): values again,
which the orchestrator's side records, writes and queues. Out of a worker process or a
Ray actor, each object crosses as its PS3.10 file, encoded once there, which the node
writes as it is (``cds.results.ps310``).

``Compute`` runs the work where ``executor.kind`` says:

- ``thread``: in the calling thread (a worker thread of the node), with the model the
  node loaded;
- ``process``: in a pool of worker processes (``executor.workers``), started with
  ``spawn`` (never a fork of the node's threads). Each worker takes the next of the
  node's GPU ids (``inference.gpus``) in turn, and makes its sessions there; it loads a
  package the first time it is asked for it and keeps it; it refuses a package whose
  model.onnx no longer has the SHA-256 the node loaded (changed on disk: reload the
  node). A worker that dies (a crash in a native library, the OOM killer) costs that
  job, which fails with a clear reason; the pool is started again for the next one.
  The node never shares its store, sockets or spool with a worker: only paths and
  values cross.

A Ray executor (issue 20) is another ``Compute`` kind behind the same ``run``.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import multiprocessing
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from pydicom import dcmread
from pydicom.dataset import Dataset

from cds.domain import ObjectOutcome, ResultRef
from cds.errors import CdsError
from cds.faults import failpoint
from cds.findings import InferenceResult
from cds.inference.images import Decoded, decode
from cds.inference.images import read_source as _read
from cds.inference.preread import PreRead
from cds.inference.registry import LoadedModel, ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots, ProviderChoice, device_name
from cds.inference.validate import validate_package
from cds.logging import configure_logging, get_logger
from cds.memory import trim_heap
from cds.results.copied import Copied, copy_ahead
from cds.results.encode import Encoded, encode_each
from cds.results.ps310 import from_file_bytes, sealed

log = get_logger("cds.compute")

ExecutorKind = Literal["thread", "process", "ray"]


class PrioritySlots:
    """``n`` workers shared by works waiting in priority order: when all are busy, the
    next one freed goes to the highest priority waiting (a STAT study's work overtakes
    routine ones), then to the earliest. Waiting here is the executor's backpressure."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # heap of (-priority, arrival)
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def acquire(self, priority: int = 0) -> None:
        with self._cond:
            ticket = (-priority, next(self._arrivals))
            heapq.heappush(self._waiting, ticket)
            while not (self._free > 0 and self._waiting[0] == ticket):
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            self._cond.notify_all()  # the next in line may take another free worker

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()


@dataclass
class WorkerStats:
    """What one worker (or the node's threads, or a process pool) did, seen from the node."""

    worker: str
    kind: str
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    busy_seconds: float = 0.0
    models: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, model: str) -> float:
        with self._lock:
            self.in_flight += 1
            self.models.add(model)
        return time.perf_counter()

    def end(self, started: float, ok: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            self.busy_seconds += time.perf_counter() - started
            if ok:
                self.done += 1
            else:
                self.failed += 1

    def as_dict(self) -> dict[str, object]:
        with self._lock:
            return {
                "worker": self.worker,
                "kind": self.kind,
                "in_flight": self.in_flight,
                "done": self.done,
                "failed": self.failed,
                "busy_seconds": round(self.busy_seconds, 3),
                "models": sorted(self.models),
            }


class Runner(Protocol):
    """Where ``SeriesWork`` runs: ``Compute`` (thread, process) or ``RayCompute`` (ray)."""

    @property
    def workers(self) -> int: ...
    @property
    def preread(self) -> PreRead | None: ...
    def run(self, work: SeriesWork) -> SeriesOutcome: ...
    def describe(self) -> dict[str, object]: ...
    def workers_info(self) -> list[dict[str, object]]: ...
    def shutdown(self) -> None: ...


@dataclass(frozen=True)
class SeriesWork:
    """One model on one series: every input of ``process_series``, as plain values."""

    model: str
    package: Path
    sha256: str
    providers: ProviderChoice
    files: tuple[Path, ...]
    kinds: tuple[str, ...]
    lang: str
    predecessors: tuple[ResultRef, ...] = ()
    seed: str | None = None
    priority: int = 0  # the routing rule's: higher first when workers are busy (STAT)
    #: (kind, the kind made in its place when it cannot be made): the pipeline's fallback
    fallback: tuple[tuple[str, str], ...] = ()


@dataclass
class SeriesOutcome:
    """What one model did on one series: the inference, the objects encoded, why any
    requested object was not encoded (``"GSPS: <reason>"``), and what became of each."""

    result: InferenceResult
    objects: list[Dataset]
    skipped: list[str]
    outcomes: list[ObjectOutcome] = field(default_factory=list)
    #: the source attributes not copied as they were (``cds.results.copied``)
    copied: list[str] = field(default_factory=list)

    def __getstate__(self) -> dict[str, Any]:
        """Out of the process that made it (a worker, an actor), each object travels as
        its PS3.10 file, encoded once there (``cds.results.ps310``): the node writes
        those bytes as they are, and unpickles no highdicom object."""
        return {**self.__dict__, "objects": [sealed(ds) for ds in self.objects]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        objects = [from_file_bytes(data) for data in state["objects"]]
        self.__dict__.update({**state, "objects": objects})


def inputs_seed(files: Sequence[Path]) -> str:
    """A digest of the input instances (their SOP Instance UIDs) for result UIDs.

    The same inputs and model version give the same result UIDs (a resend or a
    re-run creates no duplicate in the PACS); a late instance gives new UIDs, and
    the new result supersedes the old one.
    """
    return seed_of(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)


def seed_of(sop_uids: Iterable[str]) -> str:
    """``inputs_seed`` from the SOP Instance UIDs themselves (routing read them already)."""
    return hashlib.sha256("\\".join(sorted(sop_uids)).encode()).hexdigest()[:32]


def process_series(
    runner: ModelRunner,
    files: Sequence[Path],
    kinds: Sequence[str],
    lang: str,
    *,
    predecessors: Sequence[ResultRef] = (),
    seed: str | None = None,
    fallback: Sequence[tuple[str, str]] = (),
    ahead: PreRead | None = None,
) -> SeriesOutcome:
    """Run the model on one series and encode the result objects of ``kinds``; for a
    kind that could not be made (its encoder failed), the kind ``fallback`` names
    instead, unless it is made anyway (docs/viewers.md).

    Shared by the node (through ``Compute``) and the offline mode (``cds process``):
    the only difference between them is where the files come from and where the
    objects go.
    """
    # each file is read once, as decode comes to it: decoded for the model, then encoded
    # from; one read during the study's quiet time (``ahead``, cds.inference.preread) is
    # not read again, nor its model's batches made again. Only the Secondary Capture
    # reads the sources' Pixel Data: without it each is let go once in the stack, and a
    # file read ahead (frames only) is enough
    pixels = "SC" in kinds or any(instead == "SC" for _, instead in fallback)
    sources: list[Dataset] = []
    ready: list[Copied | None] = []  # the encoders' copies made ahead, used once

    def each() -> Iterator[Dataset | Decoded]:
        for f in files:
            item = (ahead.take(f) if ahead is not None else None) or _read(f)
            ds = item.ds if isinstance(item, Decoded) else item
            again = pixels and "PixelData" not in ds
            sources.append(_read(f) if again else ds)
            done = item.ready if isinstance(item, Decoded) and not again else None
            ready.append(cast(Copied | None, done))
            yield item

    stack = decode(each(), count=len(files), transient=True, drop_pixel_data=not pixels)
    batches = ahead.prepared(stack.pixels) if ahead is not None else None
    result = runner.run(stack, ready=batches)  # its pixels go once used
    del stack
    if not kinds:
        return SeriesOutcome(result, [], [])
    base = seed_of(str(ds.SOPInstanceUID) for ds in sources) if seed is None else seed

    def encode(asked: Sequence[str]) -> Encoded:
        once, ready[:] = list(ready), []
        return encode_each(
            sources, result, runner.manifest, asked, lang, seed=base,
            predecessors=predecessors, ready=once or None,
        )  # fmt: skip

    done = encode(kinds)
    for kind, instead in fallback:
        if instead not in kinds and any(o.kind == kind and o.failed for o in done.outcomes):
            _stand_in(done, kind, instead, encode([instead]))
    return SeriesOutcome(result, done.objects, done.notes, done.outcomes, done.copied)


def _stand_in(done: Encoded, kind: str, instead: str, more: Encoded) -> None:
    """Add ``more`` (the objects of ``instead``, made in place of ``kind``) to ``done``;
    once one is made, ``kind`` is no longer a failure of the job: its fallback stood in."""
    made = any(o.made for o in more.outcomes)
    done.objects.extend(more.objects)
    done.notes.extend(more.notes)
    note = f"in place of {kind} (pipeline fallback)"
    done.outcomes[:] = [
        replace(o, failed=False, reason=f"{o.reason}; {instead} made in its place (fallback)")
        if made and o.kind == kind and o.failed
        else o
        for o in done.outcomes
    ] + [replace(o, reason="; ".join(filter(None, [note, o.reason]))) for o in more.outcomes]


def run_work(work: SeriesWork, runner: ModelRunner, ahead: PreRead | None = None) -> SeriesOutcome:
    return process_series(
        runner,
        work.files,
        work.kinds,
        work.lang,
        predecessors=work.predecessors,
        seed=work.seed,
        fallback=work.fallback,
        ahead=ahead,
    )


# --- worker processes ------------------------------------------------------------

#: the packages a worker process loaded: (folder, SHA-256) -> model
_WORKER_MODELS: dict[tuple[str, str], LoadedModel] = {}
_WORKER_SLOTS = DeviceSlots(per_gpu=1, per_cpu=1)
#: the GPU id this worker process makes its sessions on (None: onnxruntime's default)
_WORKER_GPU: int | None = None


def worker_gpu(workers_before: int, gpus: Sequence[int]) -> int | None:
    """The GPU id of the worker started after ``workers_before`` others: the node's GPU
    ids in turn, so that N workers on N GPUs hold one GPU each."""
    return gpus[workers_before % len(gpus)] if gpus else None


def _worker_init(
    log_format: str, log_level: str, gpus: tuple[int, ...] = (), started: Any = None
) -> None:
    """Each worker logs as the node does (JSON, patient-data scrubber) and takes its GPU
    id (``started``: the pool's shared count of workers started so far)."""
    global _WORKER_GPU  # noqa: PLW0603 - one value per worker process, set once at its start
    configure_logging(log_format, log_level)
    if gpus and started is not None:
        with started.get_lock():
            _WORKER_GPU = worker_gpu(started.value, gpus)
            started.value += 1


def _worker_device() -> int | None:
    """This worker's GPU id (``cds workers`` and the tests ask it through the pool)."""
    return _WORKER_GPU


def _worker_model(work: SeriesWork) -> LoadedModel:
    key = (str(work.package), work.sha256)
    model = _WORKER_MODELS.get(key)
    if model is not None:
        return model
    report = validate_package(
        work.package, work.providers, keep_session=True, device_id=_WORKER_GPU
    )
    if not report.ok or report.session is None:
        raise CdsError(f"model {work.model}: the worker could not load its package")
    if report.sha256 != work.sha256:
        raise CdsError(
            f"model {work.model}: model.onnx changed on disk since the node loaded it "
            "(SHA-256 differs): reload the node"
        )
    model = LoadedModel(
        path=work.package,
        status="ready",
        manifest=report.manifest,
        sha256=report.sha256,
        provider=report.provider,
        session=report.session,
    )
    _WORKER_MODELS[key] = model
    log.info("compute.worker_loaded", model=work.model, sha256=work.sha256)
    return model


def loaded_models() -> list[LoadedModel]:
    """The packages this worker process holds loaded."""
    return list(_WORKER_MODELS.values())


def run_in_worker(work: SeriesWork) -> SeriesOutcome:
    """The process kind's entry point, in a worker process."""
    try:
        failpoint("compute.worker")
        out = run_work(work, ModelRunner(_worker_model(work), _WORKER_SLOTS))
        for ds in out.objects:  # each encoded here, once: the node writes these bytes
            sealed(ds)
        return out
    finally:
        trim_heap()


# --- the node's side ---------------------------------------------------------------


class Compute:
    """Runs ``SeriesWork`` in the node's thread or in worker processes (see the module)."""

    def __init__(
        self,
        models: ModelRegistry,
        kind: ExecutorKind = "thread",
        workers: int = 2,
        *,
        log_format: str = "json",
        log_level: str = "info",
        gpus: Sequence[int] = (),
        preread_mb: int = 0,
    ) -> None:
        self.kind: ExecutorKind = kind
        #: thread: a study's series read during its quiet time (a worker reads its own)
        self.preread = (
            PreRead(_read, preread_mb * 2**20, prepare=copy_ahead) if kind == "thread" else None
        )
        self.workers = workers if kind == "process" else 0
        self.gpus = tuple(gpus)  # the process kind's workers take these GPU ids in turn
        self._models = models
        self._log = (log_format, log_level)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        name = "node threads" if kind == "thread" else f"process pool ({workers} processes)"
        self._stats = WorkerStats(name, kind)
        self._slots = PrioritySlots(self.workers) if kind == "process" else None

    def describe(self) -> dict[str, object]:
        """For ``/health``: the kind, the worker processes (0 for thread), the read-ahead."""
        pre = {"preread": self.preread.describe()} if self.preread is not None else {}
        return {"kind": self.kind, "workers": self.workers, **pre}

    def workers_info(self) -> list[dict[str, object]]:
        """For ``cds workers``: the node's threads, or the process pool, as one worker;
        the threads with the devices their sessions are on (each GPU id the node may use)."""
        row = self._stats.as_dict()
        if self.kind == "thread":
            held = [(m.name, m.session.device) for m in self._models.all() if m.session]
            row["devices"] = self._models.slots.describe(held)
        elif self.gpus:
            row["devices"] = [
                {"device": device_name(g), "workers": self.workers_on(g)}
                for g in dict.fromkeys(self.gpus)
            ]
        return [row]

    def workers_on(self, gpu: int) -> int:
        """How many of the worker processes make their sessions on GPU id ``gpu``."""
        return sum(worker_gpu(i, self.gpus) == gpu for i in range(self.workers))

    def run(self, work: SeriesWork) -> SeriesOutcome:
        """Run ``work``; raises CdsError (or the step's own error) when it fails."""
        started = self._stats.begin(work.model)
        ok = False
        try:
            out = self._run_here_or_in_a_worker(work)
            ok = True
            return out
        finally:
            self._stats.end(started, ok)

    def _run_here_or_in_a_worker(self, work: SeriesWork) -> SeriesOutcome:
        if self.kind == "thread":
            model = self._models.get(work.model)
            if model is None or model.status != "ready":
                raise CdsError(f"model {work.model} is not loaded")
            return run_work(work, ModelRunner(model, self._models.slots), self.preread)
        assert self._slots is not None
        self._slots.acquire(work.priority)  # STAT before routine when the workers are busy
        try:
            return self._submit(work).result()
        except BrokenProcessPool:
            self._restart()
            raise CdsError(
                f"model {work.model}: the worker process running it ended abruptly "
                "(a crash or the memory limit); the job can be retried"
            ) from None
        finally:
            self._slots.release()

    def _submit(self, work: SeriesWork) -> Future[SeriesOutcome]:
        with self._lock:
            if self._closed:
                raise CdsError("the node is stopping: no new work")
            return self._started_pool().submit(run_in_worker, work)

    def _started_pool(self) -> ProcessPoolExecutor:
        """The worker pool, started on first use (and again after a worker died); with
        the lock held. Each worker counts itself in at its start and takes its GPU id."""
        if self._pool is None:
            spawn = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=spawn,
                initializer=_worker_init,
                initargs=(*self._log, self.gpus, spawn.Value("i", 0)),
            )
        return self._pool

    def _restart(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        log.error("compute.worker_died", kind=self.kind, workers=self.workers)

    def shutdown(self) -> None:
        """Wait for running work, then stop the workers."""
        if self.preread is not None:
            self.preread.close()
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
