"""Secret key files (the node's pseudonymisation key, the audit head's HMAC key).

``load_or_create_key`` creates a key once, mode 0600, never logged. The key is written
to a temporary file, synced, then linked into place (``os.link`` fails if the name
exists): another process starting at the same moment reads the same whole key, never
an empty or half-written file, and whichever process loses the race keeps the winner's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cds.errors import CdsError

KEY_BYTES = 32


def _read(path: Path) -> bytes:
    key = path.read_bytes()
    if not key:
        raise CdsError(
            f"{path}: the key file is empty (damaged): restore it from a backup; a new "
            "key would not match what was made with the old one"
        )
    return key


def load_or_create_key(path: Path, *, create: bool = True) -> bytes | None:
    """The key in ``path``; made when absent and ``create`` (else None)."""
    if path.exists():
        return _read(path)
    if not create:
        return None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(tmp, path)
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return _read(path)
