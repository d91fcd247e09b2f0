"""The ``cds`` command line: serve, config check, studies.

Every failure prints a message naming the file and the field at fault and
exits non-zero; no traceback for expected errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cds import __version__
from cds.cli import audit as cli_audit
from cds.cli import backfill as cli_backfill
from cds.cli import backup as cli_backup
from cds.cli import certify as cli_certify
from cds.cli import conformance as cli_conformance
from cds.cli import demo as cli_demo
from cds.cli import doctor as cli_doctor
from cds.cli import export as cli_export
from cds.cli import observatory as cli_observatory
from cds.cli import process as cli_process
from cds.cli import security as cli_security
from cds.cli import workitems as cli_workitems
from cds.cli.admin import jobs_app, queue_cmd, studies_app, workers_cmd
from cds.cli.common import REFUSED, USAGE, ConfigOpt, HomeOpt, fail, open_state_store, when
from cds.cli.deliveries import deliveries_app
from cds.cli.model import model_app
from cds.cli.notifications import notifications_app
from cds.cli.results import results_app
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
app.add_typer(studies_app, name="studies")


def _settings(config: Path | None, home: Path | None) -> Settings:
    try:
        return load_settings(config, home)
    except ConfigError as exc:
        raise fail(str(exc), USAGE) from None


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
    http = settings.http
    for name, path in (("tls_cert_file", http.tls_cert_file), ("tls_key_file", http.tls_key_file)):
        if path is not None and not path.is_file():
            raise fail(f"http.{name}: no such file {path}", REFUSED)
    configure_logging(settings.log.format, settings.log.level)
    try:
        node = Node(settings)
        node.start()
    except OSError as exc:
        cfg = settings.dicom
        raise fail(
            f"cannot start DICOM listener on {cfg.host}:{cfg.port} (dicom.host/dicom.port): "
            f"{exc.strerror or exc}",
            REFUSED,
        ) from None
    except CdsError as exc:
        raise fail(f"cannot start: {exc}", REFUSED) from None
    try:
        api = create_app(settings, node)
    except (OSError, ValueError) as exc:  # the session key, or the OIDC keys (jwks_file)
        node.stop()
        raise fail(f"cannot start the HTTP API: {exc}", REFUSED) from None
    try:
        uvicorn.run(
            api,
            host=http.host,
            port=http.port,
            log_config=None,
            access_log=False,
            # X-Forwarded-For is read by cds.api.peers, from http.trusted_proxies only
            # (uvicorn's own would believe any local peer)
            proxy_headers=False,
            # HTTPS when both are set (the settings refuse one without the other)
            ssl_certfile=str(http.tls_cert_file) if http.tls_cert_file else None,
            ssl_keyfile=str(http.tls_key_file) if http.tls_key_file else None,
        )
    finally:
        node.stop()  # normally already done by the app's shutdown


def _count(n: int, noun: str) -> str:
    """``1 rule``, ``2 rules``: a count with its noun in the right number."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _check_routing(file: Path) -> int:
    from cds.routing.rules import RoutingFileError, load_routing

    try:
        rf = load_routing(file)
    except RoutingFileError as exc:
        typer.echo(f"{file}: {len(exc.errors)} error(s)", err=True)
        for err in exc.errors:
            typer.echo(f"  {err}", err=True)
        return 1
    counts = ", ".join(
        _count(len(items), noun)
        for items, noun in (
            (rf.rules, "rule"),
            (rf.pipelines, "pipeline"),
            (rf.destinations, "destination"),
        )
    )
    typer.echo(f"{file}: OK ({counts})")
    return 0


def _is_routing_file(file: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    keys = {"rules", "pipelines", "destinations", "archives"}
    return isinstance(data, dict) and bool(keys & set(data))


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="YAML configuration file, or a routing file")],
) -> None:
    """Validate a configuration file or a routing file; list every error with its path.

    A configuration file is checked together with the routing file it names."""
    if _is_routing_file(file):
        raise typer.Exit(_check_routing(file))
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        typer.echo(f"{file}: {len(exc.errors)} error(s)", err=True)
        for err in exc.errors:
            typer.echo(f"  {err}", err=True)
        raise typer.Exit(1) from None
    if settings.routing.file is not None and _check_routing(settings.routing.file):
        raise typer.Exit(1)
    typer.echo(
        f"{file}: OK (DICOM {settings.dicom.ae_title}@{settings.dicom.host}:"
        f"{settings.dicom.port}, HTTP {settings.http.host}:{settings.http.port}, "
        f"home {settings.home})"
    )


