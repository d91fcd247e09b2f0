"""Read and decode a study's series during its quiet time (issue 19, item 2).

A study is complete only once no instance arrived for its quiet time (10 s by default);
until then the machine waits. ``PreRead`` uses that wait: when a sender's association
ends, the node names the files its routing rules would give to a model, and one
background thread reads each file whole and decodes its Pixel Data (``Decoded``: the
data set without its Pixel Data, and the frames, so a file is held once). When
the model runs, ``take`` hands each file's ``Decoded`` over instead of reading it again,
so the job starts with its series already in memory (and, with ``prepare``, what else
the node makes of each data set before encoding: the encoders' checked copy). Once a
series is all read and held, the input batches of the model that will run on it are
made too (``SeriesPlan.preps``; a model of slices), as its runner would make them
(``preprocess.in_batches``); ``prepared`` hands them to the job whose stack is that very
array read ahead (same files, same order, same pixels), and to no other.

What it holds is bounded: ``budget_bytes`` in all (the data sets' Pixel Data and the
decoded frames, and the batches, which may take no more than their series' frames); a
file that would go over it is left for the job to read, batches that would are not
made. A file is handed over only while it is the file that was read: same inode, size
and modification time (a resent instance replaces the file and is read again by the
job). A file that
cannot be read or decoded is left too: the job reads it and reports its error as it
always does. Entries not taken within ``ttl_s`` (a study no rule runs after all, a
routing change) are dropped, as are a study's leftovers once its pipelines ran
(``forget``). Nothing here decides anything: without it every job reads its files, with
the same result.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from cds.inference import manifest as mf
from cds.inference.images import Decoded, ImageMeta, ImageStack, decode_instance
from cds.inference.preprocess import Prepared, in_batches
from cds.logging import get_logger

log = get_logger("cds.preread")

#: (inode, size, mtime_ns) of a file: the same three, the same file
Ident = tuple[int, int, int]


def _ident(path: Path) -> Ident | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(slots=True)
class _Entry:
    study_key: str
    ident: Ident
    decoded: Decoded
    nbytes: int
    at: float


@dataclass(frozen=True, slots=True)
class Prep:
    """A model's input to make of a series ahead: its ``spec`` (a model of slices), under
    its manifest's digest (the key the job's runner asks for it by)."""

    key: str
    spec: mf.InputSpec


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """A series to read ahead: its files, in the job's order, and the models' inputs to
    make of it once it is all read."""

    files: Sequence[Path]
    preps: Sequence[Prep] = ()


class _Series:
    """The frames of one series, read ahead into one array in the order of its files, so
    that the job's stack is that array (``images.decode`` adopts it) and no copy is made.
    Its pages are touched only as files are read (what is held is what was read). Once
    every file is read and held, the models' batches are made of it (``preps``)."""

    def __init__(self, study_key: str, files: int, preps: Sequence[Prep] = ()) -> None:
        self.study_key = study_key
        self.files = files
        self.preps = preps
        self.frames: np.ndarray | None = None
        self.off = False  # a file of another shape or dtype, or of several frames
        self.metas: list[list[ImageMeta]] = [[] for _ in range(files)]
        self.uid = self.modality = ""
        self.held = 0  # files read and held (all of them: the batches can be made)
        self.made: Prepared = {}
        self.making = False
        self.nbytes = 0  # of the batches
        self.at = 0.0

    def place(self, decoded: Decoded, index: int) -> None:
        px = decoded.px
        if self.off or px is None or px.shape[0] != 1:
            self.off = True
            return
        if self.frames is None:
            self.frames = np.empty((self.files, *px.shape[1:]), px.dtype.newbyteorder("="))
            self.uid, self.modality = decoded.series_uid, decoded.modality
        if px.shape[1:] != self.frames.shape[1:] or px.dtype != self.frames.dtype:
            self.off = True
            return
        self.frames[index] = px[0]
        self.metas[index] = decoded.metas
        decoded.px = self.frames[index : index + 1]  # a view: the file's own array goes

    @property
    def whole(self) -> bool:
        """Every file read and held: the job's stack will be ``frames``, as they are."""
        return bool(self.preps) and not self.off and self.held == self.files

    def stack(self) -> ImageStack:
        """The stack ``images.decode`` makes of these files, as the job will have it."""
        assert self.frames is not None
        metas = [m for ms in self.metas for m in ms]
        stack = ImageStack(self.uid, self.modality, self.frames, metas)
        stack.order = list(range(len(metas)))
        stack.flips = [(False, False)] * len(metas)
        return stack


@dataclass(frozen=True, slots=True)
class _Slot:
    """One file to read ahead: its path, its series and its place in it."""

    path: Path
    series: _Series
    index: int

    def place(self, decoded: Decoded) -> None:
        self.series.place(decoded, self.index)


