"""issue 21 (item 1): one contract for every role of the state store, run against SQLite
and PostgreSQL (``store`` is parametrised, conftest.py), and one scenario both must
answer alike, value for value."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest

from cds.domain import (
    DeliveryState,
    Feedback,
    FeedbackAction,
    FindingRecord,
    JobState,
    ObjectOutcome,
    ResultObject,
    ResultState,
    RunRecord,
    StudyState,
)
from cds.store.base import StateStore
from cds.store.sqlite import SqliteStore

from .test_sqlite import rec

BOUNDS = (0.5, 1.0, 10.0, 100.0)


def result(n: int, **kw: object) -> ResultObject:
    base = ResultObject(
        sop_uid=f"2.25.{n}",
        study_key="k1",
        study_uid="1.2.3",
        series_uid="2.25.900",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
        modality="SR",
        path=f"k1/{n}.dcm",
        job_kind="blobs:model",
        source_series_uid="1.2.3.1",
        model_version="1.0.0",
        inputs_seed="seed",
        state=ResultState.CURRENT,
        created_at=0.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def finding(uid: str, *, present: bool = True, at: float = 1.0) -> FindingRecord:
    return FindingRecord(
        tracking_uid=uid,
        result_sop_uid="2.25.1",
        study_key="k1",
        job_kind="blobs:model",
        model="model",
        version="1.0.0",
        sha256="a" * 64,
        label_scheme="99CDS",
        label_value="CDS-0003",
        label_meaning="Focal hyperdensity",
        display_en="Focal hyperdensity",
        display_fr="Hyperdensité focale",
        present=present,
        score=0.75,
        created_at=at,
    )


def feedback(n: int, uid: str, action: FeedbackAction, at: float) -> Feedback:
    return Feedback(
        feedback_id=f"fb{n}",
        tracking_uid=uid,
        result_sop_uid="2.25.1",
        study_key="k1",
        action=action,
        reason="",
        corrected_scheme=None,
        corrected_value=None,
        corrected_meaning=None,
        who="alice",
        source="review",
        at=at,
        model="model",
        version="1.0.0",
        sha256="a" * 64,
    )


def run(key: str, at: float, model: str = "model", seconds: float = 0.7) -> RunRecord:
    return RunRecord(
        run_key=key,
        at=at,
        model=model,
        version="1.0.0",
        provider="CPUExecutionProvider",
        seconds=seconds,
        images=3,
        modality="CT",
        body_part="CHEST",
        manufacturer="ACME",
        scanner_model="X1",
        protocol="chest",
        slice_thickness=1.25,
        kvp=None,
        pixel_spacing=0.7,
        scores={"CDS-0003": 0.75},
    )


# --- InstanceStore and StudyStore ----------------------------------------
def test_instance_paths_and_listing_by_state(store: StateStore) -> None:
    store.record_instance(rec(1))
    store.record_instance(rec(1, sha256="f" * 64, path="v2.dcm", received_at=1500.0))
    store.record_instance(rec(2, study_key="k2", study_uid="1.2.4", series_uid="1.2.4.1"))
    assert store.instance_paths("k1") == sorted(["studies/k1/s1/1.2.3.1.1.aaaa.dcm", "v2.dcm"])
    assert store.find_instance("nope") is None
    assert store.get_study("nope") is None
    store.set_study_state("k2", StudyState.DONE, "routed")
    assert [s.study_key for s in store.list_studies()] == ["k1", "k2"]  # newest first
    assert [s.study_key for s in store.list_studies(StudyState.DONE)] == ["k2"]
    assert [s.study_key for s in store.list_studies(limit=1, offset=1)] == ["k2"]
    store.record_event("k1", "rerun_requested", "by alice", now=3000.0)
    detail = store.get_study("k1")
    assert detail is not None
    assert (detail.events[-1].kind, detail.events[-1].detail) == ("rerun_requested", "by alice")


def test_a_purge_forgets_instances_and_keeps_those_received_meanwhile(store: StateStore) -> None:
    for n in (1, 2):
        store.record_instance(rec(n))
    store.record_instance(rec(1, sha256="f" * 64, path="v2.dcm", received_at=1500.0))
    with pytest.raises(KeyError):
        store.mark_purged("nope", [], "retention")
    old = ["studies/k1/s1/1.2.3.1.1.aaaa.dcm", "v2.dcm"]
    assert not store.mark_purged("k1", old, "retention", now=2000.0)  # 1.2.3.1.2 arrived
    assert store.instance_paths("k1") == ["studies/k1/s1/1.2.3.1.2.aaaa.dcm"]
    assert store.mark_purged("k1", ["studies/k1/s1/1.2.3.1.2.aaaa.dcm"], "again", now=2001.0)
    (s,) = store.list_studies()
    assert (s.state, s.instance_count, s.series_count) == (StudyState.PURGED, 0, 0)
    assert store.known_paths() == set()
    detail = store.get_study("k1")
    assert detail is not None
    assert [e.kind for e in detail.events][-2:] == ["purged", "purged"]


# --- JobStore ------------------------------------------------------------
def test_jobs_cancel_objects_and_queue_stats(store: StateStore) -> None:
    store.record_instance(rec(1))
    a = store.create_job("k1", "blobs:model", now=10.0)
    b = store.create_job("k1", "seg:model", now=11.0)
    assert [j.job_id for j in store.list_jobs()] == [b.job_id, a.job_id]  # newest first
    stats = store.queue_stats()
    assert (stats.jobs_queued, stats.jobs_running, stats.oldest_queued_at) == (2, 0, 10.0)
    assert stats.studies_receiving == 1
    job, cancelled = store.cancel_job(a.job_id, "by alice", now=12.0)
    assert cancelled
    assert (job.state, job.finished_at) == (JobState.CANCELLED, 12.0)
    assert store.cancel_job(a.job_id)[1] is False
    # a worker learns of the cancellation when it moves the job on
    assert store.set_job_state(a.job_id, JobState.RUNNING).state is JobState.CANCELLED
    with pytest.raises(KeyError):
        store.cancel_job("nope")
    store.set_job_state(b.job_id, JobState.RUNNING, now=13.0)
    objects = (ObjectOutcome("SR", True), ObjectOutcome("SEG", False, True, "encoder failed"))
    done = store.set_job_state(b.job_id, JobState.PARTIAL, now=15.0, objects=objects)
    assert (done.started_at, done.finished_at, done.objects) == (13.0, 15.0, objects)
    assert store.get_job(b.job_id) == done
    assert store.get_job("nope") is None
    assert store.queue_stats().jobs_queued == 0


# --- Outbox --------------------------------------------------------------
def test_results_and_their_deliveries_in_one_outbox(store: StateStore) -> None:
    store.record_instance(rec(1))
    out = store.record_results([result(1), result(2)], ["pacs", "archive"], now=100.0)
    assert [(d.sop_uid, d.destination, d.state) for d in out] == [
        ("2.25.1", "pacs", DeliveryState.PENDING),
        ("2.25.1", "archive", DeliveryState.PENDING),
        ("2.25.2", "pacs", DeliveryState.PENDING),
        ("2.25.2", "archive", DeliveryState.PENDING),
    ]
    urgent = store.record_results([result(3)], ["pacs"], now=101.0, priority=5)
    assert [r.sop_uid for r in store.list_results("k1")] == ["2.25.1", "2.25.2", "2.25.3"]
    assert len(store.current_results("k1", "blobs:model", "1.2.3.1")) == 3
    due = store.due_deliveries(200.0)
    assert due[0].delivery_id == urgent[0].delivery_id  # highest priority first
    assert store.due_deliveries(99.0) == []
    assert store.next_delivery_due() == 100.0
    first = out[0]
    sent = store.delivery_attempted(first.delivery_id, ok=True, now=110.0)
    assert (sent.state, sent.attempts, sent.delivered_at) == (DeliveryState.DELIVERED, 1, 110.0)
    later = store.delivery_attempted(out[1].delivery_id, ok=False, error="refused", retry_at=500)
    assert (later.state, later.last_error, later.next_attempt_at) == (
        DeliveryState.PENDING,
        "refused",
        500.0,
    )
    assert store.deliveries_due_now("archive", 120.0) == 1
    dead = store.delivery_attempted(out[1].delivery_id, ok=False, error="refused", now=121.0)
    assert dead.state is DeliveryState.DEAD
    retried, changed = store.retry_delivery(dead.delivery_id, "by alice", now=130.0)
    assert changed
    assert (retried.state, retried.attempts, retried.next_attempt_at) == (
        DeliveryState.PENDING,
        0,
        130.0,
    )
    assert store.retry_delivery(first.delivery_id)[1] is False  # delivered stays
    with pytest.raises(KeyError):
        store.retry_delivery("nope")
    with pytest.raises(KeyError):
        store.delivery_attempted("nope", ok=True)
    assert store.get_delivery("nope") is None
    # the same object again: delivered stays delivered, the others start afresh
    again = store.record_results([result(1)], ["pacs", "archive"], now=140.0)
    assert [d.state for d in again] == [DeliveryState.DELIVERED, DeliveryState.PENDING]
    # superseded before it left: its pending deliveries are cancelled
    store.record_results([result(4)], ["pacs"], superseded=["2.25.2"], now=150.0)
    assert {d.state for d in store.list_deliveries(study_key="k1", destination="pacs")} >= {
        DeliveryState.CANCELLED
    }
    assert [r.sop_uid for r in store.current_results("k1", "blobs:model", "1.2.3.1")] == [
        "2.25.1",
        "2.25.3",
        "2.25.4",
    ]
    assert len(store.list_deliveries(state=DeliveryState.DELIVERED)) == 1
    assert len(store.list_deliveries(limit=2)) == 2
    stats = store.queue_stats()
    assert (stats.deliveries_pending, stats.deliveries_dead) == (3, 0)


# --- FeedbackStore -------------------------------------------------------
def test_findings_and_append_only_feedback(store: StateStore) -> None:
    store.record_instance(rec(1))
    store.record_findings([finding("2.25.11"), finding("2.25.10"), finding("2.25.12", at=0.5)])
    store.record_findings([replace(finding("2.25.11"), score=0.1)])  # known: left as it is
    assert [f.tracking_uid for f in store.list_findings("k1")] == [
        "2.25.12",
        "2.25.11",
        "2.25.10",
    ]  # by time, then in the order recorded
    assert store.get_finding("2.25.11") == finding("2.25.11")
    assert store.get_finding("nope") is None
    store.add_feedback(feedback(1, "2.25.11", FeedbackAction.REJECT, 5.0))
    store.add_feedback(feedback(2, "2.25.11", FeedbackAction.ACCEPT, 5.0))
    store.add_feedback(feedback(3, "2.25.10", FeedbackAction.ACCEPT, 6.0))
    assert [f.feedback_id for f in store.list_feedback()] == ["fb1", "fb2", "fb3"]
    assert [f.feedback_id for f in store.list_feedback(tracking_uid="2.25.10")] == ["fb3"]
    assert [f.feedback_id for f in store.list_feedback(since=6.0)] == ["fb3"]
    assert store.list_feedback(model="other") == []
    assert len(store.list_feedback(study_key="k1", limit=2)) == 2


# --- ObservatoryStore ----------------------------------------------------
def test_runs_replace_by_key_and_list_by_time(store: StateStore) -> None:
    store.record_run(run("r1", 10.0))
    store.record_run(run("r2", 20.0, model="other"))
    store.record_run(run("r1", 30.0, seconds=2.0))  # the same series again: replaced
    assert [(r.run_key, r.at) for r in store.list_runs()] == [("r2", 20.0), ("r1", 30.0)]
    assert [r.run_key for r in store.list_runs(model="model")] == ["r1"]
    assert [r.run_key for r in store.list_runs(since=10.0, until=30.0)] == ["r2"]
    assert store.list_runs()[1] == run("r1", 30.0, seconds=2.0)


def scenario(store: StateStore) -> dict[str, object]:
    """Every role once, at fixed times; what the store answers, as plain values."""
    for n in range(1, 4):
        store.record_instance(rec(n))
    store.record_instance(rec(1))  # duplicate
    store.record_instance(rec(2, sha256="e" * 64, path="v2.dcm", received_at=1004.0))
    assert store.complete_study("k1", 1020.0)
    done = store.create_job("k1", "blobs:model", now=1021.0)
    store.set_job_state(done.job_id, JobState.RUNNING, now=1022.0)
    store.set_job_state(done.job_id, JobState.DONE, now=1024.5)
    store.create_job("k1", "seg:model", now=1023.0)
    out = store.record_results([result(1, created_at=1025.0)], ["pacs", "b"], now=1025.0)
    store.delivery_attempted(out[0].delivery_id, ok=False, error="x", retry_at=1030.0, now=1026)
    store.delivery_attempted(out[0].delivery_id, ok=True, now=1031.0)
    store.record_findings([finding("2.25.10"), finding("2.25.11", present=False)])
    store.add_feedback(feedback(1, "2.25.10", FeedbackAction.ACCEPT, 1040.0))
    store.record_run(run("r1", 1030.0))
    store.record_run(run("r2", 1031.0, seconds=50.0))
    detail = store.get_study("k1")
    assert detail is not None
    return {
        "metrics": asdict(store.metrics_snapshot(BOUNDS)),
        "study": replace(detail.summary, updated_at=0.0),
        "events": [(e.at, e.kind) for e in detail.events],
        "series": detail.series,
        "queue": store.queue_stats(),
        "deliveries": sorted(  # same time, same object: their order is not the contract's
            (d.sop_uid, d.destination, d.state, d.attempts) for d in store.list_deliveries(limit=10)
        ),
        "jobs": [(j.kind, j.state, j.attempts) for j in store.list_jobs()],
        "counts": store.count_studies_by_state(),
        "known": store.known_paths(),
    }


def test_the_scenario_answers_as_expected(store: StateStore) -> None:
    got = scenario(store)
    metrics = got["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["instances_received"] == {"new": 3, "replaced": 1, "duplicate": 1}
    assert metrics["jobs"] == {("blobs:model", "done"): 1, ("seg:model", "queued"): 1}
    assert metrics["deliveries"] == {("pacs", "delivered"): 1, ("b", "pending"): 1}
    assert metrics["delivery_failed_attempts"] == {"pacs": 1, "b": 0}
    assert metrics["findings"] == {("model", "1.0.0", "true"): 1, ("model", "1.0.0", "false"): 1}
    (inference,) = metrics["histograms"]["cds_inference_seconds"]
    assert (inference["cumulative"], inference["count"], inference["total"]) == (
        (0, 1, 1, 2),
        2,
        50.7,
    )
    (job_run,) = metrics["histograms"]["cds_job_run_seconds"]
    assert (job_run["labels"], job_run["cumulative"]) == (("blobs:model",), (0, 0, 1, 1))


def test_sqlite_and_postgresql_answer_the_scenario_alike(
    tmp_path: Path, pg_store: StateStore
) -> None:
    sqlite = SqliteStore(tmp_path / "state.db")
    try:
        assert scenario(pg_store) == scenario(sqlite)
    finally:
        sqlite.close()
