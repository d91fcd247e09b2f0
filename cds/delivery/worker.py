"""The delivery worker: empties the outbox into the configured destinations.

The outbox is the store's ``deliveries`` table: a row is written in the same
transaction as its result object's record, after the file is durably on disk,
so nothing queued is lost across a restart. One thread looks at the due rows
(every ``delivery.poll_interval_s``, or at once when the pipeline ``kick``s it),
sends them per destination over one association per batch, and records each
try: delivered; pending again after an exponential backoff
(``backoff_initial_s`` doubling up to ``backoff_max_s``); or dead after
``max_attempts`` tries, where it waits for an admin's retry.

Due rows go out highest priority first (the routing rule's ``priority``). When a
destination answers again after an outage, everything waiting for it is made
due at once, so the backlog drains in priority order rather than in the order
the backoff timers happen to expire.

Only destinations named in the routing file receive anything: a row whose
destination has been removed from it is not sent (dead, and said so).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from cds.audit import AuditEvent, AuditOutcome, AuditTrail, NullAuditTrail
from cds.config import DeliverySettings
from cds.delivery.dicomweb import stow_batch
from cds.delivery.scu import Outcome, store_batch
from cds.destinations import DicomWebDestination, SomeDestination
from cds.domain import Delivery, DeliveryState
from cds.faults import failpoint
from cds.logging import get_logger
from cds.periodic import PeriodicWorker
from cds.store.base import Outbox, StudyHistory

log = get_logger("cds.delivery")

Destinations = Callable[[], Mapping[str, SomeDestination]]
Sender = Callable[[list[Path], SomeDestination, str, float], list[Outcome]]


class DeliveryStore(Outbox, StudyHistory, Protocol):
    """What the worker uses of the state store: the outbox, and the history of the
    studies it sends (delivered, failed and retried, dead)."""


def send_batch(
    files: list[Path], dest: SomeDestination, calling_ae: str, timeout_s: float
) -> list[Outcome]:
    """One batch to one destination, by its kind: STOW-RS or C-STORE."""
    if isinstance(dest, DicomWebDestination):
        return stow_batch(files, dest, timeout_s)
    return store_batch(files, dest, calling_ae, timeout_s)


def backoff(attempt: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait after failed try number ``attempt`` (1-based)."""
    return float(min(max_s, initial_s * 2 ** max(0, attempt - 1)))


