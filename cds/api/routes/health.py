from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from cds.api.deps import get_node
from cds.orchestrator import Node

router = APIRouter(tags=["status"])


@router.get(
    "/health",
    summary="Node status: DICOM listener, state store, spool free space",
    responses={503: {"description": "a part of the node is down or the disk is low"}},
)
def health(node: Annotated[Node, Depends(get_node)]) -> JSONResponse:
    body: dict[str, Any] = node.health()
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)
