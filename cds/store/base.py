"""The interface every state store implements, cut into the roles its callers use.

A stage is handed the role it works with (``Outbox`` for the delivery worker,
``InstanceStore`` for the receiver, ...), so its signature says what it reads and
writes and a test fake needs only those methods; ``StateStore`` is every role at
once, for the orchestrator, the admin operations and the API.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol

from cds.domain import (
    Delivery,
    DeliveryState,
    Feedback,
    FindingRecord,
    InstanceRecord,
    Job,
    JobState,
    MetricsSnapshot,
    ObjectOutcome,
    QueueStats,
    RecordResult,
    ResultObject,
    RunRecord,
    StudyDetail,
    StudyState,
    StudySummary,
)
from cds.errors import StoreError
from cds.store.backfill import BackfillMark, BackfillSpec, BackfillStatus
from cds.store.workitems import ClaimedWorkitem


class InstanceStore(Protocol):
    """SOP Instances as spooled: the receiver records them, start-up reconciles the spool."""

    def find_instance(self, sop_uid: str) -> tuple[str, str] | None:
        """(sha256, path) of the current version of an instance, if known."""
        ...

    def record_instance(self, rec: InstanceRecord) -> RecordResult:
        """Record a durably spooled instance, applying the duplicate policy:

        - unknown SOP Instance UID: NEW;
        - same UID, same sha256: DUPLICATE, nothing changes;
        - same UID, other sha256: REPLACED, the new version becomes current and
          the old one is kept in the version history.

        A study past ``receiving`` goes back to ``receiving`` (reopened) on NEW
        or REPLACED. Its completeness deadline moves to received_at + quiet time.
        """
        ...

    def record_instances(self, recs: Sequence[InstanceRecord]) -> list[RecordResult | StoreError]:
        """``record_instance`` of each, in order, in one transaction (a group commit:
        cds.store.group); per instance its result, or the StoreError it would raise
        (should the one transaction fail, each is recorded in its own)."""
        ...

    def known_paths(self) -> set[str]:
        """Spool paths of every recorded version (current and superseded)."""
        ...

    def instance_paths(self, study_key: str) -> list[str]:
        """Spool paths of one study's instances: current and superseded versions."""
        ...


def one_by_one(
    record: Callable[[InstanceRecord], RecordResult],
    recs: Sequence[InstanceRecord],
    failed: StoreError,
) -> list[RecordResult | StoreError]:
    """After the one transaction of ``recs`` ``failed``: ``record`` each in its own, so
    that one that fails does not fail the others (a lone row's error is its own)."""
    if len(recs) == 1:
        return [failed]
    out: list[RecordResult | StoreError] = []
    for rec in recs:
        try:
            out.append(record(rec))
        except StoreError as exc:
            out.append(exc)
    return out


class StudyHistory(Protocol):
    """A study's history: the lines every stage adds (delivered, feedback read, rerun)."""

    def record_event(
        self, study_key: str, kind: str, detail: str = "", now: float | None = None
    ) -> None:
        """Add one line to a study's history (e.g. an admin's ``rerun_requested``)."""
        ...


class StudyStore(StudyHistory, Protocol):
    """Studies: their state, their completeness deadline, their history, their purge."""

    #: seconds a claim of this node lasts unless renewed (``node.lease_s``)
    lease_s: float

    def list_studies(
        self, state: StudyState | None = None, limit: int = 100, offset: int = 0
    ) -> list[StudySummary]: ...

    def get_study(self, study_key: str) -> StudyDetail | None: ...

    def studies_due(self, now: float) -> list[str]:
        """Keys of studies still receiving whose quiet time has elapsed."""
        ...

    def complete_study(self, study_key: str, now: float) -> bool:
        """receiving -> complete, if still due at ``now`` and no other node holds the
        study; this node then holds it (``claim_study``). False if it moved on."""
        ...

    def claim_study(self, study_key: str, now: float | None = None) -> bool:
        """Hold a study to route it and run its pipelines: True when it was free, this
        node's, or its claim had lapsed; False while another live node holds it."""
        ...

    def release_study(self, study_key: str) -> None:
        """Give up this node's hold on a study."""
        ...

    def lapsed_studies(self, now: float | None = None) -> list[str]:
        """Complete or processing studies held by another node whose lease lapsed."""
        ...

    def renew_claims(self, now: float | None = None) -> int:
        """Extend the lease of every study and open job this node holds."""
        ...

    def set_study_state(
        self, study_key: str, state: StudyState, detail: str = "", now: float | None = None
    ) -> None: ...

    def count_studies_by_state(self) -> dict[StudyState, int]: ...

    def mark_purged(
        self, study_key: str, paths: Collection[str], detail: str, now: float | None = None
    ) -> bool:
        """Forget a study's spooled instances whose files (``paths``) were removed.

        Deletes the instance and version records of those paths and the series
        left empty; keeps the study row and its history and records ``purged``.
        The study becomes ``purged`` unless instances not in ``paths`` remain (they
        arrived during the purge and are kept): returns whether it did.
        Raises KeyError for an unknown study.
        """
        ...