class DeliveryWorker:
    def __init__(
        self,
        store: DeliveryStore,
        settings: DeliverySettings,
        results_root: Path,
        destinations: Destinations,
        calling_ae: str,
        *,
        sender: Sender = send_batch,
        clock: Callable[[], float] = time.time,
        audit: AuditTrail | None = None,
    ) -> None:
        self._store = store
        self._audit = audit if audit is not None else NullAuditTrail()
        self._cfg = settings
        self._root = results_root
        self._destinations = destinations
        self._calling_ae = settings.calling_ae_title or calling_ae
        self._send = sender
        self._clock = clock
        self._worker = PeriodicWorker(
            "cds-delivery", self._step, settings.poll_interval_s,
            log_event="delivery.tick_failed", join_timeout_s=settings.timeout_s + 5,
        )  # fmt: skip

    def kick(self) -> None:
        """Look at the outbox now (new results were queued, or an admin retried)."""
        self._worker.kick()

    def tick(self) -> int:
        """Try every due delivery once; returns how many were tried."""
        # claimed: another node on the same store takes none of these meanwhile
        due = self._store.claim_deliveries(self._clock(), limit=self._cfg.batch_size * 10)
        by_dest: dict[str, list[Delivery]] = defaultdict(list)
        for d in due:
            by_dest[d.destination].append(d)
        configured = self._destinations()
        for name, rows in by_dest.items():
            dest = configured.get(name)
            for start in range(0, len(rows), self._cfg.batch_size):
                batch = rows[start : start + self._cfg.batch_size]
                if dest is None:
                    why = f"destination {name!r} is not in the routing file any more: not sent"
                    self._record(name, None, batch, [Outcome(False, why)] * len(batch), final=True)
                else:
                    self._deliver(name, dest, batch)
        return len(due)

    def _deliver(self, name: str, dest: SomeDestination, batch: list[Delivery]) -> None:
        files = [self._root / d.path for d in batch]
        missing = [not f.is_file() for f in files]
        to_send = [f for f, m in zip(files, missing, strict=True) if not m]
        t0 = time.perf_counter()
        sent = iter(self._send(to_send, dest, self._calling_ae, self._cfg.timeout_s))
        failpoint("delivery.sent")
        outcomes = [
            Outcome(False, f"result file missing: {d.path}", permanent=True) if m else next(sent)
            for d, m in zip(batch, missing, strict=True)
        ]
        log.info(
            "delivery.batch",
            destination=name,
            objects=len(batch),
            delivered=sum(o.ok for o in outcomes),
            seconds=round(time.perf_counter() - t0, 3),
        )
        self._record(name, dest, batch, outcomes, final=False)
        # it answers: whatever waits for it (backing off since an outage) goes now,
        # highest priority first, not each at the end of its own backoff
        if any(o.ok for o in outcomes) and self._store.deliveries_due_now(name, self._clock()):
            self._worker.kick()

    def _record(
        self,
        name: str,
        dest: SomeDestination | None,
        batch: list[Delivery],
        outcomes: list[Outcome],
        *,
        final: bool,
    ) -> None:
        now = self._clock()
        where = f"{name} ({dest.describe()})" if dest is not None else name
        per_study: dict[str, list[tuple[Delivery, Delivery, Outcome]]] = defaultdict(list)
        for d, o in zip(batch, outcomes, strict=True):
            tries = d.attempts + 1
            retry_at = None
            if not o.ok and not (final or o.permanent) and tries < self._cfg.max_attempts:
                retry_at = now + backoff(
                    tries, self._cfg.backoff_initial_s, self._cfg.backoff_max_s
                )
            after = self._store.delivery_attempted(
                d.delivery_id, ok=o.ok, error=None if o.ok else o.detail, retry_at=retry_at, now=now
            )
            per_study[d.study_key].append((d, after, o))
        for study_key, items in per_study.items():
            self._audit_sent(name, dest, study_key, items)
            ok = [a for _, a, o in items if o.ok]
            if ok:
                kinds = ", ".join(sorted({a.modality for a in ok}))
                self._store.record_event(
                    study_key, "delivered", f"{len(ok)} object(s) ({kinds}) to {where}", now
                )
            failed = [(d, a, o) for d, a, o in items if not o.ok]
            dead = [x for x in failed if x[1].state is DeliveryState.DEAD]
            waiting = [x for x in failed if x[1].state is DeliveryState.PENDING]
            if waiting:
                d, a, o = waiting[0]
                wait = (a.next_attempt_at or now) - now
                self._store.record_event(
                    study_key,
                    "delivery_failed",
                    f"{len(waiting)} object(s) to {where}: {o.detail}; try {a.attempts} of "
                    f"{self._cfg.max_attempts}, next in {wait:.0f} s",
                    now,
                )
            if dead:
                d, a, o = dead[0]
                self._store.record_event(
                    study_key,
                    "delivery_dead",
                    f"{len(dead)} object(s) to {where} after {a.attempts} tries: {o.detail} "
                    "(cds deliveries retry)",
                    now,
                )
                log.warning(
                    "delivery.dead", study_key=study_key, destination=name, objects=len(dead)
                )

    def _audit_sent(
        self,
        name: str,
        dest: SomeDestination | None,
        study_key: str,
        items: list[tuple[Delivery, Delivery, Outcome]],
    ) -> None:
        """One ``instances_sent`` record per destination, study and batch: what went,
        and apart, what failed (waiting for a retry, or dead: the dead letter)."""
        where = dest.address if dest is not None else None
        ok = [a for _, a, o in items if o.ok]
        waiting = [(a, o) for _, a, o in items if not o.ok and a.state is DeliveryState.PENDING]
        dead = [(a, o) for _, a, o in items if not o.ok and a.state is DeliveryState.DEAD]
        groups: list[tuple[AuditOutcome, list[Delivery], str | None, str]] = [
            (AuditOutcome.SUCCESS, ok, None, "delivered"),
            (AuditOutcome.MINOR_FAILURE, [a for a, _ in waiting],
             waiting[0][1].detail if waiting else None, "retry scheduled"),
            (AuditOutcome.SERIOUS_FAILURE, [a for a, _ in dead],
             dead[0][1].detail if dead else None, "dead letter"),
        ]  # fmt: skip
        for outcome, rows, error, state in groups:
            if not rows:
                continue
            detail: dict[str, object] = {
                "destination": name,
                "ae_title": getattr(dest, "ae_title", None),
                "objects": len(rows),
                "kinds": sorted({a.modality for a in rows}),
                "state": state,
                "attempts": max(a.attempts for a in rows),
            }
            if isinstance(dest, DicomWebDestination):
                detail["url"] = dest.url
            if error:
                detail["error"] = error[:200]
            self._audit.record(
                AuditEvent.INSTANCES_SENT,
                who="system",
                outcome=outcome,
                where=where,
                study_key=study_key,
                detail=detail,
            )

    # --- thread ------------------------------------------------------------
    def _step(self) -> None:  # a bad row or a store hiccup is logged; delivery goes on
        self.tick()

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()

    @property
    def running(self) -> bool:
        return self._worker.running
