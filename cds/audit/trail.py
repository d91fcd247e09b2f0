"""The append-only, hash-chained audit trail (``<home>/audit/audit.jsonl``).

One JSON object a line. Each record holds ``prev``, the SHA-256 of the record
before it (64 zeros for the first), and ``hash``, the SHA-256 of its own
canonical bytes (sorted keys, no spaces, ASCII, ``hash`` left out), so an
edited, deleted or moved record breaks the chain (``cds audit verify``).

Cutting records off the end leaves a valid chain, so each write also updates
``audit.head`` (last seq and hash, HMAC'd with ``audit.key``, 0600): a log
shorter than its head was truncated. The head is written after the log line is
fsync'd, so it may lag the log after a crash (fine) but never lead it.

Writers in several threads and processes (the node, and the CLI recording a
purge or an export while the node runs) take ``audit.lock`` (``fcntl.flock``)
and continue from the chain's tail as it is on disk. A line torn by a crash
is closed and reported by the next writer as a ``security_alert`` record, so
the verifier can tell a crash from an edit.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds.audit.events import AuditEvent, AuditOutcome
from cds.keyfile import load_or_create_key

LOG_NAME = "audit.jsonl"
HEAD_NAME = "audit.head"
KEY_NAME = "audit.key"
LOCK_NAME = "audit.lock"
GENESIS = "0" * 64
TORN = "torn_record"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: float  # epoch seconds
    event: AuditEvent
    outcome: AuditOutcome
    who: str  # "AE:ORTHANC", "user:dr.martin", "system"
    where: str | None = None  # peer address, when there is one
    study_key: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    prev: str = GENESIS
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """The record as stored, without its own hash."""
        return {
            "seq": self.seq,
            "at": self.at,
            "event": self.event.value,
            "outcome": self.outcome.value,
            "who": self.who,
            "where": self.where,
            "study_key": self.study_key,
            "detail": dict(self.detail),
            "prev": self.prev,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> AuditRecord:
        return cls(
            seq=int(obj["seq"]),
            at=float(obj["at"]),
            event=AuditEvent(obj["event"]),
            outcome=AuditOutcome(obj["outcome"]),
            who=str(obj["who"]),
            where=obj.get("where"),
            study_key=obj.get("study_key"),
            detail=dict(obj.get("detail") or {}),
            prev=str(obj["prev"]),
            hash=str(obj["hash"]),
        )


def canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
    ).encode()


def digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(body)).hexdigest()


def head_mac(key: bytes, seq: int, last_hash: str) -> str:
    return hmac.new(key, f"{seq}:{last_hash}".encode(), hashlib.sha256).hexdigest()


def read_key(path: Path, create: bool) -> bytes | None:
    """The head's HMAC key (created once, mode 0600, never logged)."""
    return load_or_create_key(path / KEY_NAME, create=create)


