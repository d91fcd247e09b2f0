"""What a PACS admin does to the queue: list, retry, re-run, cancel, purge, queue depth.

One implementation for both surfaces: the HTTP routes (``api/routes/admin.py``)
call these functions with the running node's store, spool and
``Node.submit_study``; the CLI (``cli_admin.py``) calls the read operations,
``cancel_job`` and ``purge_study`` with a store and spool of its own (they work
with the node down), and asks the running node over HTTP to retry and re-run.

Every operation that changes something leaves a line in the study's history
(``job_retried``, ``rerun_requested``, ``job_cancelled``, ``purged``): the
history is the audit trail, and it survives a purge. A refusal raises
``AdminError`` with the reason (``Refusal``) the API maps to an HTTP status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cds.audit import AuditEvent, AuditOutcome, AuditTrail
from cds.domain import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    QueueStats,
    StudyDetail,
    StudyState,
)
from cds.errors import AdminError, Refusal
from cds.ingest.spool import Spool
from cds.store.base import InstanceStore, JobStore, Outbox, StudyStore

NOT_FOUND = Refusal.NOT_FOUND
CONFLICT = Refusal.CONFLICT
UNAVAILABLE = Refusal.UNAVAILABLE

#: a file in a study's folder that the store does not know is removed by a purge
#: only when older than this: a younger one may be an instance being received
#: right now (spooled, not yet recorded), whose sender has been or will be told
#: Success. An older one was left by a crash and would be re-indexed at start.
UNRECORDED_MIN_AGE_S = 60.0

#: study states in which a purge needs ``force``: work on it is under way
BUSY_STATES = (StudyState.RECEIVING, StudyState.PROCESSING)

Submit = Callable[[str], None]  # Node.submit_study


class QueueStore(StudyStore, JobStore, Protocol):
    """Studies and their jobs: what retrying a job uses of the state store."""


class PurgeStore(InstanceStore, QueueStore, Protocol):
    """What a purge uses of the state store: the study, its open jobs (cancelled), the
    paths of its instances and their versions (forgotten)."""


@dataclass(frozen=True, slots=True)
class PurgeResult:
    study_key: str
    files_removed: int  # spooled files deleted (current, superseded, unrecorded)
    instances: int  # instances the study had
    superseded_versions: int  # older versions kept by "newest wins"
    unrecorded_files: int  # files in its folder the store did not know (left by a crash)
    jobs_cancelled: tuple[str, ...]  # ids of its queued or running jobs
    purged: bool  # False when instances arrived during the purge (they were kept)


def list_jobs(
    store: JobStore,
    state: JobState | None = None,
    study_key: str | None = None,
    limit: int = 100,
) -> list[Job]:
    """Jobs, newest first."""
    return store.list_jobs(study_key=study_key, state=state, limit=limit)


def job_timings(job: Job, now: float) -> tuple[float | None, float | None]:
    """(seconds waited in the queue, seconds running) of a job, up to ``now`` if still open.

    None where unknown: never started, or recorded before the store kept start times.
    """
    if job.started_at is not None:
        waited: float | None = job.started_at - job.created_at
    elif job.state is JobState.QUEUED:
        waited = now - job.created_at
    else:  # ended without running (cancelled, skipped) or recorded before schema 2
        waited = (job.finished_at or job.updated_at) - job.created_at
    if job.started_at is None:
        ran = None
    elif job.finished_at is not None:
        ran = job.finished_at - job.started_at
    elif job.state is JobState.RUNNING:
        ran = now - job.started_at
    else:
        ran = None
    return waited, ran


def queue_stats(store: JobStore) -> QueueStats:
    return store.queue_stats()


def retry_job(store: QueueStore, submit: Submit, job_id: str) -> Job:
    """Re-queue the study of a failed or partial job (routing runs again on the whole
    study; the objects a partial job made are made again with the same UIDs, so the
    PACS gets no duplicate)."""
    job = _job(store, job_id)
    if job.state not in (JobState.FAILED, JobState.PARTIAL):
        raise AdminError(
            CONFLICT,
            f"job {job_id} is {job.state.value}: only a failed or partial job can be retried",
        )
    _runnable(_study(store, job.study_key), "retry its job")
    store.record_event(
        job.study_key,
        "job_retried",
        f"{job.kind} job {job_id} {job.state.value}; study re-queued by admin",
    )
    _submit(submit, job.study_key)
    return job


def rerun_study(store: StudyStore, submit: Submit, study_key: str) -> StudyDetail:
    """Run a study through routing and its pipelines again (e.g. after a model update)."""
    detail = _study(store, study_key)
    _runnable(detail, "re-run it")
    store.record_event(
        study_key, "rerun_requested", f"by admin, study was {detail.summary.state.value}"
    )
    _submit(submit, study_key)
    return detail


def cancel_job(store: JobStore, job_id: str) -> Job:
    """queued or running -> cancelled.

    Cancelling is a mark in the store: a running job's worker sees it at its
    next state change (the store keeps a cancelled job cancelled) and the job
    is never reported done afterwards. This needs no running node, so the CLI
    cancels in the store directly.
    """
    try:
        job, cancelled = store.cancel_job(job_id, "by admin")
    except KeyError:
        raise AdminError(NOT_FOUND, f"no job with id {job_id!r}") from None
    if not cancelled:
        raise AdminError(
            CONFLICT,
            f"job {job_id} is {job.state.value}: only a queued or running job can be cancelled",
        )
    return job


def purge_study(
    store: PurgeStore,
    spool: Spool,
    study_key: str,
    force: bool = False,
    *,
    audit: AuditTrail | None = None,
    who: str = "system",
    reason: str = "admin",
) -> PurgeResult:
    """Delete a study's spooled files; keep the study row and its history (``purged``).

    Refused for a study still receiving or processing, or with jobs queued or
    running, unless ``force`` (its jobs are then cancelled first).

    Files go first, durably, then the records: a crash in between leaves
    records of missing files (purge again to finish), never unrecorded files
    that start-up reconciliation would bring back. An instance sent again
    later is stored and recorded as new, and re-opens the study.

    Recorded in ``audit`` (``purge``, by ``who``, ``reason`` admin or retention)
    once done.
    """
    detail = _study(store, study_key)
    state = detail.summary.state
    if state is StudyState.PURGED:
        raise AdminError(CONFLICT, f"study {study_key} is already purged")
    open_jobs = [
        j
        for s in (JobState.QUEUED, JobState.RUNNING)
        for j in store.list_jobs(study_key=study_key, state=s, limit=10_000)
    ]
    if not force and (state in BUSY_STATES or open_jobs):
        jobs = f" with {len(open_jobs)} job(s) queued or running" if open_jobs else ""
        if audit is not None:  # a refused purge is audited too (nothing was deleted)
            audit.record(
                AuditEvent.PURGE,
                who=who,
                outcome=AuditOutcome.MINOR_FAILURE,
                study_key=study_key,
                detail={"reason": reason, "refused": f"study {state.value}{jobs}"},
            )
        raise AdminError(
            CONFLICT,
            f"study {study_key} is {state.value}{jobs}: purge it with force "
            "(its jobs are cancelled) or wait",
        )
    cancelled = tuple(j.job_id for j in open_jobs if store.cancel_job(j.job_id, "study purged")[1])

    started = time.time()
    recorded = store.instance_paths(study_key)
    known = store.known_paths()
    unrecorded = [
        rel
        for rel in spool.study_files(study_key)
        if rel not in known and _age_s(spool, rel, started) >= UNRECORDED_MIN_AGE_S
    ]
    removed = spool.remove_files([*recorded, *unrecorded])
    instances = detail.summary.instance_count
    superseded = max(len(recorded) - instances, 0)
    purged = store.mark_purged(
        study_key,
        recorded,
        f"by {reason}{' (forced, was ' + state.value + ')' if force else ''}: {removed} file(s) "
        f"removed ({instances} instance(s), {superseded} superseded version(s), "
        f"{len(unrecorded)} unrecorded); history kept",
    )
    spool.remove_study_folder(study_key)
    result = PurgeResult(
        study_key, removed, instances, superseded, len(unrecorded), cancelled, purged
    )
    if audit is not None:
        audit.record(
            AuditEvent.PURGE,
            who=who,
            study_key=study_key,
            detail={"reason": reason, "forced": force, "files_removed": removed,
                    "instances": instances, "superseded_versions": superseded,
                    "unrecorded_files": len(unrecorded), "jobs_cancelled": len(cancelled),
                    "complete": purged},
        )  # fmt: skip
    return result


# --- deliveries ---------------------------------------------------------------
def list_deliveries(
    store: Outbox,
    state: DeliveryState | None = None,
    study_key: str | None = None,
    destination: str | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """Deliveries (one result object to one destination), newest first."""
    return store.list_deliveries(
        study_key=study_key, state=state, destination=destination, limit=limit
    )


def retry_delivery(store: Outbox, delivery_id: str) -> Delivery:
    """A dead delivery (or a pending one waiting out its backoff) is tried again now.

    A mark in the store, like cancelling a job: the running node's delivery worker
    picks it up at its next look (``delivery.poll_interval_s``), so the CLI retries
    with or without the node running. Recorded as ``delivery_retried``.
    """
    try:
        delivery, changed = store.retry_delivery(delivery_id, "by admin")
    except KeyError:
        raise AdminError(NOT_FOUND, f"no delivery with id {delivery_id!r}") from None
    if not changed:
        raise AdminError(
            CONFLICT,
            f"delivery {delivery_id} is {delivery.state.value}: only a dead or pending "
            "delivery can be retried",
        )
    return delivery


def retry_dead_deliveries(store: Outbox, destination: str | None = None) -> list[Delivery]:
    """Retry every dead delivery (of one destination): after a PACS outage is fixed."""
    dead = store.list_deliveries(state=DeliveryState.DEAD, destination=destination, limit=100_000)
    return [store.retry_delivery(d.delivery_id, "by admin (all dead)")[0] for d in dead]


# --- helpers ------------------------------------------------------------------
def _job(store: JobStore, job_id: str) -> Job:
    job = store.get_job(job_id)
    if job is None:
        raise AdminError(NOT_FOUND, f"no job with id {job_id!r}")
    return job


def _study(store: StudyStore, study_key: str) -> StudyDetail:
    detail = store.get_study(study_key)
    if detail is None:
        raise AdminError(NOT_FOUND, f"no study with key {study_key!r}")
    return detail


def _runnable(detail: StudyDetail, action: str) -> None:
    s = detail.summary
    if s.state is StudyState.PURGED:
        raise AdminError(
            CONFLICT, f"study {s.study_key} is purged: its files are gone, cannot {action}"
        )
    if s.state is StudyState.RECEIVING:
        raise AdminError(
            CONFLICT,
            f"study {s.study_key} is still receiving: it runs once complete, cannot {action} now",
        )


def _submit(submit: Submit, study_key: str) -> None:
    try:
        submit(study_key)
    except RuntimeError as exc:  # the executor is shut down
        raise AdminError(UNAVAILABLE, f"the node is stopping: {exc}") from exc


def _age_s(spool: Spool, rel: str, now: float) -> float:
    try:
        return now - spool.absolute(rel).stat().st_mtime
    except FileNotFoundError:
        return 0.0
