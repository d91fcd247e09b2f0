"""The notification outbox (``cds notifications``): urgent-finding messages to a RIS or
worklist, and an admin's retry of a dead one (404 unknown, 409 sent already)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status

from cds.api.auth import ADMIN
from cds.api.deps import get_node
from cds.logging import get_logger
from cds.orchestrator import Node
from cds.store.notifications import STATES, NotificationOutbox

log = get_logger("cds.admin")
router = APIRouter(prefix="/api", tags=["admin"])
NodeDep = Annotated[Node, Depends(get_node)]


@router.get(
    "/notifications",
    summary="Urgent-finding notifications sent or to send, per target, newest first",
    dependencies=[ADMIN],
)
def list_notifications(
    node: NodeDep,
    state: Annotated[
        str | None, Query(description=f"only those in this state ({', '.join(STATES)})")
    ] = None,
    study_key: Annotated[str | None, Query(description="only those of this study")] = None,
    target: Annotated[str | None, Query(description="only those to this target")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    if state is not None and state not in STATES:
        raise HTTPException(422, f"state: one of {', '.join(STATES)}")
    found = NotificationOutbox(node.store).find(study_key, state, target, limit)
    return [n.as_dict() for n in found]


@router.post(
    "/notifications/{notification_id}/retry",
    summary="Try a dead (or backing-off) notification again now (notify_retried)",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[ADMIN],
)
def retry_notification(notification_id: str, node: NodeDep) -> dict[str, Any]:
    try:
        n, changed = NotificationOutbox(node.store).retry(notification_id, "by admin")
    except KeyError:
        raise HTTPException(404, f"no notification with id {notification_id!r}") from None
    if not changed:
        raise HTTPException(409, f"notification {notification_id} was sent already")
    node.notifier.kick()
    log.info("admin.notification_retried", study_key=n.study_key, target=n.target)
    return n.as_dict()


@router.post(
    "/notifications/retry-dead",
    summary="Try every dead notification (to one target) again now",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[ADMIN],
)
def retry_dead_notifications(
    node: NodeDep,
    target: Annotated[str | None, Query(description="only those to this target")] = None,
) -> list[str]:
    retried = NotificationOutbox(node.store).retry_dead(target)
    node.notifier.kick()
    log.info("admin.notifications_retried", notifications=len(retried))
    return retried
