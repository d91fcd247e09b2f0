"""``cds observatory``: the figures per model (``show``) and the de-identified export
for a regional or national observatory (``export``). Both read the state store, with
or without the node running.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer

from cds.audit import AuditEvent, AuditTrail, cli_actor
from cds.cli.admin import JsonOpt, _duration, _settings
from cds.cli.common import REFUSED, USAGE, ConfigOpt, HomeOpt, fail, open_state_store
from cds.observatory.export import DEFAULT_MIN_COUNT, build_export, to_csv
from cds.observatory.stats import (
    Bucket,
    ModelStats,
    Records,
    load_records,
    model_stats,
    parse_when,
    stats_dict,
)

observatory_app = typer.Typer(
    help="How each model is doing: figures per model version (show), de-identified export.",
    add_completion=False,
    no_args_is_help=True,
)

SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="from this date (YYYY-MM-DD, UTC) or ISO date-time on"),
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="up to this date or date-time (excluded)")
]


class ExportFormat(enum.StrEnum):
    JSON = "json"
    CSV = "csv"


def _range(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    try:
        start = None if since is None else parse_when(since, "--since")
        end = None if until is None else parse_when(until, "--until")
    except ValueError as exc:
        raise fail(str(exc), USAGE) from None
    if start is not None and end is not None and end <= start:
        raise fail(f"--until ({until}) must come after --since ({since})", USAGE)
    return start, end


def _records(config: Path | None, home: Path | None) -> Records:
    store = open_state_store(_settings(config, home))
    try:
        return load_records(store)
    finally:
        store.close()


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.0f}%"


def _line(s: ModelStats) -> str:
    ttr, run = s.time_to_result_s, s.job_run_time_s
    return (
        f"{s.model[:24]:<24} {s.version[:10]:<10} {s.period:<10} {s.studies:>7} {s.findings:>8} "
        f"{_pct(s.positive_rate):>5} {_pct(s.reviewed_rate):>6} {_pct(s.accept_rate):>5} "
        f"{_pct(s.correct_rate):>5} {_pct(s.reject_rate):>5} "
        f"{_duration(s.median_time_to_feedback_s):>8} "
        f"{_duration(ttr.p50):>7} {_duration(ttr.p90):>7} {_duration(run.p50):>7}"
    )


@observatory_app.command("show")
def show(
    *,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    bucket: Annotated[
        Bucket, typer.Option("--bucket", help="one line per model version and day/week/month")
    ] = Bucket.WEEK,
    as_json: JsonOpt = False,
) -> None:
    """Figures per model version and period.

    Studies, findings, positive rate, feedback rates, median time to feedback, time to
    result (p50, p90) and job run time (p50)."""
    start, end = _range(since, until)
    rows = model_stats(_records(config, home), bucket, start, end)
    if as_json:
        typer.echo(json.dumps([stats_dict(s) for s in rows], indent=2))
        return
    if not rows:
        typer.echo("no results or findings in this period")
        return
    typer.echo(
        f"{'MODEL':<24} {'VERSION':<10} {'PERIOD':<10} {'STUDIES':>7} {'FINDINGS':>8} "
        f"{'POS':>5} {'REVIEW':>6} {'ACC':>5} {'CORR':>5} {'REJ':>5} {'TO FB':>8} "
        f"{'TTR p50':>7} {'TTR p90':>7} {'RUN p50':>7}"
    )
    for s in rows:
        typer.echo(_line(s))
    typer.echo(
        "POS: findings present; REVIEW: findings with feedback; ACC/CORR/REJ: current "
        "verdicts over reviewed; TO FB: median time to first feedback; TTR: study complete "
        "-> first result; RUN: job run time"
    )


@observatory_app.command("export")
def export(
    *,
    out: Annotated[Path, typer.Option("--out", help="file to write (replaced if it exists)")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="json or csv")] = (
        ExportFormat.JSON
    ),
    since: SinceOpt = None,
    until: UntilOpt = None,
    min_count: Annotated[
        int,
        typer.Option(
            "--min-count",
            min=1,
            help="suppress any figure computed from fewer studies or findings than this",
        ),
    ] = DEFAULT_MIN_COUNT,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Write aggregated, de-identified figures per model version and ISO week.

    No patient, study or user identifiers, no date finer than the week, small counts
    suppressed. --since and --until are widened to whole ISO weeks."""
    start, end = _range(since, until)
    data = build_export(_records(config, home), min_count=min_count, since=start, until=end)
    text = json.dumps(data, indent=2) + "\n" if fmt is ExportFormat.JSON else to_csv(data)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write the export to {out}: {exc.strerror or exc}", REFUSED) from None
    suppressed = sum(
        1 for row in data["rows"] for v in row.values() if isinstance(v, dict) and v["suppressed"]
    )
    _record_export(config, home, out, fmt, rows=len(data["rows"]), models=len(data["models"]))
    typer.echo(
        f"wrote {out}: {len(data['rows'])} model-week row(s), {len(data['models'])} model "
        f"version(s), {suppressed} figure(s) suppressed (fewer than {min_count})"
    )


def _record_export(
    config: Path | None, home: Path | None, out: Path, fmt: ExportFormat, *, rows: int, models: int
) -> None:
    """An export leaves the node: the audit trail says who wrote what, where."""
    trail = AuditTrail(_settings(config, home).audit_path)
    try:
        trail.record(
            AuditEvent.EXPORT,
            who=cli_actor(),
            detail={"what": "observatory figures (aggregated, de-identified)",
                    "format": fmt.value, "to": str(out.resolve()), "rows": rows,
                    "model_versions": models},
        )  # fmt: skip
    finally:
        trail.close()


def register(app: typer.Typer) -> None:
    """Add ``cds observatory`` to ``app``."""
    app.add_typer(observatory_app, name="observatory")
