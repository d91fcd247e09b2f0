"""issue 4 (admin): the store keeps job timings, cancels atomically, counts the queue,
and purges a study's instance records while keeping the study and its history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cds.domain import JobState, ObjectOutcome, StoreOutcome, StudyState
from cds.store.sqlite import SCHEMA_VERSION, SqliteStore

from ..store.test_sqlite import rec


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state.db")


def test_schema_1_store_gains_job_timings_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE jobs (job_id TEXT PRIMARY KEY, study_key TEXT NOT NULL,
            kind TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT);
        INSERT INTO jobs VALUES ('j1', 'k1', 'p:m', 'done', 1.0, 5.0, 1, NULL);
        """
    )
    db.commit()
    db.close()

    store = SqliteStore(path)
    (job,) = store.list_jobs()
    assert (job.job_id, job.state, job.started_at, job.finished_at) == (
        "j1",
        JobState.DONE,
        None,
        None,
    )
    running = store.set_job_state(
        store.create_job("k1", "p:m", now=10.0).job_id, JobState.RUNNING, now=12.0
    )
    assert running.started_at == 12.0
    store.close()
    version = sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()[0]
    assert version == str(SCHEMA_VERSION) == "13"
    again = SqliteStore(path)  # opening again changes nothing; schema 3 tables are there
    assert again.list_deliveries() == []
    assert again.list_results("k1") == []
    again.close()


def test_schema_6_store_keeps_its_jobs_and_records_what_each_made(tmp_path: Path) -> None:
    """issue 16: schema 7 adds jobs.objects in place; a job ends partial with the
    outcome of each of its objects, read back as recorded."""
    path = tmp_path / "old.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    for newer in ("objects", "claimed_by", "lease_until"):  # schema 7 and 9
        db.execute(f"ALTER TABLE jobs DROP COLUMN {newer}")
    db.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    db.execute("INSERT INTO jobs VALUES ('j1', 'k1', 'p:m', 'failed', 1.0, 5.0, 1, 'x', 2, 5)")
    db.commit()
    db.close()
    store = SqliteStore(path)
    assert [(j.job_id, j.objects) for j in store.list_jobs()] == [("j1", ())]
    job = store.create_job("k1", "p:m", now=10.0)
    outcomes = (
        ObjectOutcome("SR", made=True),
        ObjectOutcome("GSPS", made=False, failed=True, reason="ValueError: invalid value"),
        ObjectOutcome("SEG", made=False, reason="nothing to encode"),
    )
    store.set_job_state(job.job_id, JobState.RUNNING, now=11.0)
    ended = store.set_job_state(
        job.job_id, JobState.PARTIAL, error="GSPS not made", now=12.0, objects=outcomes
    )
    assert (ended.state, ended.objects, ended.finished_at) == (JobState.PARTIAL, outcomes, 12.0)
    assert store.get_job(job.job_id) == ended
    assert store.list_jobs(state=JobState.PARTIAL) == [ended]
    store.close()
    version = sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()[0]
    assert version == str(SCHEMA_VERSION)


def test_job_timings_follow_its_states(store: SqliteStore) -> None:
    job = store.create_job("k1", "p:m", now=10.0)
    assert (job.started_at, job.finished_at) == (None, None)
    running = store.set_job_state(job.job_id, JobState.RUNNING, now=12.0)
    assert (running.started_at, running.finished_at, running.attempts) == (12.0, None, 1)
    failed = store.set_job_state(job.job_id, JobState.FAILED, error="boom", now=15.0)
    assert (failed.started_at, failed.finished_at) == (12.0, 15.0)
    requeued = store.set_job_state(job.job_id, JobState.QUEUED, now=20.0)
    assert (requeued.started_at, requeued.finished_at) == (None, None)
    assert store.get_job(job.job_id) == requeued
    assert store.get_job("nope") is None


