"""``GET /api/workitems``: the UPS workitems this node claimed as an IHE AI Workflow
Task Performer and where each stands (``cds workitems``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from cds.api.auth import ADMIN
from cds.api.deps import get_node
from cds.orchestrator import Node
from cds.store.workitems import WorkitemLedger

router = APIRouter(prefix="/api", tags=["admin"])


@router.get(
    "/workitems",
    summary="UPS workitems claimed as Task Performer: state, input study, progress, outputs",
    description="Newest first. `state`: in_progress (claimed, waiting for its input "
    "study and its jobs), completed, canceled (with the reason) or lost (the task "
    "manager cancelled or removed it). Never the Transaction UID.",
    dependencies=[ADMIN],
)
def list_workitems(
    node: Annotated[Node, Depends(get_node)],
    state: Annotated[
        Literal["in_progress", "completed", "canceled", "lost"] | None, Query()
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> list[dict[str, Any]]:
    return [w.as_dict() for w in WorkitemLedger(node.store).list(state, limit)]
