"""Backfill: fetch a date range of an archive's studies at a rate that spares it.

``Backfill.run`` queries the archive once (C-FIND; the studies found go into the
ledger), then retrieves each study still open, at most ``rate_per_min`` starts a
minute (``RateLimiter``) and at most ``max_associations`` retrievals at once. A
retrieved study reaches the node's receiver like any other, completes after its quiet
time and is routed and inferred as usual; the node runs it after live studies and
delivers its results only when the run says ``deliver`` (``cds.store.backfill``).

Killed at any point, the same run given again goes on from the ledger: the query
again if it had not been recorded, then every study not yet ``retrieved``. A study
cut short is fetched again: the instances it already sent are duplicates (no second
processing), and the node does not route a study the ledger still shows as being
fetched. Each query and each retrieve is audited (who, the archive, counts; never a
UID or a patient attribute).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from cds.audit import AuditEvent, AuditOutcome, AuditTrail
from cds.errors import error_text
from cds.ingest.archive import ArchiveError, FoundStudy, Retrieved, StudyQuery
from cds.logging import get_logger
from cds.store.backfill import BackfillSpec, BackfillStatus
from cds.store.base import BackfillStore

log = get_logger("cds.backfill")

#: tries of one study within a run before it is ``failed`` (a later run tries again)
MAX_TRIES = 2


class RateLimiter:
    """At most ``per_minute`` starts a minute, evenly spaced: start i is at least
    ``60 / per_minute`` s after start i-1 (a late start does not make the next early)."""

    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not per_minute > 0:
            raise ValueError("--rate: studies per minute must be more than 0")
        self.interval = 60.0 / per_minute
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until the next start is allowed; returns that start's time."""
        with self._lock:
            now = self._clock()
            at = now if self._next is None else max(self._next, now)
            self._next = at + self.interval
        if at > now:
            self._sleep(at - now)
        return at


class Archive(Protocol):
    """What a run needs of an archive: its query (``cds.ingest.archive.ArchiveClient``,
    C-FIND; ``cds.ingest.archive_web.WebArchiveClient``, QIDO-RS)."""

    def find_studies(self, query: StudyQuery) -> list[FoundStudy]: ...


@dataclass(frozen=True, slots=True)
class Ports:
    """The run's narrow ports: the ledger, the archive, the audit trail, the study key
    of a UID, and how one study is fetched (C-MOVE to our AE title, C-GET or WADO-RS);
    ``query_op`` and ``retrieve_op`` name the protocols in the audit trail."""

    ledger: BackfillStore
    archive: Archive
    audit: AuditTrail
    study_key: Callable[[str], str]
    retrieve: Callable[[str], Retrieved]
    who: str = "system"
    where: str | None = None
    query_op: str = "C-FIND"
    retrieve_op: str = "C-MOVE"


def parse_rate(text: str) -> float:
    """``30``, ``30/min`` or ``2/s`` -> studies per minute."""
    value, _, unit = text.strip().partition("/")
    try:
        n = float(value)
    except ValueError:
        raise ValueError(f"--rate: {text!r} is not N/min") from None
    per = {"": 1.0, "min": 1.0, "m": 1.0, "s": 60.0, "h": 1 / 60}.get(unit.strip().lower())
    if per is None:
        raise ValueError(f"--rate: unknown unit {unit!r} (N/min, N/s or N/h)")
    if not n > 0:
        raise ValueError("--rate: studies per minute must be more than 0")
    return n * per


class Backfill:
    """One run of ``spec`` through ``ports``; ``progress`` is told after each study."""

    def __init__(
        self,
        spec: BackfillSpec,
        query: StudyQuery,
        ports: Ports,
        *,
        progress: Callable[[BackfillStatus], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if spec.max_associations < 1:
            raise ValueError("--max-associations: at least 1")
        self.spec = spec
        self.query = query
        self.ports = ports
        self.limiter = RateLimiter(spec.rate_per_min, clock, sleep)
        self._progress = progress
        self._lock = threading.Lock()

    def run(self) -> BackfillStatus:
        ledger, name = self.ports.ledger, self.spec.name
        state = ledger.open_run(self.spec)
        if state == "querying":
            found = self._query()
            queued = ledger.add_studies(
                name, [(f.study_uid, self.ports.study_key(f.study_uid)) for f in found],
                self.spec.deliver,
            )  # fmt: skip
            log.info("backfill.queried", backfill=name, found=len(found), queued=queued)
        ledger.set_run_state(name, "retrieving")
        todo = ledger.open_studies(name)
        log.info("backfill.retrieving", backfill=name, studies=len(todo))
        self._report()
        with ThreadPoolExecutor(self.spec.max_associations, "cds-backfill") as pool:
            for _ in pool.map(self._one, todo):
                pass
        ledger.set_run_state(name, "finished")
        return self._report()

    def _query(self) -> list[FoundStudy]:
        detail = {"archive": self.spec.archive, "op": self.ports.query_op,
                  "since": self.spec.since, "until": self.spec.until,
                  "modality": self.spec.modality or "*"}  # fmt: skip
        try:
            found = self.ports.archive.find_studies(self.query)
        except ArchiveError as exc:
            self.ports.audit.record(
                AuditEvent.QUERY, who=self.ports.who, where=self.ports.where,
                outcome=AuditOutcome.SERIOUS_FAILURE, detail={**detail, "error": str(exc)},
            )  # fmt: skip
            self.ports.ledger.set_run_state(self.spec.name, "querying", error=str(exc))
            raise
        self.ports.audit.record(
            AuditEvent.QUERY, who=self.ports.who, where=self.ports.where,
            detail={**detail, "studies": len(found)},
        )  # fmt: skip
        return found

    def _one(self, study_uid: str) -> None:
        ledger, name = self.ports.ledger, self.spec.name
        key = self.ports.study_key(study_uid)
        result = Retrieved(False, detail="not tried")
        for _ in range(MAX_TRIES):
            self.limiter.wait()
            started = time.time()
            ledger.set_study_state(name, study_uid, "retrieving")
            try:
                result = self.ports.retrieve(study_uid)
            except (ArchiveError, OSError, RuntimeError, ValueError) as exc:
                result = Retrieved(False, detail=error_text(exc))
            self.ports.audit.record(
                AuditEvent.INSTANCES_RECEIVED,
                who=self.ports.who,
                where=self.ports.where,
                study_key=key,
                outcome=AuditOutcome.SUCCESS if result.ok else AuditOutcome.MINOR_FAILURE,
                detail={"archive": self.spec.archive, "op": "retrieve", "backfill": name,
                        "protocol": self.ports.retrieve_op,
                        "started_at": round(started, 3), "instances": result.completed,
                        "failed": result.failed},
            )  # fmt: skip
            if result.ok:
                break
        if result.ok:
            ledger.set_study_state(name, study_uid, "retrieved", instances=result.completed)
            log.info("backfill.retrieved", study_key=key, instances=result.completed)
        else:
            ledger.set_study_state(name, study_uid, "failed", error=result.detail[:300])
            log.warning("backfill.retrieve_failed", study_key=key, reason=result.detail[:300])
        self._report()

    def _report(self) -> BackfillStatus:
        with self._lock:
            (status,) = self.ports.ledger.status([self.spec.name])
            if self._progress is not None:
                self._progress(status)
            return status
