"""``cds notifications``: the notification outbox (urgent findings to a RIS or worklist,
FHIR or HL7 v2), and retrying what gave up.

Both commands work on the state store directly, with or without the node running (like
``cds deliveries``): a retry is a mark the running node's notifier picks up at its next
look (every ``delivery.poll_interval_s``, 1 s by default; ``POST
/api/notifications/{id}/retry`` wakes it at once).
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from cds.cli.admin import JsonOpt, LimitOpt, _duration, _settings
from cds.cli.common import REFUSED, USAGE, ConfigOpt, HomeOpt, fail, open_state_store, when
from cds.store.notifications import STATES, Notification, NotificationOutbox

notifications_app = typer.Typer(
    help="Urgent-finding notifications (FHIR, HL7 v2): list them (the default), retry dead ones.",
    add_completion=False,
)
StateOpt = Annotated[
    str | None, typer.Option("--state", help=f"only those in this state ({', '.join(STATES)})")
]
StudyOpt = Annotated[str | None, typer.Option("--study", help="only those of this study key")]
TargetOpt = Annotated[str | None, typer.Option("--target", help="only those to this target")]


def _line(n: Notification, now: float) -> str:
    if n.state == "pending" and n.next_attempt_at is not None:
        at = f"next in {_duration(n.next_attempt_at - now)}" if n.next_attempt_at > now else "due"
    else:
        at = when(n.sent_at) if n.sent_at else "-"
    error = f"  {n.last_error[:90]}" if n.last_error and n.state != "sent" else ""
    return (
        f"{n.notification_id:<20} {n.study_key:<16} {n.format:<7} {n.target:<12} "
        f"{n.state:<7} {n.attempts:>5}  {at}{error}"
    )


@notifications_app.callback(invoke_without_command=True)
def notifications(
    ctx: typer.Context,
    *,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    state: StateOpt = None,
    study: StudyOpt = None,
    target: TargetOpt = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """List notifications (one message to one target), newest first."""
    if ctx.invoked_subcommand is not None:
        return
    if state is not None and state not in STATES:
        raise fail(f"--state: one of {', '.join(STATES)}, not {state!r}", USAGE)
    store = open_state_store(_settings(config, home))
    try:
        rows = NotificationOutbox(store).find(study, state, target, limit)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([n.as_dict() for n in rows], indent=2))
        return
    if not rows:
        typer.echo("no notifications")
        return
    typer.echo(
        f"{'NOTIFICATION ID':<20} {'STUDY KEY':<16} {'FORMAT':<7} {'TARGET':<12} "
        f"{'STATE':<7} {'TRIES':>5}  WHEN / LAST ERROR"
    )
    now = time.time()
    for n in rows:
        typer.echo(_line(n, now))


@notifications_app.command("retry")
def notifications_retry(
    notification_id: Annotated[
        str | None,
        typer.Argument(help="id of a dead notification, as 'cds notifications' lists it"),
    ] = None,
    all_dead: Annotated[
        bool, typer.Option("--all-dead", help="every dead notification (after an outage)")
    ] = False,
    target: TargetOpt = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Try a dead notification again now (or every dead one with --all-dead)."""
    if (notification_id is None) == (not all_dead):
        raise fail("give a notification id, or --all-dead (not both)", USAGE)
    store = open_state_store(_settings(config, home))
    try:
        outbox = NotificationOutbox(store)
        if all_dead:
            retried = outbox.retry_dead(target)
            typer.echo(f"{len(retried)} dead notifications queued again")
            return
        assert notification_id is not None
        try:
            n, changed = outbox.retry(notification_id, "by admin")
        except KeyError:
            raise fail(f"no notification with id {notification_id!r}", REFUSED) from None
        if not changed:
            raise fail(f"notification {notification_id} was sent already: not sent again", REFUSED)
    finally:
        store.close()
    typer.echo(f"notification {n.notification_id} ({n.format} to {n.target}) queued again")
