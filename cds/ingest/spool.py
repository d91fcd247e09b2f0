"""The durable spool: received instances as Part 10 files on local disk.

A file is durable once ``write`` returns: written to a temporary file in the
same file system, fsync'd, renamed into place, and its directory fsync'd.
Files are content-addressed (``<SOPInstanceUID>.<sha256[:12]>.dcm``), so a
re-sent identical instance lands on the same name and a changed one on a new
name beside the old: no version ever overwrites another.

Layout under the spool root::

    tmp/                                  partial writes, cleared at start
    spare/                                empty files made ahead of need, cleared at start
    studies/<study_key>/<series_key>/     one folder per series
    quarantine/<when>-<id>.dcm (+ .json)  refused hostile data sets, never indexed

Creating a file costs 0.3-0.6 ms on ext4, on the critical path of every
C-STORE; so a background thread keeps a few empty temporary files ready in
``spare/`` (same file system), and ``write`` fills one of them. Written,
fsync'd, renamed, directory fsync'd: the durable write is exactly as before,
only the create happens earlier.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cds.errors import IngestError

STATUS_OUT_OF_RESOURCES = 0xA700

_PREAMBLE = b"\x00" * 128 + b"DICM"  # zeroed preamble (no polyglot files, CVE-2019-11687)
_SPARES_KEPT = 8  # enough for several concurrent associations
_SPARES_IDLE_S = 10.0  # the refill thread ends after this long without a write


@dataclass(frozen=True, slots=True)
class SpoolSpace:
    free_bytes: int
    total_bytes: int
    min_free_bytes: int

    @property
    def below_watermark(self) -> bool:
        return self.free_bytes < self.min_free_bytes


class Spool:
    """Durable storage of received instances."""

    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self._tmp = root / "tmp"
        self._studies = root / "studies"
        self._spares = _SpareFiles(root / "spare")
        self._known_dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()

    def open(self) -> None:
        """Create the layout and drop partial writes and spares left by a crash."""
        self._spares.clear()
        for d in (self.root, self._tmp, self._spares.folder, self._studies):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in (*self._tmp.iterdir(), *self._spares.folder.iterdir()):
            leftover.unlink(missing_ok=True)
        _fsync_dir(self.root)

    def space(self) -> SpoolSpace:
        usage = shutil.disk_usage(self.root)
        return SpoolSpace(usage.free, usage.total, self.min_free_bytes)

    def check_space(self, incoming: int) -> None:
        """Raise IngestError(0xA700) if storing ``incoming`` bytes would pass the watermark."""
        usage = shutil.disk_usage(self.root)
        if usage.free - incoming < self.min_free_bytes:
            free_mb = usage.free // 2**20
            need_mb = self.min_free_bytes // 2**20
            raise IngestError(
                STATUS_OUT_OF_RESOURCES,
                f"spool disk low: {free_mb} MiB free, watermark {need_mb} MiB",
            )

    @staticmethod
    def relative_path(study_key: str, series_key: str, sop_uid: str, sha256: str) -> str:
        return f"studies/{study_key}/{series_key}/{sop_uid}.{sha256[:12]}.dcm"

    def exists(self, rel_path: str) -> bool:
        return (self.root / rel_path).is_file()

    def absolute(self, rel_path: str) -> Path:
        return self.root / rel_path

    def write(self, rel_path: str, file_meta: bytes, dataset: bytes) -> None:
        """Write a Part 10 file durably: preamble + File Meta + data set as received.

        Raises IngestError(0xA700) when the disk is full, and lets other OSErrors
        through for the caller to map.
        """
        with self.begin(file_meta, dataset) as pending:
            pending.commit(rel_path)

    def begin(self, file_meta: bytes, dataset: bytes) -> PendingFile:
        """Write a Part 10 file to a temporary file and start it on its way to disk.

        Nothing is durable until ``PendingFile.commit``; the caller can do other
        work meanwhile (the kernel writes back while it does, so the fsync in
        ``commit`` waits less). Errors are raised by ``commit``, as ``write``
        raises them; use the result as a context manager so that it is
        discarded unless committed.
        """
        tmp: Path | None = None
        try:
            tmp, fd = self._open_temporary()
            try:
                _write_all(fd, _PREAMBLE)
                _write_all(fd, file_meta)
                _write_all(fd, dataset)
                _start_writeback(fd)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            return PendingFile(self, None, -1, _disk_error(exc))
        return PendingFile(self, tmp, fd, None)

    def _open_temporary(self) -> tuple[Path, int]:
        """A new, empty temporary file open for writing: a spare if one is ready."""
        spare = self._spares.take()
        if spare is not None:
            try:
                return spare, os.open(spare, os.O_WRONLY)
            except FileNotFoundError:  # dropped by open(): make one here
                pass
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)

    def remove(self, rel_path: str) -> None:
        (self.root / rel_path).unlink(missing_ok=True)

    def remove_files(self, rel_paths: Iterable[str]) -> int:
        """Remove spooled files durably (each folder fsync'd once after its unlinks),
        so that a removed file cannot come back after a power loss and be re-indexed.

        Returns how many of the files existed.
        """
        removed = 0
        folders: set[Path] = set()
        for rel in rel_paths:
            path = self._inside(rel)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
            folders.add(path.parent)
        for folder in folders:
            _fsync_dir(folder)
        return removed

    def study_files(self, study_key: str) -> list[str]:
        """Every file in a study's folder (known to the store or not), relative to the root."""
        folder = self._study_folder(study_key)
        return sorted(p.relative_to(self.root).as_posix() for p in folder.glob("*/*.dcm"))

    def remove_study_folder(self, study_key: str) -> None:
        """Remove a study's series folders and its own folder where they are empty.

        A write into one of them at the same moment makes its folder again (see
        ``PendingFile.commit``); a folder that is not empty stays.
        """
        folder = self._study_folder(study_key)
        with self._dirs_lock:
            for d in (*sorted(p for p in folder.glob("*") if p.is_dir()), folder):
                self._known_dirs.discard(d)
                with contextlib.suppress(OSError):  # not empty, or already gone
                    d.rmdir()
            _fsync_dir(self._studies)

    def _study_folder(self, study_key: str) -> Path:
        if not study_key or study_key in (".", "..") or "/" in study_key or "\\" in study_key:
            raise ValueError(f"study_key: not a study folder name: {study_key!r}")
        return self._studies / study_key

    def _inside(self, rel_path: str) -> Path:
        rel = Path(rel_path)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"spool path must be relative and inside the spool: {rel_path!r}")
        return self.root / rel

    def iter_files(self) -> Iterator[Path]:
        """Every spooled instance file (used to reconcile the store after a crash).

        Only ``studies/``: a quarantined file is never indexed, parsed or processed.
        """
        yield from self._studies.glob("*/*/*.dcm")

    @property
    def quarantine_folder(self) -> Path:
        return self.root / "quarantine"

    def quarantine(
        self,
        file_meta: bytes,
        dataset: bytes,
        *,
        reason: str,
        status: int,
        calling_ae: str,
        sop_class_uid: str,
        sop_uid: str,
        max_bytes: int,
    ) -> str:
        """Keep a refused data set aside for inspection, with a JSON sidecar saying why.

        The sidecar holds no patient data: the refusal (cds' own words), the status,
        the calling AE, the time, the request's SOP Class and Instance UIDs, size
        and SHA-256. The bytes are kept only while the quarantine holds less than
        ``max_bytes`` and the disk stays above the watermark, so a flood of hostile
        data sets cannot fill the disk. Returns the name (without suffix) written.
        """
        folder = self.quarantine_folder
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + uuid.uuid4().hex[:12]
        held = sum(p.stat().st_size for p in folder.glob("*.dcm"))
        kept = (
            held + len(dataset) <= max_bytes
            and shutil.disk_usage(folder).free - len(dataset) >= self.min_free_bytes
        )
        if kept:
            _write_durably(folder / f"{name}.dcm", (_PREAMBLE, file_meta, dataset))
        sidecar = {
            "reason": reason,
            "status": f"0x{status:04X}",
            "calling_ae": calling_ae,
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "sop_class_uid": sop_class_uid,
            "sop_instance_uid": sop_uid,
            "size": len(dataset),
            "sha256": hashlib.sha256(dataset).hexdigest(),
            "file": f"{name}.dcm" if kept else None,
        }
        body = json.dumps(sidecar, indent=2).encode() + b"\n"
        _write_durably(folder / f"{name}.json", (body,))
        return name

    def _ensure_dir(self, d: Path) -> None:
        if d in self._known_dirs:
            return
        with self._dirs_lock:
            if d in self._known_dirs:
                return
            created = []
            p = d
            while not p.exists():
                created.append(p)
                p = p.parent
            d.mkdir(parents=True, exist_ok=True)
            # make every new directory entry durable, from the deepest up
            for c in created:
                _fsync_dir(c.parent)
            self._known_dirs.add(d)


