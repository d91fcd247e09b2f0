"""Which files a routing explain may read, and the bounds on reading them.

``POST /api/route/explain`` reads files on the node's disk for an admin: only under
``routing.explain_roots``, by real path (links resolved), never a device, FIFO or
socket, and within ``routing.explain_limits`` (files, bytes, wall time). The walk checks
its budget at every directory entry and every file, so a deadline or a cancellation
(the HTTP client went away) stops it at once. ``cds route explain`` reads the admin's
own local paths with the same bounds, without roots.

Messages name a path by its place in the request (``paths[2]``), never by its text.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cds.config import ExplainLimits
from cds.errors import IngestError, RoutingError
from cds.ingest.instance import STATUS_TOO_LARGE

MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
MAX_PATHS = 64

_NAMES = {
    "max_files": "routing.explain_limits.max_files",
    "max_total_mb": "routing.explain_limits.max_total_mb",
    "max_seconds": "routing.explain_limits.max_seconds",
}
_NARROW = "name fewer or smaller folders (one series folder is enough), or raise the limit"


class ExplainStopped(RoutingError):
    """An explain of files stopped before its end: ``reason`` is the bound it hit
    (``max_files``, ``max_total_mb``, ``max_seconds``) or ``cancelled``."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class PathRefused(RoutingError):
    """A path given to the explain API may not be read; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class NotRegularFile(OSError):
    """A device, FIFO, socket or folder where a file was expected: never read."""


def _inside(real: Path, roots: Sequence[Path]) -> bool:
    return any(real == r or r in real.parents for r in roots)


def real_roots(roots: Iterable[Path]) -> list[Path]:
    return [Path(os.path.realpath(r)) for r in roots]


def allowed_paths(paths: Sequence[str], roots: Sequence[Path]) -> list[Path]:
    """The real paths of ``paths`` if every one is a regular file or folder inside one of
    ``roots``; else PathRefused (403 outside the roots or none set, 422 not usable)."""
    if not roots:
        raise PathRefused(
            403,
            "paths are refused: no folder is open to explain on this node. An admin sets "
            "routing.explain_roots to the folders of DICOM files that may be explained; "
            "received studies can be explained by study_key",
        )
    inside = real_roots(roots)
    out: list[Path] = []
    for i, text in enumerate(paths):
        where = f"paths[{i}]"
        if not text.strip():
            raise PathRefused(422, f"{where} is empty: give an absolute path inside a root")
        if "\x00" in text:
            raise PathRefused(422, f"{where} holds a NUL character")
        if not text.startswith("/"):
            raise PathRefused(422, f"{where} is relative: give an absolute path inside a root")
        try:
            real = Path(os.path.realpath(text))
        except (OSError, ValueError):
            raise PathRefused(422, f"{where} cannot be resolved") from None
        if not _inside(real, inside):
            raise PathRefused(
                403, f"{where} is outside routing.explain_roots (checked with links resolved)"
            )
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            raise PathRefused(422, f"{where}: no such file or folder") from None
        except OSError as exc:
            raise PathRefused(422, f"{where} cannot be read ({exc.strerror})") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise PathRefused(
                422,
                f"{where} is not a regular file or folder (devices, FIFOs and sockets "
                "are never opened)",
            )
        out.append(real)
    return out


@dataclass
class ReadBudget:
    """What one read of headers may still spend. None = no bound (the node's own spool).

    ``cancel`` may be set from another thread; the walk stops at its next entry.
    ``roots``: if set, a link met in a walk is followed only if it stays inside them.
    """

    max_files: int | None = None
    max_bytes: int | None = None
    deadline: float | None = None  # time.monotonic()
    limits: ExplainLimits | None = None  # for the messages
    roots: list[Path] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    files_found: int = 0
    files_read: int = 0
    bytes_read: int = 0

    @classmethod
    def of(cls, limits: ExplainLimits, roots: Iterable[Path] | None = None) -> ReadBudget:
        return cls(
            max_files=limits.max_files,
            max_bytes=limits.max_total_mb * 2**20,
            deadline=time.monotonic() + limits.max_seconds,
            limits=limits,
            roots=real_roots(roots) if roots is not None else None,
        )

    def counts(self) -> dict[str, int]:
        return {
            "files_found": self.files_found,
            "files_read": self.files_read,
            "bytes_read": self.bytes_read,
        }

    def _stop(self, reason: str, what: str) -> ExplainStopped:
        shown = ""
        if self.limits is not None:
            shown = f" ({getattr(self.limits, reason):g})"
        return ExplainStopped(
            reason,
            f"explain stopped: {what} {_NAMES[reason]}{shown}, after {self.files_read} "
            f"file(s) read; {_NARROW}",
        )

    def check(self) -> None:
        """Raise ExplainStopped if cancelled or past the deadline."""
        if self.cancel.is_set():
            raise ExplainStopped("cancelled", "explain cancelled: the client went away")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise self._stop("max_seconds", "listing and reading the files took longer than")

    def _found(self) -> None:
        self.files_found += 1
        if self.max_files is not None and self.files_found > self.max_files:
            raise self._stop("max_files", "the given paths hold more files than")

    # --- listing -------------------------------------------------------------------
    def list_files(self, paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
        """Regular files of ``paths`` (folders walked, sorted per path), and what was
        passed over. A folder's links to folders are not followed (as ``rglob``)."""
        files: list[Path] = []
        skipped: list[str] = []
        for p in paths:
            self.check()
            try:
                mode = p.stat().st_mode
            except OSError as exc:
                skipped.append(f"{p}: cannot be read ({exc.strerror})")
                continue
            if stat.S_ISDIR(mode):
                files.extend(sorted(self._walk(p, skipped)))
            elif stat.S_ISREG(mode):
                self._found()
                files.append(p)
            else:
                skipped.append(f"{p}: not a regular file (not opened)")
        return files, skipped

    def _walk(self, top: Path, skipped: list[str]) -> list[Path]:
        found: list[Path] = []
        passed: list[str] = []
        todo = [top]
        while todo:
            folder = todo.pop()
            try:
                with os.scandir(folder) as entries:
                    for e in entries:
                        self.check()
                        kind = self._kind(e)
                        if kind == "dir":
                            todo.append(Path(e.path))
                        elif kind == "file":
                            self._found()
                            found.append(Path(e.path))
                        elif kind:
                            passed.append(f"{e.path}: {kind}")
            except OSError as exc:
                passed.append(f"{folder}: folder cannot be read ({exc.strerror})")
        skipped.extend(sorted(passed))
        return found

    def _kind(self, e: os.DirEntry[str]) -> str:
        """ "dir", "file", "" (a link to a folder: passed over) or why it is skipped."""
        try:
            if not e.is_symlink():
                if e.is_dir(follow_symlinks=False):
                    return "dir"
                return "file" if e.is_file(follow_symlinks=False) else "not a regular file"
            if self.roots is not None and not _inside(Path(os.path.realpath(e.path)), self.roots):
                return "link leads outside routing.explain_roots (not followed)"
            mode = os.stat(e.path).st_mode
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        if stat.S_ISDIR(mode):
            return ""
        return "file" if stat.S_ISREG(mode) else "not a regular file"

    # --- reading -------------------------------------------------------------------
    def open(self, f: Path) -> BinaryIO:
        """``f`` opened for reading if it is a regular file (inside the roots, if set).

        Opened non-blocking, so a FIFO swapped in after the listing cannot hang us."""
        self.check()
        target = f
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        if self.roots is not None:
            target = Path(os.path.realpath(f))
            if not _inside(target, self.roots):
                raise NotRegularFile("leads outside routing.explain_roots")
            flags |= os.O_NOFOLLOW
        fd = os.open(target, flags)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotRegularFile("not a regular file")
        self.files_read += 1
        return os.fdopen(fd, "rb")

    def read(self, fh: BinaryIO, max_file_bytes: int) -> bytes:
        """The whole file: IngestError (skip it) past ``max_file_bytes``, ExplainStopped
        past the total. Never reads more than the smaller of the two, plus one byte."""
        if os.fstat(fh.fileno()).st_size > max_file_bytes:
            raise _too_large()
        cap = max_file_bytes
        if self.max_bytes is not None:
            cap = min(cap, self.max_bytes - self.bytes_read)
        raw = fh.read(cap + 1)
        if len(raw) > max_file_bytes:
            raise _too_large()
        self.spent(len(raw))
        return raw

    def spent(self, n: int) -> None:
        self.bytes_read += n
        if self.max_bytes is not None and self.bytes_read > self.max_bytes:
            raise self._stop("max_total_mb", "the files read hold more bytes than")


def _too_large() -> IngestError:
    return IngestError(STATUS_TOO_LARGE, "larger than dicom.limits.max_dataset_mb")