@dataclass(slots=True)
class PreReadStats:
    held_bytes: int = 0
    entries: int = 0
    read: int = 0  # files read ahead
    taken: int = 0  # of them, handed to a job
    over_budget: int = 0  # left for the job: the budget was full
    failed: int = 0  # left for the job: could not be read or decoded here
    series_made: int = 0  # series whose models' batches were made ahead
    series_taken: int = 0  # of them, used by a job


class PreRead:
    """Files read and decoded ahead of their model run (see the module)."""

    def __init__(
        self,
        read: Callable[[Path], Dataset],
        budget_bytes: int,
        *,
        prepare: Callable[[Dataset], object] | None = None,
        ttl_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._prepare = prepare  # more made of each data set ahead (``Decoded.ready``)
        self.budget_bytes = budget_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[Path, _Entry] = {}
        self._queue: deque[tuple[str, _Plan | _Slot]] = deque()
        self._queued: set[Path] = set()  # files waiting: one taken meanwhile is not read
        self._series: list[_Series] = []  # whole series: their batches made or being made
        self._busy: Path | None = None  # the file being read now
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.stats = PreReadStats()

    # --- the node's side -------------------------------------------------
    def submit(
        self, study_key: str, plan: Callable[[], Sequence[SeriesPlan | Sequence[Path]]]
    ) -> None:
        """Read ahead the series (each its files, in order, or a ``SeriesPlan``)
        ``plan()`` names (called on the read-ahead thread)."""
        with self._cond:
            if self._closed or self.budget_bytes <= 0:
                return
            self._queue.append((study_key, plan))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="cds-preread", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def take(self, path: Path) -> Decoded | None:
        """The file read ahead, handed over once (None: read it yourself). Waits for a
        file being read at this moment; a file still queued is left to the caller."""
        with self._cond:
            self._queued.discard(path)
            while self._busy == path:
                self._cond.wait()
            entry = self._entries.pop(path, None)
            if entry is None:
                return None
            self.stats.held_bytes -= entry.nbytes
            self.stats.entries = len(self._entries)
            if _ident(path) != entry.ident:  # replaced since (a resent instance)
                return None
            self.stats.taken += 1
            return entry.decoded

    def prepared(self, pixels: np.ndarray) -> Prepared | None:
        """The models' batches made ahead of the series whose frames are ``pixels``
        (the job's stack is the array read ahead, as it is: the same pixels), handed
        over once; waits for them while they are being made."""
        with self._cond:
            series = next((s for s in self._series if s.frames is pixels), None)
            if series is None:
                return None
            while series.making:
                self._cond.wait()
            self._let_go(series)
            self.stats.series_taken += bool(series.made)
            made, series.made = series.made, {}
            return made or None

    def forget(self, study_key: str) -> None:
        """Drop what is held or queued for ``study_key`` (its pipelines ran)."""
        with self._cond:
            self._queue = deque(q for q in self._queue if q[0] != study_key)
            self._queued = {q.path for _, q in self._queue if isinstance(q, _Slot)}
            for path in [p for p, e in self._entries.items() if e.study_key == study_key]:
                self._drop(path)
            for series in [s for s in self._series if s.study_key == study_key]:
                self._let_go(series)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._queued.clear()
            for path in list(self._entries):
                self._drop(path)
            for series in list(self._series):
                self._let_go(series)
            self._cond.notify_all()

    def describe(self) -> dict[str, object]:
        s = self.stats
        return {
            "budget_mb": round(self.budget_bytes / 2**20),
            "held_mb": round(s.held_bytes / 2**20, 1),
            "files_held": s.entries,
            "files_read": s.read,
            "files_taken": s.taken,
            "files_over_budget": s.over_budget,
            "files_failed": s.failed,
            "series_prepared": s.series_made,
            "series_prepared_taken": s.series_taken,
        }

    # --- the read-ahead thread ---------------------------------------------
    def _drop(self, path: Path) -> None:
        entry = self._entries.pop(path)
        self.stats.held_bytes -= entry.nbytes
        self.stats.entries = len(self._entries)

    def _let_go(self, series: _Series) -> None:
        """The series is no longer held: its batches' bytes and its frames (the job's
        stack, if it has them, keeps them as long as it needs)."""
        if series in self._series:
            self._series.remove(series)
            self.stats.held_bytes -= series.nbytes
        series.nbytes, series.frames = 0, None

    def _expire(self, now: float) -> None:
        for path in [p for p, e in self._entries.items() if now - e.at > self._ttl_s]:
            self._drop(path)
        for series in [s for s in self._series if not s.making and now - s.at > self._ttl_s]:
            self._let_go(series)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait(timeout=self._ttl_s)
                    self._expire(self._clock())
                if self._closed:
                    return
                study_key, item = self._queue.popleft()
                self._expire(self._clock())
            try:
                if isinstance(item, _Slot):
                    self._read_one(study_key, item)
                else:  # a study's plan: its files go to the back of the queue, in order
                    plans = [p if isinstance(p, SeriesPlan) else SeriesPlan(p) for p in item()]
                    slots = [
                        _Slot(f, series, i)
                        for p in plans
                        for series in [_Series(study_key, len(p.files), p.preps)]
                        for i, f in enumerate(p.files)
                    ]
                    del plans
                    with self._cond:
                        self._queue.extend((study_key, q) for q in slots)
                        self._queued.update(q.path for q in slots)
                    del slots
            except Exception as exc:  # never stops the thread; the job reads for itself
                with self._cond:
                    self.stats.failed += 1
                log.warning("preread.failed", study_key=study_key, error_type=type(exc).__name__)
            # this frame lives as long as the node: nothing read stays held by it
            del item

    def _read_one(self, study_key: str, slot: _Slot) -> None:
        path = slot.path
        with self._cond:
            if path not in self._queued or path in self._entries:
                return  # taken by its job meanwhile, or held already
            self._queued.discard(path)
            if self.stats.held_bytes >= self.budget_bytes:
                self.stats.over_budget += 1
                return
            self._busy = path
        decoded: Decoded | None = None
        ident = None
        try:
            ident = _ident(path)
            decoded = decode_instance(self._read(path)) if ident is not None else None
            if decoded is not None and "PixelData" in decoded.ds:  # the frames are enough
                del decoded.ds.PixelData  # (a job that makes a capture reads the file again)
            if decoded is not None and self._prepare is not None:
                decoded.ready = self._prepare(decoded.ds)
            if decoded is not None:
                slot.place(decoded)
        except Exception:  # the job reads it and reports the error in its words
            decoded = None
        finally:
            with self._cond:  # held before it is no longer busy: a job waiting takes it
                self._busy = None
                whole = self._keep(study_key, path, ident, decoded, slot.series)
                self._cond.notify_all()
        if whole:
            self._make(slot.series)

    def _keep(
        self, study_key: str, path: Path, ident: Ident | None, decoded: Decoded | None,
        series: _Series,
    ) -> bool:  # fmt: skip
        """Hold what was read (under the lock); True when that makes its series whole,
        which is then held too, its batches to be made (``_make``)."""
        if decoded is None or ident is None:
            self.stats.failed += 1
            return False
        nbytes = decoded.nbytes
        if self._closed or self.stats.held_bytes + nbytes > self.budget_bytes:
            self.stats.over_budget += 1
            return False
        self._entries[path] = _Entry(study_key, ident, decoded, nbytes, self._clock())
        self.stats.held_bytes += nbytes
        self.stats.entries = len(self._entries)
        self.stats.read += 1
        series.held += 1
        if not series.whole:
            return False
        series.making, series.at = True, self._clock()
        self._series.append(series)
        return True

    def _make(self, series: _Series) -> None:
        """Make the models' batches of a whole series, as its job would (``in_batches``):
        no more bytes than its frames take, within the budget; otherwise none."""
        with self._cond:
            frames = series.frames
            room = self.budget_bytes - self.stats.held_bytes
        limit = min(frames.nbytes if frames is not None else 0, room)
        made: Prepared = {}
        nbytes = 0
        try:
            stack = series.stack()
            for prep in series.preps:
                t0 = time.perf_counter()
                batches = []
                for batch in in_batches(stack, prep.spec):
                    nbytes += batch[0].nbytes
                    if nbytes > limit:
                        raise _OverBudget
                    batches.append(batch)
                made[prep.key] = (batches, time.perf_counter() - t0)
            del stack
        except _OverBudget:
            made, nbytes = {}, 0
            with self._cond:
                self.stats.over_budget += 1
        except Exception as exc:  # the job preprocesses and reports the error in its words
            made, nbytes = {}, 0
            log.warning("preread.prepare_failed", error_type=type(exc).__name__)
        finally:
            with self._cond:
                series.making = False
                if made and series in self._series and not self._closed:
                    series.made, series.nbytes = made, nbytes
                    self.stats.held_bytes += nbytes
                    self.stats.series_made += 1
                self._cond.notify_all()


class _OverBudget(Exception):
    """The batches would take more than their series' frames, or the budget's room."""


#: a study's plan: its series, each its files (in order) or a ``SeriesPlan``
_Plan = Callable[[], Sequence[SeriesPlan | Sequence[Path]]]
