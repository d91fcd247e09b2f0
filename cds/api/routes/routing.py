"""Routing and models for PACS admins: explain (dry-run), rules in force, kill switch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field, StringConstraints

from cds.api.auth import ADMIN, OBSERVER, AdminUser, Identity
from cds.api.deps import get_node
from cds.api.schemas import Problem
from cds.logging import get_logger
from cds.orchestrator import Node
from cds.pipeline import study_series
from cds.routing.files import (
    MAX_PATH_CHARS,
    MAX_PATHS,
    ExplainStopped,
    PathRefused,
    ReadBudget,
    allowed_paths,
)
from cds.routing.router import SeriesHeader, read_headers, route

router = APIRouter(tags=["routing"])
log = get_logger("cds.routing")
T = TypeVar("T")

#: how often a running explain looks whether its client is still there
DISCONNECT_POLL_S = 0.1


class ExplainRequest(BaseModel):
    study_key: str | None = Field(
        None, pattern=r"^[0-9a-f]{16}$", description="a study received by the node"
    )
    paths: list[Annotated[str, StringConstraints(max_length=MAX_PATH_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_PATHS,
        description="absolute paths of DICOM files or folders inside routing.explain_roots "
        "(links resolved); refused when no root is set",
    )
    calling_ae_title: str = Field("", max_length=16, description="for paths: pretend this sender")


@router.post(
    "/api/route/explain",
    summary="Dry-run routing: which rules match, why, which series, what would be sent where",
    description="Files are read only under routing.explain_roots and within "
    "routing.explain_limits: past a bound the answer is 413 naming it (never a partial "
    "answer). The walk stops when the client goes away.",
    responses={
        403: {"model": Problem},
        404: {"model": Problem},
        413: {"model": Problem},
        422: {"model": Problem},
    },
    dependencies=[ADMIN],  # reads files on the node's disk
)
async def explain(
    req: ExplainRequest, request: Request, node: Annotated[Node, Depends(get_node)]
) -> dict[str, Any]:
    if req.study_key is None and not req.paths:
        raise HTTPException(422, "give study_key or paths")
    settings = node.settings.routing
    try:
        paths = allowed_paths(req.paths, settings.explain_roots) if req.paths else []
    except PathRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    budget = ReadBudget.of(settings.explain_limits, roots=settings.explain_roots)
    try:
        studies, skipped = await _while_connected(
            request, budget.cancel, lambda: _read(node, req, paths, budget)
        )
    except ExplainStopped as exc:
        log.warning("routing.explain_stopped", reason=exc.reason, **budget.counts())
        if exc.reason == "cancelled":
            raise HTTPException(400, str(exc)) from None  # nobody is there to read it
        raise HTTPException(413, str(exc)) from None
    loaded = {m.name for m in node.models.all() if m.status == "ready"}
    disabled = node.routing.disabled()
    plans = [
        route(
            s,
            node.routing.rules,
            disabled_models=disabled,
            loaded_models=loaded,
            declared_use=node.models.declared_use(),
        )
        for s in studies
    ]
    return {"studies": [asdict(p) for p in plans], "skipped": skipped}


def _read(
    node: Node, req: ExplainRequest, paths: list[Path], budget: ReadBudget
) -> tuple[list[list[SeriesHeader]], list[str]]:
    """The series to explain (in a worker thread: it reads files)."""
    studies: list[list[SeriesHeader]] = []
    skipped: list[str] = []
    if req.study_key is not None:
        series = study_series(node, req.study_key)
        if not series:
            raise HTTPException(404, "no spooled study with this study_key")
        studies.append(series)
    if paths:
        found, skipped = read_headers(paths, limits=node.settings.dicom.limits, budget=budget)
        for group in found.values():
            for s in group:
                s.calling_ae = req.calling_ae_title
            studies.append(group)
    return studies, skipped


async def _while_connected(request: Request, cancel: threading.Event, work: Callable[[], T]) -> T:
    """``work()`` in a worker thread; ``cancel`` is set as soon as the client disconnects,
    and the thread's result (or exception) is returned once it has stopped."""

    async def watch() -> None:
        while not await request.is_disconnected():
            await anyio.sleep(DISCONNECT_POLL_S)
        cancel.set()

    outcome: list[T] = []
    failure: list[BaseException] = []

    async def run() -> None:
        try:
            outcome.append(await anyio.to_thread.run_sync(work))
        except Exception as exc:  # handed to the caller below, outside the task group
            failure.append(exc)
        finally:
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        tg.start_soon(run)
    if failure:
        raise failure[0]
    return outcome[0]


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
