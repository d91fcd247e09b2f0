"""cds audit: query and verify the audit trail (issue 7). Filled in by the audit work."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    del app  # no command yet
