"""``cds deliveries``: the outbox of result objects, and retrying what gave up.

Both commands work on the state store directly, with or without the node
running (like ``cds jobs cancel``): a retry is a mark the running node's
delivery worker picks up at its next look (``delivery.poll_interval_s``).
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from cds import admin
from cds.api.schemas import DeliveryOut
from cds.cli.admin import (
    JsonOpt,
    LimitOpt,
    _duration,
    _settings,
)
from cds.cli.common import REFUSED, USAGE, ConfigOpt, HomeOpt, fail, open_state_store, when
from cds.domain import Delivery, DeliveryState
from cds.errors import AdminError

deliveries_app = typer.Typer(
    help="Deliveries of result objects to the PACS: list them (the default), retry dead ones.",
    add_completion=False,
)
StateOpt = Annotated[
    DeliveryState | None, typer.Option("--state", help="only deliveries in this state")
]
StudyOpt = Annotated[str | None, typer.Option("--study", help="only those of this study key")]
DestOpt = Annotated[
    str | None, typer.Option("--destination", help="only those to this destination")
]


def _line(d: Delivery, now: float) -> str:
    if d.state is DeliveryState.PENDING and d.next_attempt_at is not None:
        at = f"next in {_duration(d.next_attempt_at - now)}" if d.next_attempt_at > now else "due"
    else:
        at = when(d.delivered_at) if d.delivered_at else "-"
    error = (
        f"  {d.last_error[:90]}" if d.last_error and d.state is not DeliveryState.DELIVERED else ""
    )
    return (
        f"{d.delivery_id:<32} {d.study_key:<16} {d.modality:<4} {d.destination:<12} "
        f"{d.state.value:<9} {d.attempts:>5}  {at}{error}"
    )


@deliveries_app.callback(invoke_without_command=True)
def deliveries(
    ctx: typer.Context,
    *,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    state: StateOpt = None,
    study: StudyOpt = None,
    destination: DestOpt = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """List deliveries (one result object to one destination), newest first."""
    if ctx.invoked_subcommand is not None:
        return
    store = open_state_store(_settings(config, home))
    try:
        rows = admin.list_deliveries(store, state, study, destination, limit)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([DeliveryOut.of(d).model_dump(mode="json") for d in rows], indent=2))
        return
    if not rows:
        typer.echo("no deliveries")
        return
    typer.echo(
        f"{'DELIVERY ID':<32} {'STUDY KEY':<16} {'KIND':<4} {'DESTINATION':<12} "
        f"{'STATE':<9} {'TRIES':>5}  WHEN / LAST ERROR"
    )
    now = time.time()
    for d in rows:
        typer.echo(_line(d, now))


@deliveries_app.command("retry")
def deliveries_retry(
    delivery_id: Annotated[
        str | None, typer.Argument(help="id of a dead delivery, as 'cds deliveries' lists it")
    ] = None,
    all_dead: Annotated[
        bool, typer.Option("--all-dead", help="every dead delivery (after a PACS outage)")
    ] = False,
    destination: DestOpt = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Try a dead delivery again now (or every dead one with --all-dead)."""
    if (delivery_id is None) == (not all_dead):
        raise fail("give a delivery id, or --all-dead (not both)", USAGE)
    store = open_state_store(_settings(config, home))
    try:
        if all_dead:
            retried = admin.retry_dead_deliveries(store, destination)
            typer.echo(f"{len(retried)} dead deliveries queued again")
            return
        assert delivery_id is not None
        d = admin.retry_delivery(store, delivery_id)
    except AdminError as exc:
        raise fail(str(exc), REFUSED) from None
    finally:
        store.close()
    typer.echo(f"delivery {d.delivery_id} ({d.modality} to {d.destination}) queued again")
