"""Result objects with their state (``GET /api/results``) and the retraction of one
everywhere (``POST /api/results/{uid}/retract``: 404 unknown, 409 not current).

A retraction is ``cds.retraction.retract_result``: the rejection note and the
withdrawing notifications are queued durably, and the node's delivery and notification
workers are woken at once. The reason is kept with the retraction, never logged.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field

from cds.api.auth import RADIOLOGIST, RadiologistUser
from cds.api.deps import get_node
from cds.api.refusals import http_status
from cds.domain import ResultState
from cds.errors import AdminError, CdsError
from cds.orchestrator import Node
from cds.retraction import MAX_REASON, result_row, retract_result
from cds.store.retractions import RetractionLog

router = APIRouter(prefix="/api", tags=["results"])
NodeDep = Annotated[Node, Depends(get_node)]
_STATES = ", ".join(s.value for s in ResultState)


class RetractIn(BaseModel):
    reason: str = Field(min_length=1, max_length=MAX_REASON, description="why (kept with it)")
    user: str | None = Field(None, description="who, while authentication is off")


@router.get(
    "/results",
    summary="Result objects, newest first, with their state (current, superseded, "
    "retracted, rejection)",
    dependencies=[RADIOLOGIST],
)
def list_results(
    node: NodeDep,
    study_key: Annotated[str | None, Query(description="only those of this study")] = None,
    model: Annotated[str | None, Query(description="only those of this model")] = None,
    state: Annotated[str | None, Query(description=f"only in this state ({_STATES})")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, object]]:
    if state is not None and state not in {s.value for s in ResultState}:
        raise HTTPException(422, f"state: one of {_STATES}")
    return [
        result_row(r) for r in RetractionLog(node.store).results(study_key, model, state, limit)
    ]


def retract(node: Node, uid: str, reason: str, who: str) -> dict[str, object]:
    """Retract and wake the workers; HTTPException 404/409/422 otherwise (the review
    page uses it too)."""
    try:
        done = retract_result(
            node.store, node.settings.results_path, node.audit, uid, reason=reason,
            who=who, lang=node.settings.results.language,
        )  # fmt: skip
    except AdminError as exc:
        raise HTTPException(http_status(exc.refusal), str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    except CdsError as exc:
        raise HTTPException(422, f"result {uid}: {exc}") from None
    node.delivery.kick()
    node.notifier.kick()
    return done.as_dict()


@router.post(
    "/results/{sop_instance_uid}/retract",
    summary="Withdraw a result everywhere: IOCM rejection note, withdrawn ORU, "
    "entered-in-error FHIR report",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[RADIOLOGIST],
)
def retract_result_route(
    sop_instance_uid: str, body: RetractIn, node: NodeDep, user: RadiologistUser
) -> dict[str, object]:
    if user.via != "none":
        who = user.who
    elif body.user is not None:
        who = body.user
    else:
        raise HTTPException(422, "user: required while authentication is off")
    return retract(node, sop_instance_uid, body.reason, who)
