"""Read and decode a study's series during its quiet time (issue 19, item 2).

A study is complete only once no instance arrived for its quiet time (10 s by default);
until then the machine waits. ``PreRead`` uses that wait: when a sender's association
ends, the node names the files its routing rules would give to a model, and one
background thread reads each file whole and decodes its Pixel Data (``Decoded``: the
data set without its Pixel Data, and the frames, so a file is held once). When
the model runs, ``take`` hands each file's ``Decoded`` over instead of reading it again,
so the job starts with its series already in memory (and, with ``prepare``, what else
the node makes of each data set before encoding: the encoders' checked copy).

What it holds is bounded: ``budget_bytes`` in all (the data sets' Pixel Data and the
decoded frames); a file that would go over it is left for the job to read. A file is
handed over only while it is the file that was read: same inode, size and modification
time (a resent instance replaces the file and is read again by the job). A file that
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

from cds.inference.images import Decoded, decode_instance
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


class _Series:
    """The frames of one series, read ahead into one array in the order of its files, so
    that the job's stack is that array (``images.decode`` adopts it) and no copy is made.
    Its pages are touched only as files are read (what is held is what was read)."""

    def __init__(self, files: int) -> None:
        self.files = files
        self.frames: np.ndarray | None = None
        self.off = False  # a file of another shape or dtype, or of several frames

    def place(self, decoded: Decoded, index: int) -> None:
        px = decoded.px
        if self.off or px is None or px.shape[0] != 1:
            self.off = True
            return
        if self.frames is None:
            self.frames = np.empty((self.files, *px.shape[1:]), px.dtype.newbyteorder("="))
        if px.shape[1:] != self.frames.shape[1:] or px.dtype != self.frames.dtype:
            self.off = True
            return
        self.frames[index] = px[0]
        decoded.px = self.frames[index : index + 1]  # a view: the file's own array goes


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
        self._queue: deque[tuple[str, Callable[[], Sequence[Sequence[Path]]] | _Slot]] = deque()
        self._queued: set[Path] = set()  # files waiting: one taken meanwhile is not read
        self._busy: Path | None = None  # the file being read now
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.stats = PreReadStats()

    # --- the node's side -------------------------------------------------
    def submit(self, study_key: str, plan: Callable[[], Sequence[Sequence[Path]]]) -> None:
        """Read ahead the series (each its files, in order) ``plan()`` names (called on
        the read-ahead thread)."""
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

    def forget(self, study_key: str) -> None:
        """Drop what is held or queued for ``study_key`` (its pipelines ran)."""
        with self._cond:
            self._queue = deque(q for q in self._queue if q[0] != study_key)
            self._queued = {q.path for _, q in self._queue if isinstance(q, _Slot)}
            for path in [p for p, e in self._entries.items() if e.study_key == study_key]:
                self._drop(path)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._queued.clear()
            for path in list(self._entries):
                self._drop(path)
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
        }

    # --- the read-ahead thread ---------------------------------------------
    def _drop(self, path: Path) -> None:
        entry = self._entries.pop(path)
        self.stats.held_bytes -= entry.nbytes
        self.stats.entries = len(self._entries)

    def _expire(self, now: float) -> None:
        for path in [p for p, e in self._entries.items() if now - e.at > self._ttl_s]:
            self._drop(path)

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
                    slots = [
                        _Slot(f, series, i)
                        for files in item()
                        for series in [_Series(len(files))]
                        for i, f in enumerate(files)
                    ]
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
            with self._cond:
                self._busy = None
                self.stats.failed += decoded is None
                self._cond.notify_all()
        if decoded is None or ident is None:
            return
        nbytes = decoded.nbytes
        with self._cond:
            if self._closed or self.stats.held_bytes + nbytes > self.budget_bytes:
                self.stats.over_budget += 1
                return
            self._entries[path] = _Entry(study_key, ident, decoded, nbytes, self._clock())
            self.stats.held_bytes += nbytes
            self.stats.entries = len(self._entries)
            self.stats.read += 1
