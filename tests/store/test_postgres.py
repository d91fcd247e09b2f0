"""issue 21 (item 1): what only the PostgreSQL store has. Several nodes share it: queued
jobs and due deliveries are claimed with ``FOR UPDATE SKIP LOCKED``, each by exactly
one connection; instances recorded by several connections at once are counted once.
The schema and its numbered migrations are SQLite's; a server that cannot be reached
is said in one line naming ``store.url``, never with its password."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from cds.config import Settings
from cds.domain import DeliveryState, JobState, StoreOutcome
from cds.errors import StoreError
from cds.store import open_store

from ..conftest import free_port
from .test_contract import result
from .test_sqlite import rec

psycopg = pytest.importorskip("psycopg")

from cds.store.postgres import PING_TIMEOUT_S, PostgresStore  # noqa: E402 (after the skip)
from cds.store.postgres_schema import SCHEMA_VERSION, postgres_sql  # noqa: E402

from .test_migrations import SCHEMA_1  # noqa: E402

T = TypeVar("T")
NODES = 6


def at_once(url: str, work: Callable[[PostgresStore, int], list[T]]) -> list[list[T]]:
    """``work`` on NODES connections of their own, started together; what each got."""
    stores = [PostgresStore(url) for _ in range(NODES)]
    start = threading.Barrier(NODES)
    got: list[list[T]] = [[] for _ in stores]
    errors: list[BaseException] = []

    def node(i: int) -> None:
        try:
            start.wait()
            got[i] = work(stores[i], i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=node, args=(i,)) for i in range(NODES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []
    return got


def test_nodes_claiming_jobs_at_once_claim_each_exactly_once(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    store.record_instance(rec(1))
    jobs = {store.create_job("k1", f"kind{n % 3}", now=float(n)).job_id for n in range(120)}

    def claim_all(s: PostgresStore, _: int) -> list[str]:
        mine: list[str] = []
        while claimed := s.claim_jobs(limit=3):
            mine += [j.job_id for j in claimed]
        return mine

    got = at_once(postgres_url, claim_all)
    counts = Counter(job_id for mine in got for job_id in mine)
    assert set(counts) == jobs
    assert set(counts.values()) == {1}  # none claimed twice
    assert sum(1 for mine in got if mine) > 1  # the work was shared
    running = store.list_jobs(state=JobState.RUNNING, limit=1000)
    assert len(running) == 120
    assert {j.attempts for j in running} == {1}
    assert store.claim_jobs() == []
    store.close()


def test_a_cancelled_job_is_never_claimed(pg_store: PostgresStore) -> None:
    pg_store.record_instance(rec(1))
    a = pg_store.create_job("k1", "blobs", now=1.0)
    b = pg_store.create_job("k1", "blobs", now=2.0)
    pg_store.cancel_job(a.job_id, now=2.5)
    (claimed,) = pg_store.claim_jobs(limit=5, now=3.0)
    assert (claimed.job_id, claimed.state, claimed.started_at) == (b.job_id, JobState.RUNNING, 3.0)
    detail = pg_store.get_study("k1")
    assert detail is not None
    assert [e.kind for e in detail.events if e.kind.startswith("job_")] == [
        "job_queued",
        "job_queued",
        "job_cancelled",
        "job_running",
    ]


def test_nodes_claiming_deliveries_at_once_claim_each_exactly_once(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    store.record_instance(rec(1))
    out = store.record_results([result(n) for n in range(40)], ["pacs", "archive"], now=10.0)

    def claim_all(s: PostgresStore, _: int) -> list[str]:
        mine: list[str] = []
        while claimed := s.claim_deliveries(now=20.0, limit=4, lease_s=60.0):
            mine += [d.delivery_id for d in claimed]
        return mine

    got = at_once(postgres_url, claim_all)
    counts = Counter(d for mine in got for d in mine)
    assert set(counts) == {d.delivery_id for d in out}
    assert set(counts.values()) == {1}
    # leased, still pending: due again when the lease ends (a node died holding them)
    assert store.claim_deliveries(now=79.0) == []
    assert len(store.claim_deliveries(now=80.0, lease_s=60.0)) == 80
    sent = store.delivery_attempted(out[0].delivery_id, ok=True, now=81.0)
    assert sent.state is DeliveryState.DELIVERED  # a try ends the lease
    assert len(store.claim_deliveries(now=140.0)) == 79
    store.close()


def test_claimed_deliveries_come_highest_priority_first(pg_store: PostgresStore) -> None:
    pg_store.record_instance(rec(1))
    pg_store.record_results([result(1)], ["pacs"], now=10.0)
    pg_store.record_results([result(2)], ["pacs"], now=11.0, priority=5)
    pg_store.record_results([result(3)], ["pacs"], now=12.0)
    claimed = pg_store.claim_deliveries(now=20.0, lease_s=30.0)
    assert [d.sop_uid for d in claimed] == ["2.25.2", "2.25.1", "2.25.3"]
    assert {d.next_attempt_at for d in claimed} == {50.0}


def test_nodes_receiving_one_study_at_once_count_each_instance_once(postgres_url: str) -> None:
    def receive(s: PostgresStore, i: int) -> list[StoreOutcome]:
        # every node gets the first instance (a modality sent it to each), then its own
        own = 100 + 10 * i
        return [s.record_instance(rec(n)).outcome for n in (1, *range(own, own + 10))]

    got = at_once(postgres_url, receive)
    outcomes = Counter(o for mine in got for o in mine)
    assert outcomes == {StoreOutcome.NEW: 1 + 10 * NODES, StoreOutcome.DUPLICATE: NODES - 1}
    store = PostgresStore(postgres_url)
    (s,) = store.list_studies()
    assert (s.instance_count, s.series_count) == (1 + 10 * NODES, 1)
    detail = store.get_study("k1")
    assert detail is not None
    assert [e.kind for e in detail.events] == ["receiving"]
    assert store.metrics_snapshot(()).instances_received["duplicate"] == NODES - 1
    store.close()


# --- schema: SQLite's tables and steps ------------------------------------
def _sql(url: str, *statements: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as db:
        rows: list[tuple[object, ...]] = []
        for s in statements:
            cur = db.execute(s)
            rows = cur.fetchall() if cur.description else []
        return rows


def test_a_new_database_records_this_schema_version(pg_store: PostgresStore) -> None:
    assert pg_store.schema_version == SCHEMA_VERSION


def test_a_database_written_by_a_newer_cds_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE meta SET value = %s", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than"):
        PostgresStore(postgres_url)
    assert _sql(postgres_url, "SELECT value FROM meta") == [(str(SCHEMA_VERSION + 1),)]


def test_a_schema_1_database_takes_the_shared_steps_with_its_data_kept(
    postgres_url: str,
) -> None:
    """The first cds' tables (in PostgreSQL's types) and a job of then: the steps of
    sqlite_schema.MIGRATIONS add their columns in place."""
    _sql(
        postgres_url,
        *(postgres_sql(s) for s in SCHEMA_1.split(";") if s.strip()),
        "INSERT INTO meta VALUES ('schema_version', '1')",
        "INSERT INTO jobs (job_id, study_key, kind, state, created_at, updated_at, attempts) "
        "VALUES ('j1', 'k1', 'blobs', 'done', 1.5, 2.5, 1)",
    )
    store = PostgresStore(postgres_url)
    try:
        assert store.schema_version == SCHEMA_VERSION
        job = store.get_job("j1")
        assert job is not None
        assert (job.state, job.attempts, job.started_at, job.objects) == (
            JobState.DONE,
            1,
            None,
            (),
        )
        columns = _sql(
            postgres_url,
            "SELECT table_name || '.' || column_name FROM information_schema.columns "
            "WHERE column_name IN ('started_at', 'finished_at', 'objects', 'priority', "
            "'corrected_box') AND table_name IN ('deliveries', 'feedback', 'jobs') ORDER BY 1",
        )
        assert [c for (c,) in columns] == [
            "deliveries.priority",
            "feedback.corrected_box",
            "jobs.finished_at",
            "jobs.objects",
            "jobs.started_at",
        ]
    finally:
        store.close()


def test_times_are_double_precision(pg_store: PostgresStore) -> None:
    pg_store.record_instance(rec(1, received_at=1_750_000_000.123456))
    (s,) = pg_store.list_studies()
    assert s.first_received_at == 1_750_000_000.123456


# --- opening: settings, errors without the password ------------------------
def test_an_unreachable_server_is_named_by_its_setting_without_password(tmp_path: Path) -> None:
    url = f"postgresql://cds:s3cret-pw@127.0.0.1:{free_port()}/cds"
    settings = Settings(home=tmp_path, store={"backend": "postgresql", "url": url})  # type: ignore[arg-type]
    with pytest.raises(StoreError) as caught:
        open_store(settings)
    message = str(caught.value)
    assert "store.url" in message
    assert "postgresql://cds:***@127.0.0.1" in message
    assert "s3cret-pw" not in message
    assert caught.value.__cause__ is None  # said in one line, no chained traceback


def test_open_store_picks_postgresql_from_the_settings(tmp_path: Path, postgres_url: str) -> None:
    settings = Settings(home=tmp_path, store={"backend": "postgresql", "url": postgres_url})  # type: ignore[arg-type]
    store = open_store(settings)
    try:
        assert isinstance(store, PostgresStore)
        assert store.ping()
        assert not (tmp_path / "state.db").exists()
    finally:
        store.close()
    assert not store.ping()


def test_without_psycopg_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "cds.store.postgres", None)
    settings = Settings(home=tmp_path, store={"backend": "postgresql", "url": "postgresql://h/db"})  # type: ignore[arg-type]
    with pytest.raises(StoreError, match=r"store.backend is postgresql .*cds\[postgres\]"):
        open_store(settings)


def test_a_lost_connection_fails_one_call_and_is_opened_again(
    pg_store: PostgresStore, postgres_url: str
) -> None:
    """The server ended the session (a restart, an administrator): the call that meets
    it fails with StoreError, its transaction rolled back; the next one reconnects."""
    pg_store.record_instance(rec(1))
    end_other_sessions(postgres_url)
    with pytest.raises(StoreError, match="state store error"):
        pg_store.record_instance(rec(2))
    assert pg_store.record_instance(rec(2)).outcome is StoreOutcome.NEW
    (s,) = pg_store.list_studies()
    assert s.instance_count == 2


def end_other_sessions(url: str) -> None:
    """End every session on ``url``'s database but this one, as a restart would; return
    once they have ended (a backend ends on its own time)."""
    _sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    for _ in range(100):
        others = _sql(
            url,
            "SELECT COUNT(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        if others == [(0,)]:
            return
        time.sleep(0.05)


# --- ping (/health) ----------------------------------------------------------
def test_ping_opens_a_session_the_server_ended_again(
    pg_store: PostgresStore, postgres_url: str
) -> None:
    """issue 21 (item 3): /health after a server restart says the store answers (it
    does), rather than reporting the stale session."""
    assert pg_store.ping()
    end_other_sessions(postgres_url)
    assert pg_store.ping()
    assert pg_store.record_instance(rec(1)).outcome is StoreOutcome.NEW


def test_ping_gives_up_within_its_timeout_on_a_server_that_does_not_answer(
    pg_store: PostgresStore,
) -> None:
    """A server whose host takes the connection but never answers (hung, or a stale
    address after a failover): /health says unreachable in about PING_TIMEOUT_S, not
    after the store's own connect timeout."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)  # the kernel completes the handshake; nothing ever answers
        port = hole.getsockname()[1]
        pg_store._url = f"postgresql://cds@127.0.0.1:{port}/cds"  # where it reconnects
        pg_store._db.close()  # the session lost
        started = time.monotonic()
        assert not pg_store.ping()
        assert time.monotonic() - started < PING_TIMEOUT_S + 1.5
