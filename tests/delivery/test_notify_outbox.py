"""issue 25, item 1: the notification outbox, the same on SQLite and PostgreSQL (schema
11): a row written before it is sent, claimed once (a lease), tried with its outcome
recorded, dead after the last try, retried by an admin, and the same id queued again
leaves a sent one alone. FHIR goes through it as HL7 does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds.delivery.notify import Notifier
from cds.findings import Finding
from cds.routing.rules import parse_routing
from cds.store.notifications import NotificationOutbox
from cds.store.sqlite import SqliteStore

from .test_notify import BLEED, Clock, Ris, result


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        s: Any = SqliteStore(tmp_path / "state.db", node="a")
    else:
        from cds.store.postgres import PostgresStore

        s = PostgresStore(request.getfixturevalue("postgres_url"), node="a")
    try:
        yield s
    finally:
        s.close()


def test_queue_claim_attempt_dead_retry(store: Any) -> None:
    box = NotificationOutbox(store)
    row, fresh = box.queue("n1", "k1", "ris", fmt="hl7v2", findings=1, body="MSH|x", now=10.0)
    assert fresh
    assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 0, 10.0)
    assert box.claim(9.0) == []  # not due yet
    (taken,) = box.claim(10.0)
    assert taken.claimed_by == "a"
    assert box.claim(10.0) == []  # leased: nobody takes it twice
    after = box.attempted("n1", ok=False, error="ACK AE", retry_at=12.0, now=10.5)
    assert (after.state, after.attempts, after.last_error) == ("pending", 1, "ACK AE")
    assert box.next_due() == 12.0
    (taken,) = box.claim(12.0)
    dead = box.attempted("n1", ok=False, error="ACK AR", now=12.5)
    assert (dead.state, dead.attempts) == ("dead", 2)
    assert box.claim(1e9) == []
    assert box.counts() == {"pending": 0, "sent": 0, "dead": 1}
    assert box.retry_dead("ris", now=20.0) == ["n1"]
    (taken,) = box.claim(20.0)
    sent = box.attempted("n1", ok=True, now=21.0)
    assert (sent.state, sent.sent_at, sent.last_error) == ("sent", 21.0, None)
    _, fresh = box.queue("n1", "k1", "ris", fmt="hl7v2", findings=1, body="MSH|y", now=30.0)
    assert not fresh  # sent already: the same id is not sent again
    assert box.get("n1").body == "MSH|x"  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        box.retry("nope")
    assert [n.notification_id for n in box.find(state="sent", target="ris")] == ["n1"]


def test_a_killed_node_takes_back_its_leases_at_start(store: Any) -> None:
    box = NotificationOutbox(store)
    box.queue("n1", "k1", "ris", fmt="fhir-r4", findings=1, body="{}", now=10.0)
    box.claim(10.0)  # sent (maybe), then killed before the record
    assert box.claim(11.0) == []
    assert box.release(11.0) == 1
    (again,) = box.claim(11.0)
    assert again.notification_id == "n1"


def test_fhir_report_goes_through_the_outbox(tmp_path: Path) -> None:
    """The FHIR report is written first, then POSTed; its identifier stays the same."""
    s = SqliteStore(tmp_path / "state.db")
    ris = Ris()
    try:
        rf = parse_routing(
            {
                "notifications": {"worklist": {"url": ris.url}},
                "pipelines": {
                    "p": {
                        "model": "m",
                        "results": ["SR"],
                        "notify": {"target": "worklist", "findings": ["any"]},
                    }
                },
            },
            "test",
        )
        n = Notifier(
            s,
            lambda: rf.notifications,
            Clock(),
            notify_of=lambda p: x.notify if (x := rf.pipelines.get(p)) else None,
        )
        assert n.after_result("k1", "1.2.3", "p", result(Finding(BLEED, 0.9, True)))
        (row,) = n.outbox.find()
        assert (row.format, row.state) == ("fhir-r4", "pending")
        assert ris.requests == []
        assert n.tick() == 1
        (req,) = ris.requests
        assert json.loads(req["body"])["identifier"] == json.loads(row.body)["identifier"]
        assert n.outbox.find()[0].state == "sent"
    finally:
        ris.close()
        s.close()


def test_cli_lists_and_retries_a_dead_notification(tmp_path: Path) -> None:
    """``cds notifications`` lists without the message; ``retry`` queues a dead one again,
    refuses a sent or unknown one with a message naming it (exit 1), never a traceback."""
    from typer.testing import CliRunner

    from cds.cli.main import app as cli_app

    home = tmp_path / "home"
    home.mkdir()
    s = SqliteStore(home / "state.db")
    box = NotificationOutbox(s)
    box.queue("dead1", "k1", "ris", fmt="hl7v2", findings=1, body="MSH|secret", now=1.0)
    box.claim(1.0)
    box.attempted("dead1", ok=False, error="ACK AR", now=2.0)
    s.close()
    runner = CliRunner()
    args = ["--home", str(home)]
    listed = runner.invoke(cli_app, ["notifications", "--state", "dead", *args])
    assert listed.exit_code == 0, listed.output
    assert "dead1" in listed.output
    assert "ACK AR" in listed.output
    as_json = runner.invoke(cli_app, ["notifications", "--json", *args])
    (row,) = json.loads(as_json.output)
    assert row["state"] == "dead"
    assert "body" not in row
    assert "secret" not in as_json.output
    res = runner.invoke(cli_app, ["notifications", "retry", "dead1", *args])
    assert res.exit_code == 0, res.output
    assert "queued again" in res.output
    res = runner.invoke(cli_app, ["notifications", "retry", "nope", *args])
    assert res.exit_code == 1
    assert "no notification with id 'nope'" in res.output
    bad = runner.invoke(cli_app, ["notifications", "--state", "lost", *args])
    assert bad.exit_code == 2
    assert "--state" in bad.output
