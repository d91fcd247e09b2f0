"""The ``cds`` command line: serve, config check, studies.

Every failure prints a message naming the file and the field at fault and
exits non-zero; no traceback for expected errors.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from cds import __version__
from cds.config import Settings, load_settings
from cds.domain import StudyState
from cds.errors import CdsError, ConfigError

app = typer.Typer(
    help="cds: self-hosted clinical decision-support DICOM node (advisory AI results).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration file (see deploy/cds.example.yaml)"),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="state, spool and keys folder (default ./cds-home, or CDS_HOME)"),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _settings(config: Path | None, home: Path | None) -> Settings:
    try:
        return load_settings(config, home)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


@app.command()
def version() -> None:
    """Print the cds version."""
    typer.echo(__version__)


@app.command()
def serve(config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Run the node: DICOM listener, study assembly and the HTTP API."""
    import uvicorn

    from cds.api.app import create_app
    from cds.logging import configure_logging
    from cds.orchestrator import Node

    settings = _settings(config, home)
    configure_logging(settings.log.format, settings.log.level)
    try:
        node = Node(settings)
        node.start()
    except OSError as exc:
        cfg = settings.dicom
        raise _fail(
            f"cannot start DICOM listener on {cfg.host}:{cfg.port} (dicom.host/dicom.port): "
            f"{exc.strerror or exc}",
            1,
        ) from None
    except CdsError as exc:
        raise _fail(f"cannot start: {exc}", 1) from None
    try:
        uvicorn.run(
            create_app(settings, node),
            host=settings.http.host,
            port=settings.http.port,
            log_config=None,
            access_log=False,
        )
    finally:
        node.stop()  # normally already done by the app's shutdown


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="YAML configuration file")]) -> None:
    """Validate a configuration file; list every error with its path."""
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        typer.echo(f"{file}: {len(exc.errors)} error(s)", err=True)
        for err in exc.errors:
            typer.echo(f"  {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{file}: OK (DICOM {settings.dicom.ae_title}@{settings.dicom.host}:"
        f"{settings.dicom.port}, HTTP {settings.http.host}:{settings.http.port}, "
        f"home {settings.home})"
    )


def _open_store_readonly(settings: Settings):  # type: ignore[no-untyped-def]
    from cds.store import open_store

    if not settings.sqlite_path.exists():
        raise _fail(
            f"no state store at {settings.sqlite_path} (store.sqlite_path): "
            "has the node run with this --home?",
            1,
        )
    return open_store(settings)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def studies(
    config: ConfigOpt = None,
    home: HomeOpt = None,
    state: Annotated[StudyState | None, typer.Option(help="only studies in this state")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List received studies with series and instance counts and their state."""
    from cds.api.schemas import StudyOut

    store = _open_store_readonly(_settings(config, home))
    rows = store.list_studies(state, limit)
    store.close()
    if as_json:
        typer.echo(json.dumps([StudyOut.of(s).model_dump(mode="json") for s in rows], indent=2))
        return
    if not rows:
        typer.echo("no studies")
        return
    head = (
        f"{'STUDY KEY':<17} {'STATE':<11} {'SERIES':>6} {'INST':>6} {'MOD':<8} "
        f"{'FROM AE':<16} {'LAST RECEIVED (UTC)':<19}"
    )
    typer.echo(head)
    for s in rows:
        reopened = f" (reopened x{s.reopened_count})" if s.reopened_count else ""
        typer.echo(
            f"{s.study_key:<17} {s.state.value:<11} {s.series_count:>6} {s.instance_count:>6} "
            f"{','.join(s.modalities)[:8]:<8} {s.calling_ae:<16} "
            f"{_when(s.last_received_at):<19}{reopened}"
        )


@app.command()
def study(
    study_key: Annotated[str, typer.Argument(help="study key as listed by 'cds studies'")],
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Show one study: its series and its history."""
    store = _open_store_readonly(_settings(config, home))
    detail = store.get_study(study_key)
    store.close()
    if detail is None:
        raise _fail(f"no study with key {study_key!r}", 1)
    s = detail.summary
    typer.echo(f"study {s.study_key}  state {s.state.value}  UID {s.study_uid}")
    typer.echo(f"  {s.series_count} series, {s.instance_count} instances")
    for r in detail.series:
        typer.echo(
            f"  series #{r.series_number if r.series_number is not None else '-'} "
            f"{r.modality:<4} {r.instance_count:>5} instances  {r.series_uid}"
        )
    typer.echo("history:")
    for e in detail.events:
        typer.echo(f"  {_when(e.at)}  {e.kind:<18} {e.detail}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
