"""Retention: spooled images go once a study is old and its results are delivered.

Every ``retention.check_interval_s`` a background thread looks for studies that

- are done or failed (nothing receiving, waiting or processing),
- received their last instance more than ``retention.spool_days`` ago, and
- have no delivery still pending or dead (every result is in the PACS),

and purges their spooled files with the admin purge (``cds.admin.purge_study``):
the study's row and history stay, marked purged, and the purge is recorded in
the audit trail (``purge``, who ``system``, reason ``retention``). Off when
``spool_days`` is not set. A study the purge refuses (a job started meanwhile)
waits for the next pass.

It sits beside the orchestrator, not in ingest: it is a policy of the node that
calls the admin operation, and stages never import the admin layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from cds.admin import PurgeResult, PurgeStore, purge_study
from cds.audit import AuditTrail
from cds.config import RetentionSettings
from cds.domain import DeliveryState, StudyState
from cds.errors import AdminError
from cds.ingest.spool import Spool
from cds.logging import get_logger
from cds.periodic import PeriodicWorker
from cds.store.base import Outbox

log = get_logger("cds.retention")

DAY_S = 86_400.0
#: study states whose images may go (work on them is over)
FINISHED = (StudyState.DONE, StudyState.FAILED)
#: delivery states that mean a result is not in the PACS yet
UNDELIVERED = (DeliveryState.PENDING, DeliveryState.DEAD)
MAX_STUDIES = 100_000


class RetentionStore(PurgeStore, Outbox, Protocol):
    """What retention uses of the state store: finished studies, whether their results
    are all delivered, and what a purge uses."""


class Retention:
    def __init__(
        self,
        store: RetentionStore,
        spool: Spool,
        settings: RetentionSettings,
        audit: AuditTrail,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._spool = spool
        self._cfg = settings
        self._audit = audit
        self._clock = clock
        self._worker = PeriodicWorker(
            "cds-retention", self._step, settings.check_interval_s,
            log_event="retention.failed", join_timeout_s=30,
        )  # fmt: skip

    @property
    def enabled(self) -> bool:
        return self._cfg.spool_days is not None

    def eligible(self) -> list[str]:
        """Keys of the studies whose images may be purged now."""
        if self._cfg.spool_days is None:
            return []
        cutoff = self._clock() - self._cfg.spool_days * DAY_S
        keys = []
        for state in FINISHED:
            for s in self._store.list_studies(state, limit=MAX_STUDIES):
                if s.last_received_at >= cutoff:
                    continue
                if any(
                    self._store.list_deliveries(study_key=s.study_key, state=d, limit=1)
                    for d in UNDELIVERED
                ):
                    continue
                keys.append(s.study_key)
        return keys

    def run_once(self) -> list[PurgeResult]:
        """Purge every eligible study; returns what was purged."""
        done = []
        for key in self.eligible():
            try:
                done.append(
                    purge_study(
                        self._store, self._spool, key,
                        audit=self._audit, who="system", reason="retention",
                    )
                )  # fmt: skip
            except AdminError as exc:  # busy again since we looked: next pass
                log.info("retention.skipped", study_key=key, reason=str(exc)[:200])
        if done:
            log.info(
                "retention.purged",
                studies=len(done),
                files=sum(r.files_removed for r in done),
                spool_days=self._cfg.spool_days,
            )
        return done

    # --- thread ------------------------------------------------------------------
    def _step(self) -> None:  # a pass at start, then one every check_interval_s
        self.run_once()

    def start(self) -> None:
        if self.enabled:
            self._worker.start()

    def stop(self) -> None:
        self._worker.stop()
