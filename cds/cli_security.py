"""cds token: API tokens for the HTTP API (issue 7). Filled in by the HTTP security work."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    del app  # no command yet
