"""``cds workitems``: the UPS workitems this node claimed as an IHE AI Workflow Task
Performer, and where each stands (``GET /api/workitems``). Reads the store directly,
so it works with the node down."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cds.cli.common import USAGE, ConfigOpt, HomeOpt, fail, open_state_store, when
from cds.config import Settings, load_settings
from cds.errors import ConfigError

STATES = ("in_progress", "completed", "canceled", "lost")


def _settings(config: Path | None, home: Path | None) -> Settings:
    try:
        return load_settings(config, home)
    except ConfigError as exc:
        raise fail(str(exc), USAGE) from None


def workitems(
    state: Annotated[
        str | None, typer.Option("--state", help=f"only these: {', '.join(STATES)}")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """List the UPS workitems claimed as Task Performer, newest first (workflow.ups_url)."""
    from cds.store.workitems import WorkitemLedger  # noqa: PLC0415 (``cds --help`` stays fast)

    if state is not None and state not in STATES:
        raise fail(f"--state: must be one of {', '.join(STATES)}", USAGE)
    settings = _settings(config, home)
    store = open_state_store(settings)
    try:
        rows = WorkitemLedger(store).list(state)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([w.as_dict() for w in rows], indent=1))
        return
    for w in rows:
        why = f"  ({w.reason})" if w.reason else ""
        typer.echo(
            f"{w.workitem_uid}  {w.state:<11} {w.progress:3.0f}%  study {w.study_key}  "
            f"outputs {w.outputs}  claimed {when(w.claimed_at)}{why}"
        )
    if not rows:
        off = "" if settings.workflow.ups_url else " (workflow.ups_url is not set: off)"
        typer.echo(f"no workitem claimed{off}")


def register(app: typer.Typer) -> None:
    """Add ``cds workitems`` to ``app``."""
    app.command("workitems")(workitems)
