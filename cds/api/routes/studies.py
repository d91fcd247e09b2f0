from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from cds.api.auth import RADIOLOGIST
from cds.api.deps import get_node
from cds.api.schemas import Problem, ResultOut, StudyDetailOut, StudyOut
from cds.domain import StudyState
from cds.orchestrator import Node

router = APIRouter(prefix="/api/studies", tags=["studies"], dependencies=[RADIOLOGIST])


@router.get("", summary="Received studies, newest first")
def list_studies(
    node: Annotated[Node, Depends(get_node)],
    state: Annotated[StudyState | None, Query(description="only studies in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[StudyOut]:
    return [StudyOut.of(s) for s in node.store.list_studies(state, limit, offset)]


@router.get(
    "/{study_key}",
    summary="One study: series, counts and history",
    responses={404: {"model": Problem}},
)
def get_study(study_key: str, node: Annotated[Node, Depends(get_node)]) -> StudyDetailOut:
    detail = node.store.get_study(study_key)
    if detail is None:
        raise HTTPException(404, f"no study with key {study_key!r}")
    return StudyDetailOut.of_detail(detail)


@router.get(
    "/{study_key}/results",
    summary="The result objects made for a study, their state and where they were sent",
    responses={404: {"model": Problem}},
)
def study_results(study_key: str, node: Annotated[Node, Depends(get_node)]) -> list[ResultOut]:
    if node.store.get_study(study_key) is None:
        raise HTTPException(404, f"no study with key {study_key!r}")
    deliveries = node.store.list_deliveries(study_key=study_key, limit=100_000)
    return [ResultOut.of(r, deliveries) for r in node.store.list_results(study_key)]
