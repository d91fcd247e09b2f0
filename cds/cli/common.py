"""What every ``cds`` command shares: how it fails, with one meaning per exit status.

- ``REFUSED`` (1): what was asked cannot be done (no such study, nothing made, an
  operation refused in the current state, a file that cannot be read).
- ``USAGE`` (2): the command line or the configuration is wrong (a bad option, an
  invalid configuration file).
- ``PARTIAL`` (3): done in part (``cds process``: some objects asked were not made).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cds.config import Settings
    from cds.store import StateStore

REFUSED = 1
USAGE = 2
PARTIAL = 3

#: the options every command that reads the node's configuration takes
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration file (see deploy/cds.example.yaml)"),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="state, spool and keys folder (default ./cds-home, or CDS_HOME)"),
]


def fail(message: str, code: int) -> typer.Exit:
    """Print ``message`` on stderr; the Exit to raise with ``code``."""
    typer.echo(message, err=True)
    return typer.Exit(code)


def open_state_store(settings: Settings) -> StateStore:
    """The node's state store, for a command that reads or changes it; REFUSED when the
    node never ran with this home (a command never creates a SQLite file), or the store
    cannot be opened (``store.backend``/``store.url``: psycopg missing, no server)."""
    from cds.errors import StoreError  # noqa: PLC0415
    from cds.store import open_store  # noqa: PLC0415 (``cds --help`` stays fast)

    if settings.store.backend == "sqlite" and not settings.sqlite_path.exists():
        raise fail(
            f"no state store at {settings.sqlite_path} (store.sqlite_path): "
            "has the node run with this --home?",
            REFUSED,
        )
    try:
        return open_store(settings)
    except StoreError as exc:  # psycopg missing, server unreachable: said, no traceback
        raise fail(str(exc), REFUSED) from None


def when(ts: float | None) -> str:
    """A time stamp as the commands print it (UTC), ``-`` for none."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
