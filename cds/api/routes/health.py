from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from cds.api.auth import PUBLIC, identify
from cds.api.deps import get_node
from cds.config import Settings
from cds.config.settings import redact_url
from cds.logging import get_logger
from cds.orchestrator import Node

router = APIRouter(tags=["status"])
log = get_logger("cds.api")


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
    "name is broken or missing, or `inference.model_dirs` holds no usable model at all, "
    "listed under `problems`, and its studies are skipped). "
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
    if node.workflow is not None:  # IHE AI Workflow: subscribed or polling, claimed count
        body["workflow"] = node.workflow.describe()
    none_usable = no_usable_model(node)
    if none_usable is not None:
        body["problems"].append(none_usable)
        if body["status"] == "ok":
            body["status"] = "degraded"
    code = 503 if body["status"] == "unavailable" else 200
    if not _detailed(request):
        body = {"status": body["status"]}
    return JSONResponse(body, status_code=code)


def no_usable_model(node: Node) -> dict[str, Any] | None:
    """A problem when ``inference.model_dirs`` names folders but no model in them is ready
    (a wheel without its models, a mistyped folder, every package broken): the node
    receives studies and analyses none. An empty ``model_dirs`` is the admin's choice of
    a node without models (receive and route only), not a problem."""
    dirs = node.settings.inference.model_dirs
    models = node.models.all()
    if not dirs or any(m.status == "ready" for m in models):
        return None
    broken = sum(1 for m in models if m.status != "ready")
    found = f"{broken} package(s), none ready" if models else "no model package found"
    return {
        "model": None,
        "status": "no_usable_model",
        "pipelines": [],
        "reason": f"{found} in inference.model_dirs ({', '.join(map(str, dirs))})",
    }


def warn_if_no_usable_model(node: Node) -> None:
    """At start: a node that can analyse nothing says so loudly, once, in the log."""
    problem = no_usable_model(node)
    if problem is not None:
        log.warning("inference.no_usable_model", reason=problem["reason"])


def _store_where(settings: Settings) -> str:
    """Where the state store is, as it may be shown: never the URL's password."""
    if settings.store.backend == "postgresql" and settings.store.url is not None:
        return redact_url(settings.store.url)
    return str(settings.sqlite_path)
