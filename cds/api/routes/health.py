from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from cds.api.auth import PUBLIC, identify
from cds.api.deps import get_node
from cds.config import Settings
from cds.config.settings import redact_url
from cds.orchestrator import Node

router = APIRouter(tags=["status"])


def _detailed(request: Request) -> bool:
    """Whether the caller may see the details (observer and up; everyone when auth
    is off). A load balancer without credentials gets the status alone."""
    try:
        return identify(request, cookie=True) is not None
    except HTTPException:
        return False


@router.get(
    "/health",
    summary="Node status: DICOM listener, state store, spool free space, routed models",
    description="Open to load balancers: without credentials (when authentication is on) "
    "the answer is the status alone; observers and up see every part. `ok` and "
    "`degraded` answer 200: the node takes studies (degraded: a model the routing rules "
    "name is broken or missing, listed under `problems`, and its studies are skipped). "
    "`unavailable` answers 503: the listener or the state store is down, or the spool "
    "disk is below its watermark, so studies are refused. `store`: its kind (`sqlite`, "
    "`postgresql`), whether it answered a trivial query (within 2 s for PostgreSQL) "
    "and where it is (the SQLite file, or the PostgreSQL URL without its password).",
    responses={503: {"description": "unavailable: a part of the node is down or the disk is low"}},
    dependencies=[PUBLIC],
)
def health(request: Request, node: Annotated[Node, Depends(get_node)]) -> JSONResponse:
    body: dict[str, Any] = node.health()
    body["store"]["where"] = _store_where(node.settings)
    code = 503 if body["status"] == "unavailable" else 200
    if not _detailed(request):
        body = {"status": body["status"]}
    return JSONResponse(body, status_code=code)


def _store_where(settings: Settings) -> str:
    """Where the state store is, as it may be shown: never the URL's password."""
    if settings.store.backend == "postgresql" and settings.store.url is not None:
        return redact_url(settings.store.url)
    return str(settings.sqlite_path)
