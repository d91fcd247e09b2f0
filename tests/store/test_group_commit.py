"""issue 19, item 5: the rows of concurrent associations are committed together
(cds.store.group), each caller getting its own row's result or error, and a batch
recorded in one transaction is recorded as the same rows one at a time would be."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import pytest

from cds.domain import InstanceRecord, RecordResult, StoreOutcome, StudyState
from cds.errors import StoreError
from cds.orchestrator import Node
from cds.store.base import StateStore
from cds.store.group import GroupCommit
from cds.store.sqlite import SqliteStore
from tests.conftest import make_settings
from tests.inference.conftest import SERIES
from tests.test_pipeline import send_files

from .pgcluster import with_database
from .test_sqlite import rec


def _batch() -> list[InstanceRecord]:
    """New (in a study completed before: reopened), new in another study, the same
    bytes again, other bytes (a replacement), and one more: in that order."""
    return [
        rec(1),
        rec(2, study_uid="1.2.4", series_uid="1.2.4.1", study_key="k2"),
        rec(1),
        rec(1, sha256="f" * 64, path="studies/k1/s1/1.2.3.1.1.ffff.dcm", received_at=1050.0),
        rec(3, received_at=1100.0),
    ]


def _state(store: StateStore) -> list[tuple[object, ...]]:
    out = []
    for s in store.list_studies():
        d = store.get_study(s.study_key)
        assert d is not None
        out.append((asdict(s), [(e.kind, e.detail) for e in d.events]))
    return sorted(out, key=str)


@pytest.fixture
def two_stores(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[StateStore, StateStore]]:
    """Two empty stores of the backend under test (two files; two databases)."""
    if backend == "sqlite":
        pair = (SqliteStore(tmp_path / "a.db"), SqliteStore(tmp_path / "b.db"))
        yield pair
        for s in pair:
            s.close()
    else:
        import psycopg

        from cds.store.postgres import PostgresStore

        server = request.getfixturevalue("postgres_server")
        names = [f"cds_test_{os.getpid()}_group_{i}" for i in (1, 2)]
        with psycopg.connect(server, autocommit=True) as admin:
            for name in names:
                admin.execute(f'CREATE DATABASE "{name}"')
        pair = tuple(PostgresStore(with_database(server, n)) for n in names)
        try:
            yield pair  # type: ignore[misc]
        finally:
            for s in pair:
                s.close()
            with psycopg.connect(server, autocommit=True) as admin:
                for name in names:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_batch_records_what_one_at_a_time_records(
    two_stores: tuple[StateStore, StateStore],
) -> None:
    one, batched = two_stores
    for store in (one, batched):  # a study completed before the batch
        store.record_instance(rec(9, received_at=900.0))
        assert store.complete_study("k1", 910.0)
    singly = [one.record_instance(r) for r in _batch()]
    together = batched.record_instances(_batch())
    assert together == singly
    assert [r.outcome for r in singly if isinstance(r, RecordResult)] == [
        StoreOutcome.NEW,
        StoreOutcome.NEW,
        StoreOutcome.DUPLICATE,
        StoreOutcome.REPLACED,
        StoreOutcome.NEW,
    ]
    # the first late instance reopens the study completed before
    assert [isinstance(r, RecordResult) and r.reopened for r in singly] == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert _state(batched) == _state(one)
    assert batched.find_instance("1.2.3.1.1") == ("f" * 64, "studies/k1/s1/1.2.3.1.1.ffff.dcm")


def test_a_row_that_fails_the_batch_fails_alone(tmp_path: Path) -> None:
    """The one transaction fails: the store records each in its own; only the row that
    cannot be recorded gets an error (its C-STORE is answered 0xA700)."""
    store = SqliteStore(tmp_path / "s.db")
    real = SqliteStore._record

    def record(self: SqliteStore, db: sqlite3.Connection, r: InstanceRecord) -> RecordResult:
        if r.sop_uid == "1.2.3.1.2":
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, db, r)

    with mock.patch.object(SqliteStore, "_record", record):
        got = store.record_instances([rec(1), rec(2), rec(3)])
    assert isinstance(got[1], StoreError)
    assert [g.outcome for g in (got[0], got[2]) if isinstance(g, RecordResult)] == [
        StoreOutcome.NEW,
        StoreOutcome.NEW,
    ]
    assert store.find_instance("1.2.3.1.2") is None
    assert store.find_instance("1.2.3.1.3") is not None


class _Gated:
    """A store whose first commit waits until released, so that others queue."""

    def __init__(self, inner: StateStore, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.inner = inner
        self.fail = fail
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[str]] = []

    def record_instances(self, recs: Sequence[InstanceRecord]) -> list[RecordResult | StoreError]:
        self.batches.append([r.sop_uid for r in recs])
        self.entered.set()
        assert self.release.wait(10)
        out = self.inner.record_instances(recs)
        return [
            StoreError("refused") if r.sop_uid in self.fail else o
            for r, o in zip(recs, out, strict=True)
        ]


def _concurrently(group: GroupCommit, gated: _Gated, n: int) -> dict[str, object]:
    got: dict[str, object] = {}

    def one(i: int) -> None:
        try:
            got[str(i)] = group.record(rec(i))
        except Exception as exc:
            got[str(i)] = exc

    first = threading.Thread(target=one, args=(0,))
    first.start()
    assert gated.entered.wait(10)  # the first leads, its commit held
    others = [threading.Thread(target=one, args=(i,)) for i in range(1, n)]
    for t in others:
        t.start()
    deadline = threading.Event()
    while len(group._queued) < n - 1 and not deadline.wait(0.01):
        pass
    gated.release.set()
    for t in [first, *others]:
        t.join(10)
    return got


def test_rows_that_come_together_are_committed_together(store: StateStore) -> None:
    gated = _Gated(store)
    group = GroupCommit(gated)  # type: ignore[arg-type]
    got = _concurrently(group, gated, 5)
    assert gated.batches[0] == ["1.2.3.1.0"]
    assert sorted(gated.batches[1]) == [f"1.2.3.1.{i}" for i in range(1, 5)]
    assert (group.stats.commits, group.stats.rows, group.stats.largest) == (2, 5, 4)
    for i in range(5):  # each caller its own row's result
        r = got[str(i)]
        assert isinstance(r, RecordResult)
        assert r.outcome is StoreOutcome.NEW
        assert store.find_instance(f"1.2.3.1.{i}") is not None
    (s,) = store.list_studies()
    assert (s.state, s.instance_count) == (StudyState.RECEIVING, 5)


def test_each_caller_gets_its_own_rows_error(store: StateStore) -> None:
    gated = _Gated(store, fail={"1.2.3.1.3"})
    group = GroupCommit(gated)  # type: ignore[arg-type]
    got = _concurrently(group, gated, 5)
    assert isinstance(got["3"], StoreError)
    assert all(isinstance(got[str(i)], RecordResult) for i in (0, 1, 2, 4))


def test_a_store_that_breaks_fails_its_batch_and_the_next_row_leads_again(
    store: StateStore,
) -> None:
    class Broken:
        calls = 0

        def record_instances(self, recs: Sequence[InstanceRecord]) -> list[object]:
            Broken.calls += 1
            if Broken.calls == 1:
                raise ValueError("a bug")
            return [] if Broken.calls == 2 else list(store.record_instances(recs))

    group = GroupCommit(Broken())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a bug"):
        group.record(rec(1))
    with pytest.raises(RuntimeError, match="a result per row"):
        group.record(rec(2))
    r = group.record(rec(3))
    assert r.outcome is StoreOutcome.NEW


def test_a_lone_row_that_fails_is_not_tried_twice(tmp_path: Path) -> None:
    """A store that is down is asked once per row, as before group commits."""
    store = SqliteStore(tmp_path / "s.db")
    calls: list[str] = []

    def record(self: SqliteStore, db: sqlite3.Connection, r: InstanceRecord) -> RecordResult:
        calls.append(r.sop_uid)
        raise sqlite3.OperationalError("disk I/O error")

    with mock.patch.object(SqliteStore, "_record", record):
        (got,) = store.record_instances([rec(1)])
    assert isinstance(got, StoreError)
    assert calls == ["1.2.3.1.1"]


def test_the_node_shows_its_row_commits_in_health(tmp_path: Path) -> None:
    """One association: each row its own commit (nothing waits for a batch to fill)."""
    if not SERIES.is_dir():
        pytest.skip(f"shared DICOM corpus not found at {SERIES}")
    node = Node(make_settings(tmp_path / "home"))
    node.start()
    try:
        send_files(node, sorted(SERIES.iterdir())[:3])
        rows = node.health()["store"]["instance_rows"]
    finally:
        node.stop()
    assert rows == {"commits": 3, "rows": 3, "largest": 1}
