"""``GET /api/backfill``: every backfill run and how far it got (``cds backfill status``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from cds.api.auth import ADMIN
from cds.api.deps import get_node
from cds.orchestrator import Node
from cds.store.backfill import BackfillLedger

router = APIRouter(prefix="/api", tags=["admin"])


@router.get(
    "/backfill",
    summary="Backfill runs: query, state, studies retrieved/failed/skipped/processed, ETA",
    dependencies=[ADMIN],
)
def list_backfills(node: Annotated[Node, Depends(get_node)]) -> list[dict[str, Any]]:
    return [s.as_dict() for s in BackfillLedger(node.store).status()]
