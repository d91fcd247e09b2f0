"""The outbox in the state store: results recorded with their deliveries, re-runs,
supersession, tries, the dead letter and its retry (issue 5, delivery)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cds.domain import DeliveryState, ResultObject, ResultState
from cds.store.sqlite import SqliteStore


def result(sop: str, modality: str = "SR", seed: str = "s1", study: str = "k1") -> ResultObject:
    return ResultObject(
        sop_uid=sop,
        study_key=study,
        study_uid="1.2.3",
        series_uid=f"{sop}.9",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
        modality=modality,
        path=f"{study}/{modality}/{sop}.dcm",
        job_kind="bone:cds-ref-ct-bone",
        source_series_uid="1.2.3.4",
        model_version="1.0.0",
        inputs_seed=seed,
        state=ResultState.CURRENT,
        created_at=0.0,
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state.db")


def test_one_pending_delivery_per_object_and_destination(store: SqliteStore) -> None:
    out = store.record_results([result("1.1"), result("1.2", "SEG")], ["pacs", "archive"], now=10)
    assert len(out) == 4
    assert {(d.sop_uid, d.destination) for d in out} == {
        ("1.1", "pacs"),
        ("1.1", "archive"),
        ("1.2", "pacs"),
        ("1.2", "archive"),
    }
    assert all(d.state is DeliveryState.PENDING and d.next_attempt_at == 10 for d in out)
    assert [d.sop_uid for d in store.due_deliveries(now=9)] == []
    assert len(store.due_deliveries(now=10)) == 4
    assert store.queue_stats().deliveries_pending == 4


def test_results_survive_reopening_the_store(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state.db")
    s.record_results([result("1.1")], ["pacs"], now=5)
    s.close()
    again = SqliteStore(tmp_path / "state.db")
    (d,) = again.due_deliveries(now=6)
    assert (d.sop_uid, d.destination, d.state) == ("1.1", "pacs", DeliveryState.PENDING)
    assert [r.sop_uid for r in again.current_results("k1", "bone:cds-ref-ct-bone", "1.2.3.4")] == [
        "1.1"
    ]


def test_tries_backoff_and_dead_letter(store: SqliteStore) -> None:
    (d,) = store.record_results([result("1.1")], ["pacs"], now=0)
    d = store.delivery_attempted(d.delivery_id, ok=False, error="refused", retry_at=5, now=1)
    assert (d.state, d.attempts, d.next_attempt_at, d.last_error) == (
        DeliveryState.PENDING,
        1,
        5,
        "refused",
    )
    assert store.due_deliveries(now=4) == []
    d = store.delivery_attempted(d.delivery_id, ok=False, error="refused again", now=6)
    assert (d.state, d.attempts, d.next_attempt_at) == (DeliveryState.DEAD, 2, None)
    assert store.due_deliveries(now=1e12) == []
    stats = store.queue_stats()
    assert (stats.deliveries_pending, stats.deliveries_dead) == (0, 1)
    # a late report on a dead delivery changes nothing
    assert store.delivery_attempted(d.delivery_id, ok=True, now=7).state is DeliveryState.DEAD


def test_retry_moves_dead_to_pending_and_is_recorded(store: SqliteStore) -> None:
    (d,) = store.record_results([result("1.1")], ["pacs"], now=0)
    store.delivery_attempted(d.delivery_id, ok=False, error="down", now=1)
    after, changed = store.retry_delivery(d.delivery_id, "by the admin", now=50)
    assert changed
    assert after.state is DeliveryState.PENDING
    assert after.attempts == 0
    assert [x.delivery_id for x in store.due_deliveries(now=50)] == [d.delivery_id]
    ok = store.delivery_attempted(d.delivery_id, ok=True, now=51)
    assert (ok.state, ok.delivered_at, ok.last_error) == (DeliveryState.DELIVERED, 51, None)
    _, again = store.retry_delivery(d.delivery_id, now=52)
    assert not again  # delivered: nothing to retry
    with pytest.raises(KeyError):
        store.retry_delivery("nope")


def test_rerun_of_same_object_does_not_resend_a_delivered_one(store: SqliteStore) -> None:
    (d,) = store.record_results([result("1.1")], ["pacs"], now=0)
    store.delivery_attempted(d.delivery_id, ok=True, now=1)
    (again,) = store.record_results([result("1.1")], ["pacs"], now=2)
    assert again.delivery_id == d.delivery_id
    assert again.state is DeliveryState.DELIVERED
    assert store.due_deliveries(now=10) == []


def test_rerun_restarts_a_dead_delivery(store: SqliteStore) -> None:
    (d,) = store.record_results([result("1.1")], ["pacs"], now=0)
    store.delivery_attempted(d.delivery_id, ok=False, error="down", now=1)
    (again,) = store.record_results([result("1.1")], ["pacs"], now=2)
    assert (again.state, again.attempts, again.next_attempt_at) == (DeliveryState.PENDING, 0, 2)


def test_superseding_cancels_unsent_and_keeps_history(store: SqliteStore) -> None:
    old_sent, _old_unsent = store.record_results(
        [result("1.1"), result("1.2", "SEG")], ["pacs"], now=0
    )
    store.delivery_attempted(old_sent.delivery_id, ok=True, now=1)
    store.record_results([result("2.1", seed="s2")], ["pacs"], superseded=["1.1", "1.2"], now=3)
    current = store.current_results("k1", "bone:cds-ref-ct-bone", "1.2.3.4")
    assert [r.sop_uid for r in current] == ["2.1"]
    states = {r.sop_uid: r.state for r in store.list_results("k1")}
    assert states == {
        "1.1": ResultState.SUPERSEDED,
        "1.2": ResultState.SUPERSEDED,
        "2.1": ResultState.CURRENT,
    }
    by_sop = {d.sop_uid: d for d in store.list_deliveries(study_key="k1")}
    assert by_sop["1.1"].state is DeliveryState.DELIVERED  # the PACS has it: a KOS withdraws it
    assert by_sop["1.2"].state is DeliveryState.CANCELLED
    assert "superseded" in (by_sop["1.2"].last_error or "")
    assert by_sop["2.1"].state is DeliveryState.PENDING


def test_list_deliveries_filters(store: SqliteStore) -> None:
    store.record_results([result("1.1")], ["pacs"], now=0)
    store.record_results([result("3.1", study="k2")], ["pacs", "archive"], now=1)
    assert len(store.list_deliveries()) == 3
    assert {d.sop_uid for d in store.list_deliveries(study_key="k2")} == {"3.1"}
    assert len(store.list_deliveries(destination="archive")) == 1
    assert store.list_deliveries(state=DeliveryState.DEAD) == []


def test_schema_5_outbox_gains_priority_in_place(tmp_path: Path) -> None:
    """A store written before delivery priorities (schema 5) opens with its pending
    deliveries intact, at priority 0, and still due."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '5');
        CREATE TABLE deliveries (delivery_id TEXT PRIMARY KEY, study_key TEXT NOT NULL,
            sop_uid TEXT NOT NULL, sop_class_uid TEXT NOT NULL, modality TEXT NOT NULL,
            path TEXT NOT NULL, destination TEXT NOT NULL, state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at REAL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, delivered_at REAL,
            UNIQUE (sop_uid, destination));
        INSERT INTO deliveries VALUES ('d1', 'k1', '1.2.3', '1.2', 'SR', 'k1/SR/x.dcm', 'pacs',
            'pending', 1, 'down', 50.0, 1.0, 1.0, NULL);
        """
    )
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        (d,) = store.due_deliveries(100.0)
        assert (d.delivery_id, d.priority, d.attempts) == ("d1", 0, 1)
        store.record_results([result("1.9", study="k1")], ["pacs"], now=60.0, priority=3)
        assert [x.sop_uid for x in store.due_deliveries(100.0)] == ["1.9", "1.2.3"]
    finally:
        store.close()
