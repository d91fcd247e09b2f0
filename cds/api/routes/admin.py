"""Admin endpoints: the job queue, the delivery outbox, and what a PACS admin does to them.

The same operations as ``cds jobs``, ``cds queue``, ``cds deliveries`` and
``cds studies rerun|purge``
(both call ``cds.admin``). Refusals are 404 (unknown job or study) or 409 (not
allowed in its current state) with a message naming the state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, status

from cds import admin
from cds.api.auth import ADMIN, OBSERVER, AdminUser
from cds.api.deps import get_node
from cds.api.refusals import http_status
from cds.api.schemas import (
    DeliveryOut,
    JobOut,
    Problem,
    PurgeOut,
    QueueOut,
    RequeuedOut,
    WorkerOut,
)
from cds.domain import DeliveryState, JobState
from cds.errors import AdminError
from cds.logging import get_logger
from cds.orchestrator import Node

log = get_logger("cds.admin")

router = APIRouter(prefix="/api", tags=["admin"])

NodeDep = Annotated[Node, Depends(get_node)]
T = TypeVar("T")

_REFUSALS: dict[int | str, dict[str, object]] = {
    404: {"model": Problem, "description": "no such job or study"},
    409: {"model": Problem, "description": "not allowed in its current state"},
}


def _admin(op: Callable[[], T]) -> T:
    try:
        return op()
    except AdminError as exc:
        raise HTTPException(http_status(exc.refusal), str(exc)) from None


@router.get(
    "/jobs", summary="Jobs with their state and timings, newest first", dependencies=[ADMIN]
)
def list_jobs(
    node: NodeDep,
    state: Annotated[JobState | None, Query(description="only jobs in this state")] = None,
    study_key: Annotated[str | None, Query(description="only the jobs of this study")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    now = time.time()
    return [JobOut.of(j, now) for j in admin.list_jobs(node.store, state, study_key, limit)]


@router.post(
    "/jobs/{job_id}/retry",
    summary="Retry a failed or partial job: re-queue its study (recorded as job_retried)",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_REFUSALS,
    dependencies=[ADMIN],
)
def retry_job(job_id: str, node: NodeDep) -> RequeuedOut:
    job = _admin(lambda: admin.retry_job(node.store, node.submit_study, job_id))
    log.info("admin.job_retried", job_id=job_id, study_key=job.study_key)
    return RequeuedOut(study_key=job.study_key, job_id=job_id, detail="study re-queued")


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a queued or running job",
    responses=_REFUSALS,
    dependencies=[ADMIN],
)
def cancel_job(job_id: str, node: NodeDep) -> JobOut:
    job = _admin(lambda: admin.cancel_job(node.store, job_id))
    log.info("admin.job_cancelled", job_id=job_id, study_key=job.study_key)
    return JobOut.of(job, time.time())


@router.post(
    "/studies/{study_key}/rerun",
    summary="Re-run a study through routing and its models (recorded as rerun_requested)",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_REFUSALS,
    dependencies=[ADMIN],
)
def rerun_study(study_key: str, node: NodeDep) -> RequeuedOut:
    _admin(lambda: admin.rerun_study(node.store, node.submit_study, study_key))
    log.info("admin.study_rerun_requested", study_key=study_key)
    return RequeuedOut(study_key=study_key, job_id=None, detail="study re-queued")


@router.post(
    "/studies/{study_key}/purge",
    summary="Purge a study's files from the spool; its record and history stay",
    responses=_REFUSALS,
    dependencies=[ADMIN],
)
def purge_study(
    study_key: str,
    node: NodeDep,
    user: AdminUser,
    force: Annotated[
        bool,
        Query(description="purge even while receiving or processing; cancels its open jobs"),
    ] = False,
) -> PurgeOut:
    # cds.admin records the purge in the audit trail, by the caller
    result = _admin(
        lambda: admin.purge_study(
            node.store, node.spool, study_key, force, audit=node.audit, who=user.who
        )
    )
    log.info(
        "admin.study_purged",
        study_key=study_key,
        files_removed=result.files_removed,
        forced=force,
        complete=result.purged,
    )
    return PurgeOut.of(result)


@router.get(
    "/queue", summary="Queue depth, oldest waiting job, studies waiting", dependencies=[OBSERVER]
)
def queue(node: NodeDep) -> QueueOut:
    return QueueOut.of(admin.queue_stats(node.store), time.time())


@router.get(
    "/workers",
    summary="The executor's workers: what each was sent, did and holds loaded",
    dependencies=[OBSERVER],
)
def workers(node: NodeDep) -> list[WorkerOut]:
    return [WorkerOut.model_validate(w) for w in node.compute.workers_info()]


@router.get(
    "/deliveries",
    summary="Result objects sent or to send, per destination, newest first",
    dependencies=[ADMIN],
)
def list_deliveries(
    node: NodeDep,
    state: Annotated[
        DeliveryState | None, Query(description="only deliveries in this state (e.g. dead)")
    ] = None,
    study_key: Annotated[str | None, Query(description="only those of this study")] = None,
    destination: Annotated[str | None, Query(description="only those to this destination")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[DeliveryOut]:
    found = admin.list_deliveries(node.store, state, study_key, destination, limit)
    return [DeliveryOut.of(d) for d in found]


@router.post(
    "/deliveries/{delivery_id}/retry",
    summary="Try a dead (or backing-off) delivery again now (recorded as delivery_retried)",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_REFUSALS,
    dependencies=[ADMIN],
)
def retry_delivery(delivery_id: str, node: NodeDep) -> DeliveryOut:
    d = _admin(lambda: admin.retry_delivery(node.store, delivery_id))
    node.delivery.kick()
    log.info("admin.delivery_retried", study_key=d.study_key, destination=d.destination)
    return DeliveryOut.of(d)


@router.post(
    "/deliveries/retry-dead",
    summary="Try every dead delivery (of one destination) again now",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[ADMIN],
)
def retry_dead(
    node: NodeDep,
    destination: Annotated[str | None, Query(description="only those to this destination")] = None,
) -> list[DeliveryOut]:
    retried = admin.retry_dead_deliveries(node.store, destination)
    node.delivery.kick()
    log.info("admin.deliveries_retried", deliveries=len(retried))
    return [DeliveryOut.of(d) for d in retried]
