"""Feedback endpoints for viewer and RIS vendors: a study's findings, and the
radiologist's accept / correct / reject on each (appended, never blocking).

A finding is addressed by the SOP Instance UID of the result that reports it (the
SR) and its Tracking Unique Identifier, as a viewer reads them from the SR.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from cds.api.auth import RADIOLOGIST, RadiologistUser
from cds.api.deps import get_node
from cds.api.refusals import http_status
from cds.api.schemas import FeedbackIn, FeedbackOut, FindingOut, Problem
from cds.errors import FeedbackError
from cds.feedback.service import CorrectedLabel, give_feedback
from cds.logging import get_logger
from cds.orchestrator import Node

log = get_logger("cds.feedback")

router = APIRouter(prefix="/api", tags=["feedback"], dependencies=[RADIOLOGIST])
NodeDep = Annotated[Node, Depends(get_node)]


@router.get(
    "/studies/{study_key}/findings",
    summary="A study's findings (every result, current and superseded) with their feedback",
    responses={404: {"model": Problem}},
)
def study_findings(study_key: str, node: NodeDep) -> list[FindingOut]:
    if node.store.get_study(study_key) is None:
        raise HTTPException(404, f"no study with key {study_key!r}")
    feedback = node.store.list_feedback(study_key=study_key, limit=100_000)
    return [FindingOut.of(f, feedback) for f in node.store.list_findings(study_key)]


@router.post(
    "/results/{sop_instance_uid}/findings/{tracking_uid}/feedback",
    summary="Accept, correct or reject one finding (appended; the result never changes)",
    status_code=status.HTTP_201_CREATED,
    responses={404: {"model": Problem}, 422: {"model": Problem}},
)
def post_feedback(
    sop_instance_uid: str,
    tracking_uid: str,
    body: FeedbackIn,
    node: NodeDep,
    user: RadiologistUser,
) -> FeedbackOut:
    # signed in: who is the caller (user:<name>), whatever the body says
    if user.via != "none":
        who = user.who
    elif body.user is not None:
        who = body.user
    else:
        raise HTTPException(422, "user: required while authentication is off")
    corrected = (
        CorrectedLabel(
            body.corrected_label.scheme, body.corrected_label.value, body.corrected_label.meaning
        )
        if body.corrected_label
        else None
    )
    try:
        fb = give_feedback(
            node.store,
            result_sop_uid=sop_instance_uid,
            tracking_uid=tracking_uid,
            action=body.action,
            who=who,
            source="api",
            reason=body.reason,
            corrected=corrected,
            audit=node.audit,  # feedback_given, by who
        )
    except FeedbackError as exc:
        raise HTTPException(http_status(exc.refusal), str(exc)) from None
    log.info("feedback.recorded", study_key=fb.study_key, model=fb.model, action=fb.action.value)
    return FeedbackOut.of(fb)


@router.get("/feedback", summary="Feedback records, oldest first (filter by model, study, time)")
def list_feedback(
    node: NodeDep,
    model: Annotated[str | None, Query(description="only feedback on this model")] = None,
    study_key: Annotated[str | None, Query(description="only feedback in this study")] = None,
    since: Annotated[
        float | None, Query(description="only feedback at or after this epoch second")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> list[FeedbackOut]:
    found = node.store.list_feedback(study_key=study_key, model=model, since=since, limit=limit)
    return [FeedbackOut.of(f) for f in found]
