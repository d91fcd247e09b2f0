"""create_app(settings): the FastAPI application of the node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from cds import __version__
from cds.api import hardening, pages
from cds.api.auth import Authenticator, check_routes
from cds.api.routes import (
    admin,
    backfill,
    dicomweb,
    docs,
    feedback,
    health,
    login,
    metrics,
    notifications,
    observatory,
    results,
    review,
    routing,
    studies,
    workitems,
)
from cds.config import Settings
from cds.orchestrator import Node


class _App(FastAPI):
    """FastAPI wrapped whole in :func:`cds.api.hardening.outermost` (body limit, security
    headers), Starlette's own error handling included: even a 500 gets the headers."""

    cds_settings: Settings

    def build_middleware_stack(self) -> ASGIApp:
        return hardening.outermost(super().build_middleware_stack(), self.cds_settings)


def create_app(settings: Settings, node: Node | None = None) -> FastAPI:
    """Build the HTTP app; the node stops when the app shuts down.

    Every route states who may call it (:mod:`cds.api.auth`); the app is refused
    if one does not.

    Without ``node``, one is created and started with the app. (``cds serve``
    starts the node first, so that a port in use is reported before HTTP starts.)
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = node if node is not None else Node(settings)
        if node is None:
            running.start()
        health.warn_if_no_usable_model(running)
        app.state.node = running
        try:
            yield
        finally:
            # uvicorn re-raises SIGTERM/SIGINT after shutdown: stop the node here, not later.
            running.stop()

    app = _App(
        title="cds",
        version=__version__,
        description=(
            "Self-hosted clinical decision-support DICOM node. Every result is advisory: "
            "a suggestion for a radiologist to accept, correct or reject."
        ),
        lifespan=lifespan,
        # served by routes.docs behind the observer role
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.cds_settings = settings
    app.state.auth = Authenticator(settings)
    app.include_router(health.router)
    app.include_router(studies.router)
    app.include_router(routing.router)
    app.include_router(admin.router)
    app.include_router(feedback.router)
    app.include_router(review.router)
    app.include_router(observatory.router)
    app.include_router(metrics.router)
    app.include_router(login.router)
    app.include_router(docs.router)
    app.include_router(dicomweb.router)
    app.include_router(backfill.router)
    app.include_router(workitems.router)
    app.include_router(notifications.router)
    app.include_router(results.router)
    check_routes(app)
    pages.install(app)
    hardening.install(app)
    return app
