"""Routing and models for PACS admins: explain (dry-run), rules in force, kill switch."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from cds.api.auth import ADMIN, OBSERVER, AdminUser, Identity
from cds.api.deps import get_node
from cds.api.schemas import Problem
from cds.orchestrator import Node
from cds.pipeline import study_series
from cds.routing.router import read_headers, route

router = APIRouter(tags=["routing"])


class ExplainRequest(BaseModel):
    study_key: str | None = Field(None, description="a study received by the node")
    paths: list[str] = Field(
        default_factory=list, description="DICOM files or folders on the node's file system"
    )
    calling_ae_title: str = Field("", description="for paths: pretend this sender")


@router.post(
    "/api/route/explain",
    summary="Dry-run routing: which rules match, why, which series, what would be sent where",
    responses={404: {"model": Problem}, 422: {"model": Problem}},
    dependencies=[ADMIN],  # reads files on the node's disk
)
def explain(req: ExplainRequest, node: Annotated[Node, Depends(get_node)]) -> dict[str, Any]:
    loaded = {m.name for m in node.models.all() if m.status == "ready"}
    disabled = node.routing.disabled()
    studies: list[list[Any]] = []
    skipped: list[str] = []
    if req.study_key is not None:
        series = study_series(node, req.study_key)
        if not series:
            raise HTTPException(404, f"no spooled study with key {req.study_key!r}")
        studies.append(series)
    if req.paths:
        missing = [p for p in req.paths if not Path(p).exists()]
        if missing:
            raise HTTPException(422, f"no such file or folder: {', '.join(missing)}")
        found, skipped = read_headers(
            [Path(p) for p in req.paths], limits=node.settings.dicom.limits
        )
        for group in found.values():
            for s in group:
                s.calling_ae = req.calling_ae_title
            studies.append(group)
    if not studies:
        raise HTTPException(422, "give study_key or paths")
    plans = [
        route(s, node.routing.rules, disabled_models=disabled, loaded_models=loaded)
        for s in studies
    ]
    return {"studies": [asdict(p) for p in plans], "skipped": skipped}


@router.get(
    "/api/routing",
    summary="The routing rules in force and the last refused change",
    dependencies=[ADMIN],  # names the destinations (hosts, ports)
)
def routing_state(node: Annotated[Node, Depends(get_node)]) -> dict[str, Any]:
    rf = node.routing.rules
    return {
        "file": str(node.routing.path) if node.routing.path else None,
        "rules": [
            {"name": r.name, "priority": r.priority, "pipelines": r.pipelines} for r in rf.rules
        ],
        "pipelines": {k: v.model_dump() for k, v in rf.pipelines.items()},
        "destinations": {k: v.model_dump(mode="json") for k, v in rf.destinations.items()},
        "disabled_models": sorted(node.routing.disabled()),
        "last_refused_change": node.routing.last_errors,
    }


@router.get(
    "/api/models",
    summary="Model packages: version, SHA-256, provider in use, status",
    dependencies=[OBSERVER],
)
def models(node: Annotated[Node, Depends(get_node)]) -> list[dict[str, Any]]:
    disabled = node.routing.disabled()
    return [
        {
            "name": m.name,
            "version": m.version,
            "status": m.status,
            "provider": m.provider,
            "sha256": m.sha256,
            "disabled": m.name in disabled,
            "errors": m.errors,
        }
        for m in node.models.all()
    ]


def _switch(node: Node, name: str, disabled: bool, user: Identity) -> dict[str, Any]:
    known = {m.name for m in node.models.all()} | {
        p.model for p in node.routing.rules.pipelines.values()
    }
    if name not in known:
        raise HTTPException(404, f"no model named {name!r} is loaded or routed")
    # the routing manager records model_disabled / model_enabled, by the caller
    node.routing.set_disabled(name, disabled, who=user.who)
    return {"model": name, "disabled": name in node.routing.disabled()}


@router.post(
    "/api/models/{name}/disable",
    summary="Kill switch: the model stops running at once; routed studies are recorded as skipped",
    responses={404: {"model": Problem}},
)
def disable(name: str, user: AdminUser, node: Annotated[Node, Depends(get_node)]) -> dict[str, Any]:
    return _switch(node, name, True, user)


@router.post(
    "/api/models/{name}/enable",
    summary="Lift the kill switch set through the API (config and routing-file switches stay)",
    responses={404: {"model": Problem}},
)
def enable(name: str, user: AdminUser, node: Annotated[Node, Depends(get_node)]) -> dict[str, Any]:
    return _switch(node, name, False, user)