def iter_lines(log_file: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw line with its newline if it has one)."""
    if not log_file.exists():
        return
    with log_file.open("rb") as f:
        yield from enumerate(f, start=1)


def read_records(path: Path) -> Iterator[AuditRecord]:
    """Every well-formed record of the trail in ``path``, in file order."""
    for _, line in iter_lines(path / LOG_NAME):
        if not line.endswith(b"\n"):
            continue
        try:
            yield AuditRecord.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue


Listener = Callable[[AuditRecord], None]


def cli_actor() -> str:
    """``user:<login>`` for acts done from the command line (the OS account)."""
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"user:uid{os.getuid()}"


class AuditTrail:
    """Thread- and process-safe; ``record`` returns once the record is on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # not ours (the CLI as another user): leave it
            os.chmod(path, 0o700)
        self._file = path / LOG_NAME
        self._head = path / HEAD_NAME
        self._key = read_key(path, create=True) or b""
        self._lock_fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = os.open(self._file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._tail: tuple[int, str, int] = (0, GENESIS, 0)  # seq, hash, file size read
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Called (in the writer's thread) after each record is on disk; must not raise."""
        self._listeners.append(listener)

    # --- tail ------------------------------------------------------------------
    def _read_tail(self) -> tuple[int, str, int | None]:
        """(last seq, last hash, line number of a torn last line or None), from disk.

        Reads only what was appended since the last call (other processes)."""
        seq, last, done = self._tail
        size = os.fstat(self._fd).st_size
        if size < done:  # shorter than we saw: someone truncated it; rescan
            seq, last, done = 0, GENESIS, 0
        torn_line: int | None = None
        if size > done:
            with self._file.open("rb") as f:
                f.seek(done)
                data = f.read(size - done)
            lines = data.split(b"\n")
            for raw in lines[:-1]:
                done += len(raw) + 1
                try:
                    obj = json.loads(raw)
                    seq, last = int(obj["seq"]), str(obj["hash"])
                except (ValueError, KeyError, TypeError):
                    continue  # a closed torn line: verify reports it, the chain skips it
            if lines[-1]:  # no newline at the end: a crash tore the last write
                torn_line = self._count_lines(done) + 1
        self._tail = (seq, last, done)
        return seq, last, torn_line

    def _count_lines(self, upto: int) -> int:
        with self._file.open("rb") as f:
            return f.read(upto).count(b"\n")

    def _append(self, body: dict[str, Any]) -> AuditRecord:
        h = digest(body)
        line = canonical({**body, "hash": h}) + b"\n"
        view = memoryview(line)
        while view:  # a short write (disk full) raises next time round: a torn line
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        seq = int(body["seq"])
        self._tail = (seq, h, self._tail[2] + len(line))
        self._write_head(seq, h)
        return AuditRecord.from_json({**body, "hash": h})

    def _write_head(self, seq: int, last: str) -> None:
        data = json.dumps({"seq": seq, "hash": last, "mac": head_mac(self._key, seq, last)})
        tmp = self._head.with_name(f"{HEAD_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._head)

    # --- writing -----------------------------------------------------------------
    def record(
        self,
        event: AuditEvent,
        *,
        who: str,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        where: str | None = None,
        study_key: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        written: list[AuditRecord] = []
        with self._lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                seq, last, torn = self._read_tail()
                if torn is not None:  # close the torn line, and say so in the chain
                    os.write(self._fd, b"\n")
                    os.fsync(self._fd)
                    self._tail = (seq, last, os.fstat(self._fd).st_size)
                    alert = self._body(
                        seq + 1, last, AuditEvent.SECURITY_ALERT, AuditOutcome.MINOR_FAILURE,
                        "system", None, None,
                        {"reason": TORN, "line": torn,
                         "note": "a write was cut short (crash); the line is not a record"},
                    )  # fmt: skip
                    written.append(self._append(alert))
                    seq, last = self._tail[0], self._tail[1]
                body = self._body(
                    seq + 1, last, event, outcome, who, where, study_key, dict(detail or {})
                )
                written.append(self._append(body))
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        for rec in written:
            for listener in self._listeners:
                listener(rec)
        return written[-1]

    @staticmethod
    def _body(  # noqa: PLR0917 - a private helper mirroring AuditRecord's fields
        seq: int,
        prev: str,
        event: AuditEvent,
        outcome: AuditOutcome,
        who: str,
        where: str | None,
        study_key: str | None,
        detail: Mapping[str, Any],
    ) -> dict[str, Any]:
        return AuditRecord(
            seq, time.time(), AuditEvent(event), AuditOutcome(outcome), who, where, study_key,
            detail, prev,
        ).body()  # fmt: skip

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._lock_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)


class NullAuditTrail(AuditTrail):
    """Records nothing (tools that run without a node home)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._listeners = []

    def record(self, event: AuditEvent, **kwargs: Any) -> AuditRecord:
        self._seq += 1
        return AuditRecord(self._seq, time.time(), event, AuditOutcome.SUCCESS, "system")

    def close(self) -> None:
        pass
