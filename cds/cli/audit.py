"""``cds audit``: query the audit trail (the default), verify its chain, export it as
DICOM audit messages.

All three read ``audit.path`` (default ``<home>/audit``) directly, with the node
running or stopped: records are appended under a file lock and whole lines
only are read.
"""

from __future__ import annotations

import json
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from cds.audit import AuditEvent, AuditRecord, AuditTrail, cli_actor
from cds.audit.atna import to_atna
from cds.audit.query import AuditQuery, as_json, query
from cds.audit.verify import verify
from cds.cli.admin import JsonOpt, _settings
from cds.cli.common import REFUSED, USAGE, ConfigOpt, HomeOpt, fail
from cds.config import Settings
from cds.observatory.stats import parse_when

audit_app = typer.Typer(
    help="The audit trail: query it (the default), verify its chain, export it.",
    add_completion=False,
)
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="from this date or ISO 8601 date-time (UTC)")
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="before this date or date-time")]
EventOpt = Annotated[
    list[AuditEvent] | None, typer.Option("--event", help="only this event (repeatable)")
]
StudyOpt = Annotated[str | None, typer.Option("--study", help="only records of this study key")]
WhoOpt = Annotated[
    str | None,
    typer.Option("--who", help="only this actor: 'system', 'AE:PACS', 'user:anna', or 'AE:'"),
]


def _path(config: Path | None, home: Path | None) -> Path:
    return _settings(config, home).audit_path


def _query(
    since: str | None,
    until: str | None,
    events: list[AuditEvent] | None,
    study: str | None,
    who: str | None,
) -> AuditQuery:
    try:
        start = None if since is None else parse_when(since, "--since")
        end = None if until is None else parse_when(until, "--until")
    except ValueError as exc:
        raise fail(str(exc), USAGE) from None
    return AuditQuery(start, end, frozenset(events or ()), study, who)


def _line(r: AuditRecord) -> str:
    when = datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    detail = " ".join(f"{k}={v}" for k, v in sorted(r.detail.items()))
    outcome = "ok" if r.outcome.value == "0" else f"FAIL({r.outcome.value})"
    return (
        f"{r.seq:>7} {when} {r.event.value:<20} {outcome:<8} {r.who:<20} "
        f"{r.study_key or '-':<16} {r.where or '-':<20} {detail}"
    )[:300]


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    *,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    event: EventOpt = None,
    study: StudyOpt = None,
    who: WhoOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="the last N matching")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List audit records, oldest first (the last --limit of those that match)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = query(_path(config, home), _query(since, until, event, study, who), limit)
    if as_json:
        typer.echo(json.dumps([_as_json(r) for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no audit record matches")
        return
    typer.echo(f"{'SEQ':>7} {'WHEN (UTC)':<19} {'EVENT':<20} {'OUTCOME':<8} {'WHO':<20} "
               f"{'STUDY':<16} {'WHERE':<20} DETAIL")  # fmt: skip
    for r in rows:
        typer.echo(_line(r))


def _as_json(r: AuditRecord) -> dict[str, object]:
    return as_json(r)


@audit_app.command("verify")
def audit_verify(config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Check the hash chain and the signed head (exit 0 when intact).

    Exit 1 names the first bad record and why (edited, missing, out of order, truncated,
    torn)."""
    path = _path(config, home)
    v = verify(path)
    if v.ok:
        typer.echo(f"audit trail intact: {v.records} record(s), last seq {v.last_seq} ({path})")
        return
    where = f"seq {v.bad_seq}" if v.bad_seq is not None else "head"
    line = f" (line {v.line})" if v.line is not None else ""
    raise fail(
        f"audit trail NOT intact at {where}{line}: {v.reason}; "
        f"{v.records} record(s) verified before it ({path})",
        REFUSED,
    )


@audit_app.command("export")
def audit_export(
    *,
    out: Annotated[
        Path | None, typer.Option("--out", help="file to write (default stdout)")
    ] = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    event: EventOpt = None,
    study: StudyOpt = None,
    who: WhoOpt = None,
) -> None:
    """Write the matching records as DICOM audit messages (PS3.15 A.5 XML).

    One ``AuditMessage`` per record inside an ``AuditMessages`` element."""
    settings = _settings(config, home)
    rows = query(settings.audit_path, _query(since, until, event, study, who))
    source = f"{settings.audit.syslog.app_name if settings.audit.syslog else 'cds'}@" + (
        socket.gethostname()
    )
    parts = [b'<?xml version="1.0" encoding="UTF-8"?>\n<AuditMessages>\n']
    for r in rows:
        xml = to_atna(r, source_id=source, ae_title=settings.dicom.ae_title)
        parts.append(xml.split(b"?>", 1)[1].strip() + b"\n")
    parts.append(b"</AuditMessages>\n")
    data = b"".join(parts)
    _record_export(settings, len(rows), out)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}", REFUSED) from None
    typer.echo(f"wrote {out}: {len(rows)} audit message(s)")


def _record_export(settings: Settings, count: int, out: Path | None) -> None:
    trail = AuditTrail(settings.audit_path)
    try:
        trail.record(
            AuditEvent.EXPORT,
            who=cli_actor(),
            detail={"what": "audit trail (DICOM audit messages)", "records": count,
                    "to": str(out) if out is not None else "stdout"},
        )  # fmt: skip
    finally:
        trail.close()


def register(app: typer.Typer) -> None:
    """Add ``cds audit`` to ``app``."""
    app.add_typer(audit_app, name="audit")
