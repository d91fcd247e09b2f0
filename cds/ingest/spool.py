"""The durable spool: received instances as Part 10 files on local disk.

A file is durable once ``write`` returns: written to a temporary file in the
same file system, fsync'd, renamed into place, and its directory fsync'd.
Files are content-addressed (``<SOPInstanceUID>.<sha256[:12]>.dcm``), so a
re-sent identical instance lands on the same name and a changed one on a new
name beside the old: no version ever overwrites another.

Layout under the spool root::

    tmp/                                  partial writes, cleared at start
    studies/<study_key>/<series_key>/     one folder per series
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cds.errors import IngestError

STATUS_OUT_OF_RESOURCES = 0xA700

_PREAMBLE = b"\x00" * 128 + b"DICM"  # zeroed preamble (no polyglot files, CVE-2019-11687)


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
        self._known_dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()

    def open(self) -> None:
        """Create the layout and drop partial writes left by a crash."""
        for d in (self.root, self._tmp, self._studies):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
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
        final = self.root / rel_path
        self._ensure_dir(final.parent)
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                _write_all(fd, _PREAMBLE)
                _write_all(fd, file_meta)
                _write_all(fd, dataset)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (28, 122):  # ENOSPC, EDQUOT
                raise IngestError(STATUS_OUT_OF_RESOURCES, "spool disk full") from exc
            raise

    def remove(self, rel_path: str) -> None:
        (self.root / rel_path).unlink(missing_ok=True)

    def iter_files(self) -> Iterator[Path]:
        """Every spooled instance file (used to reconcile the store after a crash)."""
        yield from self._studies.glob("*/*/*.dcm")

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