class JobStore(Protocol):
    """Jobs: one per pipeline run on a study, and the depth of the queue."""

    def create_job(self, study_key: str, kind: str, now: float | None = None) -> Job: ...

    def set_job_state(
        self,
        job_id: str,
        state: JobState,
        error: str | None = None,
        now: float | None = None,
        *,
        objects: Sequence[ObjectOutcome] | None = None,
    ) -> Job:
        """Move a job to ``state`` and return it; a cancelled job stays cancelled
        (returned unchanged), so a worker learns of the cancellation here. ``objects``:
        what became of each result object of an ended job (reasons without values)."""
        ...

    def list_jobs(
        self, study_key: str | None = None, state: JobState | None = None, limit: int = 100
    ) -> list[Job]:
        """Jobs, newest first."""
        ...

    def get_job(self, job_id: str) -> Job | None: ...

    def claim_jobs(
        self,
        limit: int = 1,
        now: float | None = None,
        *,
        job_ids: Collection[str] | None = None,
    ) -> list[Job]:
        """Queued jobs (of ``job_ids`` only, when given), oldest first, moved to running
        for this node alone: on several nodes each job runs exactly once."""
        ...

    def open_claims(self, now: float | None = None) -> list[Job]:
        """Queued and running jobs no live node holds (this node's own from its last
        run, or another's whose lease lapsed)."""
        ...

    def cancel_job(
        self, job_id: str, detail: str = "", now: float | None = None
    ) -> tuple[Job, bool]:
        """queued or running -> cancelled, atomically.

        Returns the job as it now is and whether this call cancelled it (False
        when it was already done, failed, skipped or cancelled). Raises KeyError
        for an unknown job.
        """
        ...

    def queue_stats(self) -> QueueStats:
        """Jobs queued and running, the oldest queued, studies waiting."""
        ...


