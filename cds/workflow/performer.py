"""The Task Performer: claims SCHEDULED workitems, follows their input study on this
node, reports progress, and completes or cancels them (PS3.4 Annex CC).

One background thread (``PeriodicWorker``), every ``workflow.poll_interval_s``:

1. At start, a global subscription for ``workflow.performer_ae``. A refusal (or
   ``subscribe: false``) leaves the performer polling, said in the log
   (``workflow.polling``) and in ``/health`` (``mode``). The worklist is searched in
   both modes: the subscription tells the task manager who performs its workitems,
   its event channel (a WebSocket) is not read.
2. Each workitem this node claimed and has not finished (the store's ``workitems``
   table, so a restart resumes them) is followed: its state on the task manager is
   read again (SCHEDULED: the claim never reached it, asked again with the same
   Transaction UID; CANCELED or COMPLETED by someone else: ``lost``); then its input
   study on this node (``inputs``): finished -> the final state's attributes by an
   update, then COMPLETED (or CANCELED with the model's error); not finished after
   ``input_timeout_s`` since the claim -> CANCELED with the reason; else the progress,
   when it changed.
3. While fewer than ``max_claims`` are open, SCHEDULED workitems matching
   ``workflow.filter`` are claimed: the claim is recorded, then asked (IN PROGRESS
   with a new Transaction UID); a 409 means another performer won: forgotten, skipped.

Each claim, completion and cancellation is audited. Nothing of the patient is logged:
workitems are named by their UID, studies by their pseudonymous key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from cds.audit import AuditEvent, AuditOutcome, AuditTrail
from cds.config.workflow import WorkflowSettings
from cds.errors import StoreError
from cds.logging import get_logger, study_key
from cds.periodic import PeriodicWorker
from cds.store.base import WorkitemStore
from cds.store.workitems import ClaimedWorkitem, WorkitemLedger
from cds.workflow.client import UpsClient, WorkflowError
from cds.workflow.dataset import (
    CANCELED,
    COMPLETED,
    IN_PROGRESS,
    REASON_EQUIPMENT,
    REASON_UNSPECIFIED,
    SCHEDULED,
    Workitem,
    cancellation_update,
    completion_update,
    new_transaction_uid,
    progress_update,
    read_workitem,
)
from cds.workflow.inputs import InputReader, InputStatus, input_status

log = get_logger("cds.workflow")

#: the audit event of a claim, a completion and a cancellation (DICOM's Order Record,
#: 110109, is not among the trail's events yet: a query of the task manager's worklist)
AUDIT_EVENT = AuditEvent.QUERY
#: HTTP answers that mean "another performer has it" (PS3.18: the workitem's state
#: or Transaction UID conflicts with the request)
_CONFLICT = (409,)


class Performer:
    """The Task Performer of one node (``performer``: its node name)."""

    def __init__(
        self,
        settings: WorkflowSettings,
        ledger: WorkitemStore,
        read_input: InputReader,
        study_key_of: Callable[[str], str],
        *,
        performer: str,
        audit: AuditTrail | None = None,
        client: UpsClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock  # the input timeout's clock (a test moves it)
        self.ledger = ledger
        self.read_input = read_input
        self.study_key_of = study_key_of
        self.performer = performer
        self.audit = audit
        self.client = client or UpsClient(settings)
        self.mode = "starting"  # subscribed | polling
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._subscribed_tried = False
        self._followed: set[str] = set()  # claims checked on the task manager since start
        self._skipped: set[str] = set()  # workitems we will not claim (unreadable, no input)
        self._worker = PeriodicWorker(
            "cds-workflow",
            self.step,
            settings.poll_interval_s,
            log_event="workflow.step_failed",
            join_timeout_s=settings.timeout_s + 5,
        )

    # --- life cycle ------------------------------------------------------
    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()
        self.client.close()

    @property
    def running(self) -> bool:
        return self._worker.running

    def describe(self) -> dict[str, Any]:
        """For ``/health``: subscribed or polling, how many workitems are where (none
        counted while the store is down: /health says so under ``store``)."""
        try:
            counts = self.ledger.counts()
        except StoreError:
            counts = {}
        return {
            "running": self.running,
            "mode": self.mode,
            "ups_url": self.settings.ups_url,
            "performer_ae": self.settings.performer_ae,
            "claimed": counts.get("in_progress", 0),
            "completed": counts.get("completed", 0),
            "canceled": counts.get("canceled", 0),
            "last_error": self.last_error,
        }

    # --- one round -------------------------------------------------------
    def step(self) -> None:
        with self._lock:  # a test may call step() while the thread runs
            try:
                self._round()
                self.last_error = None
            except WorkflowError as exc:
                self.last_error = str(exc)
                log.warning("workflow.unreachable", error=str(exc), status=exc.status)

    def _round(self) -> None:
        if not self._subscribed_tried:
            self._subscribe()
        open_claims = self.ledger.open_claims(self.performer)
        for claim in open_claims:
            if self._worker.stopping:
                return
            self._follow(claim)
        room = self.settings.max_claims - len(self.ledger.open_claims(self.performer))
        if room <= 0:
            return
        for obj in self.client.search_scheduled():
            if room <= 0 or self._worker.stopping:
                return
            if self._claim(obj):
                room -= 1

    def _subscribe(self) -> None:
        self._subscribed_tried = True
        if not self.settings.subscribe:
            self.mode = "polling"
            log.info("workflow.polling", reason="workflow.subscribe is false")
            return
        try:
            self.client.subscribe(self.settings.performer_ae)
        except WorkflowError as exc:
            self.mode = "polling"
            log.warning("workflow.polling", reason=f"subscription refused: {exc}")
            return
        self.mode = "subscribed"
        log.info("workflow.subscribed", performer_ae=self.settings.performer_ae)

    # --- claiming ----------------------------------------------------------
    def _claim(self, obj: object) -> bool:
        try:
            item = read_workitem(obj)
        except ValueError as exc:
            uid = _uid_of(obj)
            if uid not in self._skipped:
                self._skipped.add(uid)
                log.warning("workflow.workitem_unreadable", workitem=uid, error=str(exc))
            return False
        if item.uid in self._skipped or item.state != SCHEDULED:
            return False
        if item.study_uid is None:
            self._skipped.add(item.uid)
            log.warning(
                "workflow.workitem_skipped",
                workitem=item.uid,
                reason="its Input Information Sequence (0040,4021) names no study",
            )
            return False
        key = self.study_key_of(item.study_uid)
        tuid = new_transaction_uid()
        claim = self.ledger.record_claim(
            item.uid,
            transaction_uid=tuid,
            performer=self.performer,
            study_uid=item.study_uid,
            series_uids=item.series_uids,
            study_key=key,
        )
        return self._ask_claim(claim)

    def _ask_claim(self, claim: ClaimedWorkitem) -> bool:
        """IN PROGRESS under the claim's Transaction UID; False (forgotten) on a conflict."""
        try:
            self.client.change_state(claim.workitem_uid, IN_PROGRESS, claim.transaction_uid)
        except WorkflowError as exc:
            if exc.status not in _CONFLICT:
                raise
            self.ledger.forget(claim.workitem_uid)
            self._skipped.add(claim.workitem_uid)
            log.info("workflow.claim_lost", workitem=claim.workitem_uid, status=exc.status)
            return False
        self._followed.add(claim.workitem_uid)
        log.info("workflow.claimed", workitem=claim.workitem_uid, study_key=claim.study_key)
        self._audit(claim, "UPS workitem claimed (IN PROGRESS)")
        self._progress(claim, 0.0, "claimed by cds")
        return True

    # --- following ---------------------------------------------------------
    def _follow(self, claim: ClaimedWorkitem) -> None:
        if claim.workitem_uid not in self._followed and not self._resume(claim):
            return  # first look since start (resume): no longer ours
        status = self.read_input(claim.study_key, claim.series_uids)
        if status.finished:
            if status.failure is not None:
                self._cancel(claim, status.failure, REASON_EQUIPMENT)
            else:
                self._complete(claim, status)
            return
        waited = self.clock() - claim.claimed_at
        if waited > self.settings.input_timeout_s:
            what = "run" if status.received else "received"
            self._cancel(
                claim,
                f"timeout: the input study was not {what} within "
                f"workflow.input_timeout_s ({self.settings.input_timeout_s:g} s)",
                REASON_UNSPECIFIED,
            )
            return
        if round(status.progress) != round(claim.progress):
            self._progress(claim, status.progress, status.description)

    def _resume(self, claim: ClaimedWorkitem) -> bool:
        """A claim recorded before this start: where the task manager has it."""
        try:
            item = read_workitem(self.client.retrieve(claim.workitem_uid))
        except WorkflowError as exc:
            if exc.status == 404:
                self._finish(claim, "lost", "the task manager no longer has it")
                return False
            raise
        except ValueError as exc:
            self._finish(claim, "lost", f"unreadable on the task manager: {exc}")
            return False
        return self._resumed(claim, item)

    def _resumed(self, claim: ClaimedWorkitem, item: Workitem) -> bool:
        if item.state == SCHEDULED:  # our claim never reached it: ask again
            return self._ask_claim(claim)
        if item.state in (COMPLETED, CANCELED):
            self._finish(claim, "lost", f"{item.state} on the task manager")
            return False
        self._followed.add(claim.workitem_uid)
        log.info("workflow.resumed", workitem=claim.workitem_uid, study_key=claim.study_key)
        return True

    def _progress(self, claim: ClaimedWorkitem, percent: float, description: str) -> None:
        self.client.update(
            claim.workitem_uid, claim.transaction_uid, progress_update(percent, description)
        )
        self.ledger.set_progress(claim.workitem_uid, percent)
        log.info("workflow.progress", workitem=claim.workitem_uid, progress=round(percent))

    def _complete(self, claim: ClaimedWorkitem, status: InputStatus) -> None:
        item = read_workitem(self.client.retrieve(claim.workitem_uid))
        body = completion_update(
            started_at=claim.claimed_at,
            ended_at=time.time(),
            performer_ae=self.settings.performer_ae,
            scheduled_code=item.scheduled_code,
            outputs=status.outputs,
        )
        self.client.update(claim.workitem_uid, claim.transaction_uid, body)
        self.client.change_state(claim.workitem_uid, COMPLETED, claim.transaction_uid)
        self.ledger.finish(claim.workitem_uid, "completed", outputs=len(status.outputs))
        log.info(
            "workflow.completed",
            workitem=claim.workitem_uid,
            study_key=claim.study_key,
            outputs=len(status.outputs),
        )
        self._audit(claim, "UPS workitem COMPLETED", outputs=len(status.outputs))

    def _cancel(self, claim: ClaimedWorkitem, reason: str, code: tuple[str, str]) -> None:
        body = cancellation_update(
            reason=reason,
            code=code,
            started_at=claim.claimed_at,
            ended_at=time.time(),
            performer_ae=self.settings.performer_ae,
            progress=claim.progress,
        )
        self.client.update(claim.workitem_uid, claim.transaction_uid, body)
        self.client.change_state(claim.workitem_uid, CANCELED, claim.transaction_uid)
        self.ledger.finish(claim.workitem_uid, "canceled", reason=reason)
        log.warning(
            "workflow.canceled", workitem=claim.workitem_uid, study_key=claim.study_key,
            reason=reason,
        )  # fmt: skip
        self._audit(claim, "UPS workitem CANCELED", reason=reason, failed=True)

    def _finish(self, claim: ClaimedWorkitem, state: str, reason: str) -> None:
        self.ledger.finish(claim.workitem_uid, state, reason=reason)
        log.warning("workflow.claim_lost", workitem=claim.workitem_uid, reason=reason)

    def _audit(
        self, claim: ClaimedWorkitem, what: str, *, failed: bool = False, **detail: Any
    ) -> None:
        if self.audit is None:
            return
        self.audit.record(
            AUDIT_EVENT,
            who=self.settings.performer_ae,
            where=self.settings.ups_url,
            outcome=AuditOutcome.MINOR_FAILURE if failed else AuditOutcome.SUCCESS,
            study_key=claim.study_key,
            detail={"what": what, "workitem": claim.workitem_uid, **detail},
        )


def _uid_of(obj: object) -> str:
    """A workitem's SOP Instance UID for a log line, when it can be read at all."""
    try:
        value = obj["00080018"]["Value"][0]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return "unknown"
    return value if isinstance(value, str) and len(value) <= 64 else "unknown"


def make_performer(
    settings: WorkflowSettings,
    store: Any,
    secret: bytes,
    destinations: Callable[[], Mapping[str, object]],
    audit: AuditTrail | None = None,
) -> Performer | None:
    """The node's performer, or None when ``workflow.ups_url`` is not set (off).
    ``store``: the node's StateStore (its ``workitems`` table and the roles
    ``inputs`` reads); ``destinations``: the routing file's, as they are now."""
    if settings.ups_url is None:
        return None

    def read_input(key: str, series: tuple[str, ...]) -> InputStatus:
        return input_status(store, key, series, destinations())

    return Performer(
        settings,
        WorkitemLedger(store),
        read_input,
        lambda uid: study_key(secret, uid),
        performer=str(store.node),
        audit=audit,
    )
