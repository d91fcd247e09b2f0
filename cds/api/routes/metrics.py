"""``GET /metrics`` (Prometheus text format) and ``GET /api/observatory/drift``.

Both read the state store only; neither names a study, a UID or a patient.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cds.api.auth import OBSERVER
from cds.api.deps import get_node
from cds.api.schemas import Problem
from cds.observatory.drift import DriftSettings, drift_report, drift_settings_of
from cds.observatory.metrics import build_registry
from cds.orchestrator import Node

router = APIRouter(tags=["observatory"], dependencies=[OBSERVER])
NodeDep = Annotated[Node, Depends(get_node)]


def _registry(request: Request, node: Node) -> CollectorRegistry:
    """The app's node has one registry, made at the first scrape."""
    state = request.app.state
    registry = getattr(state, "metrics_registry", None)
    if not isinstance(registry, CollectorRegistry):
        registry = build_registry(
            node.store, drift_settings_of(node.settings), workers=node.compute.workers_info
        )
        state.metrics_registry = registry
    return registry


@router.get(
    "/metrics",
    summary="The node's figures in the Prometheus text format: instances, studies, jobs, "
    "queues, stage latencies, inference time, deliveries, feedback, drift alerts",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request, node: NodeDep) -> Response:
    return Response(generate_latest(_registry(request, node)), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/api/observatory/drift",
    summary="Input (DICOM header) and output (score) drift per model version: recent "
    "window against a baseline, population stability index per feature, alert flags",
    responses={422: {"model": Problem}},
)
def drift(
    node: NodeDep,
    model: Annotated[str | None, Query(description="one model's name (default: all)")] = None,
    baseline_days: Annotated[
        float | None,
        Query(gt=0, le=3650, description="baseline: the days before the recent window"),
    ] = None,
    recent_days: Annotated[
        float | None, Query(gt=0, le=3650, description="recent window: the last days")
    ] = None,
    baseline_runs: Annotated[
        int | None,
        Query(ge=1, le=1_000_000, description="baseline: each version's first runs instead"),
    ] = None,
) -> dict[str, Any]:
    base = drift_settings_of(node.settings)
    cfg = DriftSettings(
        baseline_days=base.baseline_days if baseline_days is None else baseline_days,
        recent_days=base.recent_days if recent_days is None else recent_days,
        baseline_runs=base.baseline_runs if baseline_runs is None else baseline_runs,
        psi_alert=base.psi_alert,
        min_runs=base.min_runs,
    )
    now = time.time()
    try:
        reports = drift_report(node.store, now, cfg, model=model)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return {
        "at": now,
        "settings": asdict(cfg),
        "models": [{**asdict(r), "alert": r.alert} for r in reports],
    }
