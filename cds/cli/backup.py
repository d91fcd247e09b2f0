"""``cds admin backup DEST`` and ``cds admin restore SRC`` (``cds.admin_backup``).

Backup runs while the node runs; restore needs the node stopped and an empty home.
Both refuse a PostgreSQL store (``pg_dump``), with the command to use instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from cds.admin_backup import BackupError, backup, restore
from cds.audit import cli_actor
from cds.cli.admin import _settings
from cds.cli.common import REFUSED, ConfigOpt, HomeOpt, fail

admin_app = typer.Typer(
    help="Node administration: back up and restore the node's home.",
    no_args_is_help=True,
    add_completion=False,
)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


@admin_app.command("backup")
def backup_cmd(
    dest: Annotated[Path, typer.Argument(help="a new folder to write the backup into")],
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Copy the node's state store, spooled and result files, audit trail and keys.

    Works while the node runs: the SQLite store is copied with SQLite's online backup
    API (one consistent moment), then the files that copy lists, then the audit trail
    under its lock. DEST (mode 0700) holds patient images and the node's keys: keep it
    as carefully as the node's home."""
    settings = _settings(config, home)
    try:
        r = backup(settings, dest, cli_actor())
    except BackupError as exc:
        raise fail(str(exc), REFUSED) from None
    except OSError as exc:
        raise fail(f"backup to {dest} failed: {exc}", REFUSED) from None
    c = r.counts
    typer.echo(
        f"backup written to {r.dest}: {r.files} files, {_size(r.bytes)} in {r.seconds:.1f} s\n"
        f"  {c['studies']} studies, {c['instances']} instances, {c['results']} results, "
        f"{c['deliveries']} deliveries, {c['jobs']} jobs; audit trail: {r.audit_records} "
        "records, verified"
    )
    if r.missing:
        typer.echo(
            f"  {len(r.missing)} file(s) listed in the store were gone when copied "
            "(purged meanwhile); named in manifest.json"
        )


@admin_app.command("restore")
def restore_cmd(
    src: Annotated[Path, typer.Argument(help="a folder written by 'cds admin backup'")],
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Put a backup in place: the node stopped, its home empty (move the old one aside).

    Every file is checked against the backup's SHA-256 first; the restored audit trail
    is verified. Run as root, the files are given to the owner of home (the cds user)."""
    settings = _settings(config, home)
    try:
        r = restore(settings, src, cli_actor())
    except BackupError as exc:
        raise fail(str(exc), REFUSED) from None
    except OSError as exc:
        raise fail(f"restore from {src} failed: {exc}", REFUSED) from None
    made = datetime.fromtimestamp(r.backup_made_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    c = r.counts
    typer.echo(
        f"restored {src} (made {made}) into {r.home}: {r.files} files, {_size(r.bytes)}\n"
        f"  {c['studies']} studies, {c['instances']} instances, {c['results']} results, "
        f"{c['deliveries']} deliveries; audit trail: {r.audit_records} records, verified\n"
        "  start the node: systemctl start cds (or cds serve)"
    )


def register(app: typer.Typer) -> None:
    """Add ``cds admin`` to ``app``."""
    app.add_typer(admin_app, name="admin")
