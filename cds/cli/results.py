"""``cds results``: the result objects with their state (current, superseded,
retracted, rejection), and ``cds results retract`` to withdraw one everywhere.

Both work on the state store directly, with or without the node running (like
``cds deliveries retry``): the rejection note and the withdrawing notifications wait in
the outboxes, which the running node's workers send at their next look (every
``delivery.poll_interval_s``; ``POST /api/results/{uid}/retract`` wakes them at once).
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer

from cds.cli.admin import JsonOpt, LimitOpt, _settings
from cds.cli.common import REFUSED, USAGE, ConfigOpt, HomeOpt, fail, open_state_store, when
from cds.domain import ResultState

results_app = typer.Typer(
    help="Result objects and their state: list them (the default), retract one everywhere.",
    add_completion=False,
)
_STATES = ", ".join(s.value for s in ResultState)


@results_app.callback(invoke_without_command=True)
def results(
    ctx: typer.Context,
    *,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    study: Annotated[str | None, typer.Option("--study", help="only this study key")] = None,
    model: Annotated[str | None, typer.Option("--model", help="only this model")] = None,
    state: Annotated[str | None, typer.Option("--state", help=f"only ({_STATES})")] = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """List result objects, newest first, with their state."""
    if ctx.invoked_subcommand is not None:
        return
    from cds.retraction import result_row  # noqa: PLC0415 (cds --help stays fast)
    from cds.store.retractions import RetractionLog  # noqa: PLC0415

    if state is not None and state not in {s.value for s in ResultState}:
        raise fail(f"--state: one of {_STATES}, not {state!r}", USAGE)
    store = open_state_store(_settings(config, home))
    try:
        rows = RetractionLog(store).results(study, model, state, limit)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([result_row(r) for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no results")
        return
    typer.echo(f"{'SOP INSTANCE UID':<64} {'STUDY KEY':<16} {'KIND':<4} {'STATE':<10} JOB")
    for r in rows:
        typer.echo(
            f"{r.sop_uid:<64} {r.study_key:<16} {r.modality:<4} {r.state.value:<10} {r.job_kind}"
        )


@results_app.command("retract")
def results_retract(
    result_uid: Annotated[
        str, typer.Argument(help="SOP Instance UID of any object of the result ('cds results')")
    ],
    *,
    reason: Annotated[
        str, typer.Option("--reason", help="why it is withdrawn (kept with it, never logged)")
    ],
    by: Annotated[
        str | None, typer.Option("--by", help="who retracts it (default: the login name)")
    ] = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw a result everywhere: PACS, RIS and FHIR targets; its state becomes 'retracted'.

    An IOCM rejection note to the PACS destinations it went to, a withdrawn ORU
    (OBR-25/OBX-11 W) or an entered-in-error FHIR report to every target notified of it."""
    from cds.audit import AuditTrail  # noqa: PLC0415
    from cds.errors import AdminError, CdsError, Refusal  # noqa: PLC0415
    from cds.retraction import check_reason, retract_result  # noqa: PLC0415

    try:
        check_reason(reason)
    except ValueError as exc:
        raise fail(f"--{exc}", USAGE) from None
    settings = _settings(config, home)
    store = open_state_store(settings)
    trail = AuditTrail(settings.audit_path)
    try:
        done = retract_result(
            store, settings.results_path, trail, result_uid, reason=reason,
            who=f"cli:{by or getpass.getuser()}", lang=settings.results.language,
        )  # fmt: skip
    except AdminError as exc:
        code = 4 if exc.refusal is Refusal.NOT_FOUND else REFUSED
        raise fail(str(exc), code) from None
    except CdsError as exc:
        raise fail(f"result {result_uid}: {exc}", REFUSED) from None
    finally:
        trail.close()
        store.close()
    if as_json:
        typer.echo(json.dumps(done.as_dict(), indent=2))
        return
    r = done.retraction
    typer.echo(
        f"retracted {r.objects} object(s) of {r.job_kind} in study {r.study_key} "
        f"at {when(r.retracted_at)}: rejection note {r.kos_uid} queued to "
        f"{', '.join(done.destinations) or 'no destination'}; "
        f"{len(done.notifications)} withdrawal notification(s) queued"
    )