@studies_app.callback(invoke_without_command=True)
def studies(
    ctx: typer.Context,
    *,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    state: Annotated[StudyState | None, typer.Option(help="only studies in this state")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List received studies with series and instance counts and their state."""
    if ctx.invoked_subcommand is not None:
        return
    from cds.api.schemas import StudyOut

    store = open_state_store(_settings(config, home))
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
        f"{'FROM AE':<16} {'LAST RECEIVED (UTC)':<19} RECEIVED BY"
    )
    typer.echo(head)
    for s in rows:
        reopened = f" (reopened x{s.reopened_count})" if s.reopened_count else ""
        typer.echo(
            f"{s.study_key:<17} {s.state.value:<11} {s.series_count:>6} {s.instance_count:>6} "
            f"{','.join(s.modalities)[:8]:<8} {s.calling_ae:<16} "
            f"{when(s.last_received_at):<19} {','.join(s.received_by) or '-'}{reopened}"
        )


@app.command()
def study(
    study_key: Annotated[str, typer.Argument(help="study key as listed by 'cds studies'")],
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Show one study: its series, its result objects (and where they went), its history."""
    store = open_state_store(_settings(config, home))
    try:
        detail = store.get_study(study_key)
        results = store.list_results(study_key)
        deliveries = store.list_deliveries(study_key=study_key, limit=100_000)
    finally:
        store.close()
    if detail is None:
        raise fail(f"no study with key {study_key!r}", REFUSED)
    s = detail.summary
    typer.echo(f"study {s.study_key}  state {s.state.value}  UID {s.study_uid}")
    typer.echo(f"  {s.series_count} series, {s.instance_count} instances")
    for r in detail.series:
        typer.echo(
            f"  series #{r.series_number if r.series_number is not None else '-'} "
            f"{r.modality:<4} {r.instance_count:>5} instances  {r.series_uid}"
        )
    if results:
        sent: dict[str, list[str]] = {}
        for d in deliveries:
            sent.setdefault(d.sop_uid, []).append(f"{d.destination} {d.state.value}")
        typer.echo("results:")
        for res in results:
            typer.echo(
                f"  {res.modality:<4} {res.state.value:<10} {res.job_kind:<32} "
                f"{', '.join(sent.get(res.sop_uid, [])) or 'not sent'}  {res.sop_uid}"
            )
    typer.echo("history:")
    for e in detail.events:
        typer.echo(f"  {when(e.at)}  {e.kind:<18} {e.detail}")


app.add_typer(jobs_app, name="jobs")
app.command("queue")(queue_cmd)
app.command("workers")(workers_cmd)
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(notifications_app, name="notifications")
app.add_typer(results_app, name="results")

app.add_typer(model_app, name="model")  # cds/cli/model.py: validate, list, schema, run


route_app = typer.Typer(help="Routing rules: explain what would run.", no_args_is_help=True)
app.add_typer(route_app, name="route")


@route_app.command("explain")
def route_explain(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders")],
    routing: Annotated[
        Path | None, typer.Option("--routing", help="routing file (default: routing.file)")
    ] = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    calling_ae: Annotated[
        str, typer.Option("--calling-ae", help="pretend the study came from this AE title")
    ] = "",
) -> None:
    """Dry-run routing: which rules match and why; nothing is run or sent.

    For each study: which rules matched, which did not and why, which series were
    selected, and what would be sent where."""
    from cds.inference.registry import declared_use_of
    from cds.routing.files import ExplainStopped, ReadBudget
    from cds.routing.router import explain_text, read_headers, route
    from cds.routing.rules import RoutingFileError, load_routing

    settings = _settings(config, home)
    file = routing or settings.routing.file
    if file is None:
        raise fail("no routing file: give --routing FILE or set routing.file in the config", USAGE)
    try:
        rf = load_routing(file)
    except RoutingFileError as exc:
        raise fail("\n".join(exc.errors), REFUSED) from None
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise fail(f"no such file or folder: {', '.join(missing)}", USAGE)
    budget = ReadBudget.of(settings.routing.explain_limits)  # local files: no roots
    try:
        studies, skipped = read_headers(paths, limits=settings.dicom.limits, budget=budget)
    except ExplainStopped as exc:
        raise fail(str(exc), USAGE) from None
    disabled = set(settings.routing.disabled_models)
    uses = declared_use_of(settings.inference.model_dirs)  # the manifests' declared use
    for study_series in studies.values():
        for s in study_series:
            s.calling_ae = calling_ae
        plan = route(study_series, rf, disabled_models=disabled, declared_use=uses)
        for line in explain_text(plan):
            typer.echo(line)
    for line in skipped:
        typer.echo(f"skipped {line}")
    if not studies:
        raise fail("no DICOM study found in the given paths", REFUSED)


cli_process.register(app)
cli_observatory.register(app)
cli_demo.register(app)
cli_audit.register(app)
cli_security.register(app)
cli_export.register(app)
cli_backfill.register(app)
cli_backup.register(app)
cli_doctor.register(app)
cli_conformance.register(app)
cli_certify.register(app)
cli_workitems.register(app)


def main() -> None:
    from cds.logging import configure_logging

    # a command's output is stdout's alone (``--json`` is parsed by machines): events of
    # the code it runs go to stderr, problems only; ``serve`` and ``process`` set their own
    configure_logging("console", "warning")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
