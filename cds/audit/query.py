"""Reading the trail back: records filtered by time, event, study and who."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cds.audit.events import AuditEvent
from cds.audit.trail import AuditRecord, read_records


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None
    events: frozenset[AuditEvent] = frozenset()
    study_key: str | None = None
    who: str | None = None  # exact, or a prefix ending in ':' ("AE:", "user:")

    def matches(self, rec: AuditRecord) -> bool:
        if self.since is not None and rec.at < self.since:
            return False
        if self.until is not None and rec.at >= self.until:
            return False
        if self.events and rec.event not in self.events:
            return False
        if self.study_key is not None and rec.study_key != self.study_key:
            return False
        if self.who is not None:
            return rec.who.startswith(self.who) if self.who.endswith(":") else rec.who == self.who
        return True


def query(path: Path, q: AuditQuery, limit: int | None = None) -> list[AuditRecord]:
    """Matching records in order; with ``limit``, the last ``limit`` of them."""
    found: Iterable[AuditRecord] = (r for r in read_records(path) if q.matches(r))
    if limit is None:
        return list(found)
    return list(deque(found, maxlen=limit))


def as_json(rec: AuditRecord) -> dict[str, object]:
    return {**rec.body(), "hash": rec.hash}