class PendingFile:
    """A data set in a temporary file, on its way to disk; see ``Spool.begin``."""

    def __init__(self, spool: Spool, tmp: Path | None, fd: int, error: BaseException | None):
        self._spool = spool
        self._tmp = tmp
        self._fd = fd
        self._error = error
        self._synced = False

    def sync(self) -> None:
        """fsync the temporary file now rather than in ``commit``, so that the caller
        can overlap it with work on other threads (hashing). Nothing is in place yet;
        an error is raised by ``commit``, as ``commit`` raises its own."""
        if self._error is not None or self._synced or self._tmp is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._error = _disk_error(exc)
            return
        self._synced = True

    def commit(self, rel_path: str) -> None:
        """fsync the file, rename it into place, fsync its directory: durable on return."""
        if self._error is not None:
            self.discard()
            raise self._error
        tmp, fd = self._tmp, self._fd
        assert tmp is not None, "commit() after discard()"
        self._tmp, self._fd = None, -1
        final = self._spool.root / rel_path
        try:
            self._spool._ensure_dir(final.parent)
            try:
                if not self._synced:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # its folder was removed meanwhile (a purge): make it again
                with self._spool._dirs_lock:
                    self._spool._known_dirs.discard(final.parent)
                self._spool._ensure_dir(final.parent)
                os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _disk_error(exc)  # noqa: B904 (_disk_error sets the cause)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def discard(self) -> None:
        """Drop the temporary file (a no-op once committed)."""
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._tmp.unlink(missing_ok=True)
            self._tmp, self._fd = None, -1

    def __enter__(self) -> PendingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def _disk_error(exc: OSError) -> BaseException:
    """The error ``write`` raises for ``exc``: 0xA700 when the disk is full."""
    if exc.errno in (28, 122):  # ENOSPC, EDQUOT
        err = IngestError(STATUS_OUT_OF_RESOURCES, "spool disk full")
        err.__cause__ = exc
        return err
    return exc


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages now, without waiting.

    On Linux, POSIX_FADV_DONTNEED starts write-back of dirty pages (pages still
    under write-back stay cached); elsewhere it is a hint that may do nothing.
    Durability still comes from the fsync in ``PendingFile.commit``.
    """
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class _SpareFiles:
    """Empty temporary files created ahead of need by a background thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: deque[Path] = deque()
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def take(self) -> Path | None:
        """A spare (or None if none is ready), and a refill request."""
        try:
            spare: Path | None = self._files.popleft()
        except IndexError:
            spare = None
        with self._lock:
            self._wanted.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_refill, args=(weakref.ref(self),), name="cds-spool-spares", daemon=True
                )
                self._thread.start()
        return spare

    def clear(self) -> None:
        self._files.clear()

    def fill(self) -> None:
        while len(self._files) < _SPARES_KEPT:
            spare = self.folder / f"{uuid.uuid4().hex}.part"
            os.close(os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
            self._files.append(spare)


def _refill(ref: weakref.ref[_SpareFiles]) -> None:
    """The refill thread: ends when its spool is gone or no write came for a while."""
    while True:
        spares = ref()
        if spares is None:
            return
        wanted = spares._wanted
        del spares  # hold no reference while waiting
        wanted.wait(timeout=_SPARES_IDLE_S)
        spares = ref()
        if spares is None:
            return
        with spares._lock:
            if not wanted.is_set():
                spares._thread = None  # the next take() starts another
                return
            wanted.clear()
        with contextlib.suppress(OSError):  # disk full, folder gone: write() makes its own
            spares.fill()
        del spares


def _write_durably(path: Path, parts: Iterable[bytes]) -> None:
    """Write a small file next to its final name, fsync, rename, fsync the folder."""
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        for part in parts:
            _write_all(fd, part)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
