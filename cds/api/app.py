"""create_app(settings): the FastAPI application of the node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cds import __version__
from cds.api.routes import health, studies
from cds.config import Settings
from cds.orchestrator import Node


def create_app(settings: Settings, node: Node | None = None) -> FastAPI:
    """Build the HTTP app. Without ``node``, one is created and run for the app's lifetime."""
    owned = node is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = node if node is not None else Node(settings)
        if owned:
            running.start()
        app.state.node = running
        try:
            yield
        finally:
            if owned:
                running.stop()

    app = FastAPI(
        title="cds",
        version=__version__,
        description=(
            "Self-hosted clinical decision-support DICOM node. Every result is advisory: "
            "a suggestion for a radiologist to accept, correct or reject."
        ),
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(studies.router)
    return app