class Outbox(Protocol):
    """Result objects and their deliveries, recorded together (the delivery outbox)."""

    def record_results(
        self,
        objects: Sequence[ResultObject],
        destinations: Sequence[str],
        superseded: Sequence[str] = (),
        now: float | None = None,
        priority: int = 0,
    ) -> list[Delivery]:
        """Record durably written result objects and queue one delivery per object and
        destination, in one transaction (the outbox). ``superseded``: SOP Instance UIDs
        of earlier results these replace; their deliveries not yet sent are cancelled.
        ``priority``: the routing rule's; higher goes out first.

        Recording the same object again (a re-run of the same inputs) leaves a delivery
        already delivered as it is and re-queues one pending or dead.
        """
        ...

    def current_results(
        self, study_key: str, job_kind: str, source_series_uid: str
    ) -> list[ResultObject]:
        """The current (not superseded) results of one pipeline on one input series."""
        ...

    def list_results(self, study_key: str) -> list[ResultObject]: ...

    def due_deliveries(self, now: float, limit: int = 500) -> list[Delivery]:
        """Pending deliveries whose next attempt is due: highest priority first, then
        the longest due, then the oldest."""
        ...

    def claim_deliveries(self, now: float, limit: int = 500) -> list[Delivery]:
        """``due_deliveries``, leased to this node alone (still pending until the try
        is recorded; due again if the node dies before)."""
        ...

    def release_deliveries(self, now: float) -> int:
        """This node's delivery leases left by its last run end: due again at ``now``."""
        ...

    def deliveries_due_now(self, destination: str, now: float) -> int:
        """Make every pending delivery to ``destination`` due at ``now`` (it answered
        again after an outage: what waits for it goes out now, by priority, instead of
        each at the end of its own backoff). Returns how many were brought forward."""
        ...

    def next_delivery_due(self) -> float | None:
        """When the earliest pending delivery is due (None: nothing pending)."""
        ...

    def delivery_attempted(
        self,
        delivery_id: str,
        *,
        ok: bool,
        error: str | None = None,
        retry_at: float | None = None,
        now: float | None = None,
    ) -> Delivery:
        """Record one try: delivered, pending again at ``retry_at``, or dead."""
        ...

    def list_deliveries(
        self,
        study_key: str | None = None,
        state: DeliveryState | None = None,
        destination: str | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        """Deliveries, newest first."""
        ...

    def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    def retry_delivery(
        self, delivery_id: str, detail: str = "", now: float | None = None
    ) -> tuple[Delivery, bool]:
        """dead (or pending) -> pending now, tries reset; recorded as ``delivery_retried``.
        Returns the delivery and whether it changed; KeyError for an unknown id."""
        ...


class FeedbackStore(Protocol):
    """Findings of our results and the radiologists' feedback on them (append-only)."""

    def record_findings(self, findings: Sequence[FindingRecord]) -> None:
        """Record the findings of a result (a finding already known is left as it is)."""
        ...

    def list_findings(self, study_key: str) -> list[FindingRecord]: ...

    def get_finding(self, tracking_uid: str) -> FindingRecord | None: ...

    def add_feedback(self, fb: Feedback) -> Feedback:
        """Append one feedback record (never updates one) and a line to the study history."""
        ...

    def list_feedback(
        self,
        study_key: str | None = None,
        tracking_uid: str | None = None,
        model: str | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[Feedback]:
        """Feedback records, oldest first."""
        ...


class ObservatoryStore(Protocol):
    """Model runs (drift) and the counts ``GET /metrics`` reads."""

    def record_run(self, run: RunRecord) -> None:
        """Keep one model run on one series (headers and scores, no patient data); a
        run with the same ``run_key`` (same series, model and version) replaces it."""
        ...

    def list_runs(
        self, model: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[RunRecord]:
        """Model runs with ``since <= at < until``, oldest first."""
        ...

    def metrics_snapshot(self, bounds: Sequence[float]) -> MetricsSnapshot:
        """Counts by low-cardinality labels and the stage-latency histograms (cumulative
        counts at or under each of ``bounds``, seconds) for ``GET /metrics``."""
        ...


class StateStore(
    InstanceStore, StudyStore, JobStore, Outbox, FeedbackStore, ObservatoryStore, Protocol
):
    """Durable state of the node: every role. Implementations must be safe to call from
    many threads."""

    def ping(self) -> bool:
        """True when the store answers a trivial query."""
        ...

    def close(self) -> None: ...


class BackfillStore(Protocol):
    """The backfill ledger (``cds.store.backfill.BackfillLedger``): each run fetching
    studies from an archive, and each study it fetches (``cds backfill``)."""

    def open_run(self, spec: BackfillSpec, now: float | None = None) -> str:
        """Start the run ``spec`` names, or find it again (resume); its state."""
        ...

    def set_run_state(self, name: str, state: str, error: str | None = None) -> None: ...

    def add_studies(
        self, name: str, found: Iterable[tuple[str, str]], deliver: bool, now: float | None = None
    ) -> int:
        """Queue each (Study Instance UID, study key) once; returns how many were queued."""
        ...

    def open_studies(self, name: str) -> list[str]:
        """Study Instance UIDs still to fetch."""
        ...

    def set_study_state(
        self,
        name: str,
        study_uid: str,
        state: str,
        *,
        instances: int | None = None,
        error: str | None = None,
    ) -> None: ...

    def mark(self, study_key: str) -> BackfillMark | None:
        """The run fetching this study, or None: a live study."""
        ...

    def status(self, names: Sequence[str] = ()) -> list[BackfillStatus]: ...


class WorkitemStore(Protocol):
    """The UPS workitems this node claimed as a Task Performer
    (``cds.store.workitems.WorkitemLedger``, used by ``cds.workflow``)."""

    def record_claim(
        self,
        workitem_uid: str,
        *,
        transaction_uid: str,
        performer: str,
        study_uid: str,
        series_uids: tuple[str, ...],
        study_key: str,
        now: float | None = None,
    ) -> ClaimedWorkitem:
        """Record a claim, before it is asked of the task manager."""
        ...

    def forget(self, workitem_uid: str) -> None:
        """A claim the task manager refused: no row is left."""
        ...

    def set_progress(self, workitem_uid: str, progress: float) -> None: ...

    def finish(
        self, workitem_uid: str, state: str, *, reason: str | None = None, outputs: int = 0
    ) -> None:
        """``completed``, ``canceled`` or ``lost``: no longer ours to change."""
        ...

    def get(self, workitem_uid: str) -> ClaimedWorkitem | None: ...

    def open_claims(self, performer: str) -> list[ClaimedWorkitem]:
        """What ``performer`` claimed and has not finished (resumed after a restart)."""
        ...

    def counts(self) -> dict[str, int]: ...
