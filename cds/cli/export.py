"""cds export case: a de-identified copy of one study, for model improvement (issue 7).

Exit codes: 0 written; 1 cannot (no store, no such study, nothing spooled, --out not
empty); 2 configuration error; 3 refused: an instance may carry burned-in text
(the message names the file and the field), nothing written.
"""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Annotated

import typer

from cds.audit import AuditEvent, AuditOutcome, AuditTrail
from cds.config import Settings, load_settings
from cds.errors import ConfigError

EXIT_CANNOT = 1
EXIT_CONFIG = 2
EXIT_REFUSED = 3

export_app = typer.Typer(help="De-identified exports (PS3.15 Basic Profile).", no_args_is_help=True)


def _settings(config: Path | None, home: Path | None) -> Settings:
    try:
        return load_settings(config, home)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_CONFIG) from None


def _who() -> str:
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "system"


@export_app.command("case")
def export_case_cmd(
    study_key: Annotated[str, typer.Argument(help="study key as listed by 'cds studies'")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="new or empty folder to write into (default: a new one in privacy.exports_path)",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML configuration file")
    ] = None,
    home: Annotated[Path | None, typer.Option("--home", help="the node's home folder")] = None,
    modified_dates: Annotated[
        bool | None,
        typer.Option(
            "--modified-dates/--no-modified-dates",
            help="shift dates by a keyed per-patient offset (Retain Longitudinal Temporal "
            "Information with Modified Dates) instead of removing them "
            "(default: privacy.modified_dates)",
        ),
    ] = None,
) -> None:
    """Write de-identified copies of a study's instances and a manifest.json.

    PS3.15 E.1.1 Basic Profile, keyed pseudonyms and UIDs (privacy.key_file).
    Exit 0 written, 1 cannot, 2 configuration error, 3 refused (burned-in text possible).
    """
    from cds.privacy.export import (  # noqa: PLC0415 (pydicom loads only when exporting)
        DeidRefused,
        ExportError,
        export_case,
    )

    settings = _settings(config, home)
    if out is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out = settings.exports_path / f"case-{study_key}-{stamp}"
    audit = AuditTrail(settings.audit_path)
    try:
        manifest = export_case(settings, study_key, out, modified_dates=modified_dates)
    except DeidRefused as exc:
        audit.record(
            AuditEvent.EXPORT,
            who=_who(),
            outcome=AuditOutcome.MINOR_FAILURE,
            study_key=study_key,
            detail={"kind": "case", "refused": "burned-in annotation possible"},
        )
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    except ExportError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_CANNOT) from None
    audit.record(
        AuditEvent.EXPORT,
        who=_who(),
        study_key=study_key,
        detail={
            "kind": "case",
            "instances": manifest.instances,
            "series": manifest.series,
            "profile": "basic",
            "options": manifest.options,
            "key_id": manifest.key_id,
        },
    )
    typer.echo(
        f"{manifest.instances} instances in {manifest.series} series de-identified into {out} "
        f"(manifest.json)"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(export_app, name="export")
