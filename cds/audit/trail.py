"""The append-only audit trail (first version: JSON lines under <home>/audit)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds.audit.events import AuditEvent, AuditOutcome


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


class AuditTrail:
    """Thread-safe; ``record`` returns once the record is on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.mkdir(parents=True, exist_ok=True)
        self._file = path / "audit.jsonl"
        self._seq = sum(1 for _ in self._file.open("rb")) if self._file.exists() else 0

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
        with self._lock:
            self._seq += 1
            rec = AuditRecord(
                self._seq, time.time(), event, outcome, who, where, study_key, dict(detail or {})
            )
            line = json.dumps(
                {
                    "seq": rec.seq,
                    "at": rec.at,
                    "event": rec.event.value,
                    "outcome": rec.outcome.value,
                    "who": rec.who,
                    "where": rec.where,
                    "study_key": rec.study_key,
                    "detail": rec.detail,
                },
                sort_keys=True,
            )
            fd = os.open(self._file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            return rec

    def close(self) -> None:
        pass


class NullAuditTrail(AuditTrail):
    """Records nothing (tools that run without a node home)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0

    def record(self, event: AuditEvent, **kwargs: Any) -> AuditRecord:
        self._seq += 1
        return AuditRecord(self._seq, time.time(), event, AuditOutcome.SUCCESS, "system")