def test_cancel_is_atomic_and_final(store: SqliteStore) -> None:
    job = store.create_job("k1", "p:m", now=1.0)
    store.set_job_state(job.job_id, JobState.RUNNING, now=2.0)
    cancelled, changed = store.cancel_job(job.job_id, "by admin", now=3.0)
    assert changed
    assert (cancelled.state, cancelled.finished_at) == (JobState.CANCELLED, 3.0)
    # the worker reports done afterwards: the job stays cancelled, and it learns so here
    after = store.set_job_state(job.job_id, JobState.DONE, now=4.0)
    assert after.state is JobState.CANCELLED
    assert store.cancel_job(job.job_id)[1] is False

    done = store.create_job("k1", "p:m")
    store.set_job_state(done.job_id, JobState.DONE)
    again, changed = store.cancel_job(done.job_id)
    assert (again.state, changed) == (JobState.DONE, False)
    with pytest.raises(KeyError):
        store.cancel_job("nope")


def test_queue_stats(store: SqliteStore) -> None:
    assert store.queue_stats().jobs_queued == 0
    assert store.queue_stats().oldest_queued_at is None
    store.record_instance(rec(1))  # k1 receiving
    store.record_instance(rec(2, study_uid="9.9", study_key="k2", series_uid="9.9.1"))
    store.complete_study("k2", now=10_000.0)
    store.create_job("k1", "a", now=50.0)
    store.create_job("k1", "b", now=40.0)
    run = store.create_job("k2", "c", now=30.0)
    store.set_job_state(run.job_id, JobState.RUNNING)
    q = store.queue_stats()
    assert (q.jobs_queued, q.jobs_running, q.oldest_queued_at) == (2, 1, 40.0)
    assert (q.studies_receiving, q.studies_complete_waiting) == (1, 1)


def test_purge_forgets_instances_keeps_study_and_history(store: SqliteStore) -> None:
    store.record_instance(rec(1))
    store.record_instance(rec(2))
    replaced = rec(1, sha256="f" * 64, path="studies/k1/s1/1.2.3.1.1.ffff.dcm", received_at=1005.0)
    assert store.record_instance(replaced).outcome is StoreOutcome.REPLACED
    paths = store.instance_paths("k1")
    assert paths == sorted([rec(1).path, rec(2).path, "studies/k1/s1/1.2.3.1.1.ffff.dcm"])

    assert store.mark_purged("k1", paths, "by admin", now=2000.0) is True
    detail = store.get_study("k1")
    assert detail is not None
    s = detail.summary
    assert (s.state, s.instance_count, s.series_count) == (StudyState.PURGED, 0, 0)
    kinds = [e.kind for e in detail.events]
    assert (kinds[0], kinds[-1]) == ("receiving", "purged")
    assert "instance_replaced" in kinds
    assert store.known_paths() == set()
    assert store.find_instance("1.2.3.1.1") is None
    assert store.studies_due(10**9) == []

    # sent again: a new instance at version 1, the study re-opened; replacing it works
    again = store.record_instance(rec(1, received_at=3000.0))
    assert (again.outcome, again.version, again.reopened) == (StoreOutcome.NEW, 1, True)
    assert store.record_instance(replaced).outcome is StoreOutcome.REPLACED
    s2 = store.get_study("k1")
    assert s2 is not None
    assert (s2.summary.state, s2.summary.instance_count) == (StudyState.RECEIVING, 1)


def test_purge_keeps_instances_that_arrived_meanwhile(store: SqliteStore) -> None:
    store.record_instance(rec(1))
    paths = store.instance_paths("k1")
    store.record_instance(rec(2))  # arrives after the files were listed
    assert store.mark_purged("k1", paths, "by admin") is False
    detail = store.get_study("k1")
    assert detail is not None
    assert (detail.summary.state, detail.summary.instance_count) == (StudyState.RECEIVING, 1)
    assert "received during the purge kept" in detail.events[-1].detail
    with pytest.raises(KeyError):
        store.mark_purged("nope", [], "x")
