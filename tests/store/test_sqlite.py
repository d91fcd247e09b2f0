"""issue 2: the state store keeps studies, series, instances, versions and jobs across restarts.

issue 21: on both stores, SQLite and PostgreSQL (``store`` is parametrised, conftest.py)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from cds.domain import InstanceRecord, JobState, StoreOutcome, StudyState
from cds.store.base import StateStore

from .conftest import StoreOpener


def rec(n: int = 1, **kw: object) -> InstanceRecord:
    base = InstanceRecord(
        study_uid="1.2.3",
        series_uid="1.2.3.1",
        sop_uid=f"1.2.3.1.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        series_number=1,
        study_key="k1",
        path=f"studies/k1/s1/1.2.3.1.{n}.aaaa.dcm",
        size=100,
        sha256=f"{n:064d}",
        calling_ae="MOD",
        received_at=1000.0 + n,
        quiet_time_s=10.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_new_instances_build_study_and_series(store: StateStore) -> None:
    for n in range(3):
        assert store.record_instance(rec(n)).outcome is StoreOutcome.NEW
    store.record_instance(rec(9, series_uid="1.2.3.2", modality="SR", series_number=2))
    (s,) = store.list_studies()
    assert (s.state, s.series_count, s.instance_count) == (StudyState.RECEIVING, 2, 4)
    assert s.modalities == ("CT", "SR")
    assert s.complete_due_at == 1009.0 + 10.0
    detail = store.get_study("k1")
    assert detail is not None
    assert [x.instance_count for x in detail.series] == [3, 1]


def test_same_bytes_is_a_duplicate_and_changes_nothing(store: StateStore) -> None:
    store.record_instance(rec(1))
    again = store.record_instance(rec(1, received_at=5000.0))
    assert again.outcome is StoreOutcome.DUPLICATE
    (s,) = store.list_studies()
    assert s.instance_count == 1
    assert s.complete_due_at == 1011.0  # a duplicate does not move the completeness deadline


def test_other_bytes_newest_wins_and_old_version_kept(store: StateStore) -> None:
    store.record_instance(rec(1))
    r = store.record_instance(
        rec(1, sha256="f" * 64, path="studies/k1/s1/v2.dcm", received_at=2000.0)
    )
    assert (r.outcome, r.version) == (StoreOutcome.REPLACED, 2)
    assert store.find_instance("1.2.3.1.1") == ("f" * 64, "studies/k1/s1/v2.dcm")
    assert store.known_paths() == {"studies/k1/s1/v2.dcm", "studies/k1/s1/1.2.3.1.1.aaaa.dcm"}
    detail = store.get_study("k1")
    assert detail is not None
    assert detail.summary.instance_count == 1
    assert any(e.kind == "instance_replaced" for e in detail.events)


def test_quiet_time_completion_and_late_instance_reopens(store: StateStore) -> None:
    store.record_instance(rec(1))  # due at 1011
    assert store.studies_due(1010.0) == []
    assert store.studies_due(1011.0) == ["k1"]
    assert store.complete_study("k1", 1011.0)
    assert not store.complete_study("k1", 1012.0)  # only once
    r = store.record_instance(rec(2, received_at=1100.0))
    assert r.reopened
    (s,) = store.list_studies()
    assert (s.state, s.reopened_count, s.complete_due_at) == (StudyState.RECEIVING, 1, 1110.0)
    detail = store.get_study("k1")
    assert detail is not None
    assert [e.kind for e in detail.events] == ["receiving", "complete", "reopened"]


def test_instance_arriving_late_in_older_association_does_not_shorten_deadline(
    store: StateStore,
) -> None:
    store.record_instance(rec(1, received_at=2000.0))
    store.record_instance(rec(2, received_at=1990.0))  # clock order across threads
    (s,) = store.list_studies()
    assert s.complete_due_at == 2010.0
    assert s.last_received_at == 2000.0


def test_state_survives_reopening_the_store(open_store: StoreOpener) -> None:
    a = open_store()
    a.record_instance(rec(1))
    a.close()
    b = open_store()
    assert b.studies_due(2000.0) == ["k1"]
    assert b.find_instance("1.2.3.1.1") is not None


def test_jobs_life_cycle(store: StateStore) -> None:
    store.record_instance(rec(1))
    job = store.create_job("k1", "inference", now=5.0)
    assert job.state is JobState.QUEUED
    running = store.set_job_state(job.job_id, JobState.RUNNING, now=6.0)
    assert running.attempts == 1
    failed = store.set_job_state(job.job_id, JobState.FAILED, error="model crashed", now=7.0)
    assert (failed.state, failed.error) == (JobState.FAILED, "model crashed")
    assert [j.job_id for j in store.list_jobs(state=JobState.FAILED)] == [job.job_id]
    assert store.list_jobs(study_key="other") == []
    with pytest.raises(KeyError):
        store.set_job_state("nope", JobState.DONE)


def test_set_study_state_and_counts(store: StateStore) -> None:
    store.record_instance(rec(1))
    store.set_study_state("k1", StudyState.PROCESSING, "routing")
    counts = store.count_studies_by_state()
    assert counts[StudyState.PROCESSING] == 1
    assert counts[StudyState.RECEIVING] == 0
    with pytest.raises(KeyError):
        store.set_study_state("nope", StudyState.DONE)


def test_concurrent_writers_lose_nothing(store: StateStore) -> None:
    def worker(t: int) -> None:
        for n in range(50):
            store.record_instance(rec(t * 1000 + n, sha256=f"{t * 1000 + n:064d}"))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (s,) = store.list_studies()
    assert s.instance_count == 200


def test_ping(store: StateStore) -> None:
    assert store.ping()
    store.close()
    assert not store.ping()
