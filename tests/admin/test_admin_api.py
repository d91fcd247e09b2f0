"""issue 4 (admin over HTTP): jobs with timings, retry, re-run, cancel, purge, queue depth,
on a real node over real sockets. Refusals: 404 for an unknown job or study, 409 naming
the state that forbids the operation."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cds.config import Settings
from cds.domain import JobState, StudyState
from cds.orchestrator import Node

from ..ingest.test_scp import connect
from .helpers import admin_app, send_study, spooled, wait_for, wait_state


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(admin_app(settings)) as c:  # lifespan starts and stops the node
        yield c


def node_of(client: TestClient) -> Node:
    return client.app.state.node  # type: ignore[attr-defined, no-any-return]


def history(client: TestClient, key: str) -> list[str]:
    return [e["kind"] for e in client.get(f"/api/studies/{key}").json()["history"]]


def test_jobs_listed_newest_first_with_state_and_timings(client: TestClient) -> None:
    store = node_of(client).store
    now = time.time()
    old = store.create_job("k1", "bone:cds-ref-ct-bone", now=now - 100)
    store.set_job_state(old.job_id, JobState.RUNNING, now=now - 90)
    store.set_job_state(old.job_id, JobState.FAILED, error="model crashed", now=now - 80)
    running = store.create_job("k1", "blobs:cds-ref-blob-detect", now=now - 50)
    store.set_job_state(running.job_id, JobState.RUNNING, now=now - 20)
    queued = store.create_job("k2", "bone:cds-ref-ct-bone", now=now - 10)

    rows = client.get("/api/jobs").json()
    assert [r["job_id"] for r in rows] == [queued.job_id, running.job_id, old.job_id]
    q, r, f = rows
    assert (q["state"], q["started_at"], q["ran_s"]) == ("queued", None, None)
    assert q["waited_s"] == pytest.approx(10, abs=5)
    assert (r["waited_s"], r["finished_at"]) == (30.0, None)
    assert r["ran_s"] == pytest.approx(20, abs=5)
    assert (f["waited_s"], f["ran_s"], f["attempts"], f["error"]) == (
        10.0,
        10.0,
        1,
        "model crashed",
    )

    failed = client.get("/api/jobs", params={"state": "failed"}).json()
    assert [j["job_id"] for j in failed] == [old.job_id]
    of_k2 = client.get("/api/jobs", params={"study_key": "k2"}).json()
    assert [j["job_id"] for j in of_k2] == [queued.job_id]
    assert client.get("/api/jobs", params={"state": "bogus"}).status_code == 422


def test_job_events_are_in_the_study_history(client: TestClient) -> None:
    node = node_of(client)
    sent = send_study(node, replace_first=False)
    job = node.store.create_job(sent.key, "bone:cds-ref-ct-bone")
    node.store.set_job_state(job.job_id, JobState.RUNNING)
    assert client.post(f"/api/jobs/{job.job_id}/cancel").status_code == 200
    kinds = history(client, sent.key)
    assert kinds[-3:] == ["job_queued", "job_running", "job_cancelled"]


def test_retry_a_failed_job_requeues_its_study(client: TestClient) -> None:
    node = node_of(client)
    seen: list[str] = []
    node.on_study_complete(seen.append)
    sent = send_study(node, replace_first=False)
    wait_state(node, sent.key, StudyState.COMPLETE)
    wait_for(lambda: seen == [sent.key], what="the study handed to the stages on completion")

    job = node.store.create_job(sent.key, "bone:cds-ref-ct-bone")
    r = client.post(f"/api/jobs/{job.job_id}/retry")
    assert r.status_code == 409
    assert r.json()["detail"] == (
        f"job {job.job_id} is queued: only a failed or partial job can be retried"
    )

    node.store.set_job_state(job.job_id, JobState.FAILED, error="boom")
    r = client.post(f"/api/jobs/{job.job_id}/retry")
    assert r.status_code == 202
    assert r.json() == {"study_key": sent.key, "job_id": job.job_id, "detail": "study re-queued"}
    wait_for(lambda: seen == [sent.key, sent.key], what="the study re-queued")
    assert history(client, sent.key)[-1] == "job_retried"

    assert client.post("/api/jobs/nope/retry").status_code == 404


def test_rerun_a_study(client: TestClient) -> None:
    node = node_of(client)
    seen: list[str] = []
    node.on_study_complete(seen.append)
    sent = send_study(node, replace_first=False)

    r = client.post(f"/api/studies/{sent.key}/rerun")
    assert r.status_code == 409  # still receiving: it runs by itself once complete
    assert "still receiving" in r.json()["detail"]

    wait_state(node, sent.key, StudyState.COMPLETE)
    wait_for(lambda: seen == [sent.key])
    r = client.post(f"/api/studies/{sent.key}/rerun")
    assert r.status_code == 202
    assert r.json()["study_key"] == sent.key
    wait_for(lambda: seen == [sent.key, sent.key], what="the study re-run")
    assert history(client, sent.key)[-1] == "rerun_requested"

    r = client.post("/api/studies/nope/rerun")
    assert r.status_code == 404
    assert r.json()["detail"] == "no study with key 'nope'"


def test_cancel_only_queued_or_running_jobs(client: TestClient) -> None:
    store = node_of(client).store
    queued = store.create_job("k1", "p:m")
    r = client.post(f"/api/jobs/{queued.job_id}/cancel")
    assert r.status_code == 200
    assert r.json()["state"] == "cancelled"
    assert r.json()["finished_at"] is not None

    r = client.post(f"/api/jobs/{queued.job_id}/cancel")
    assert r.status_code == 409
    assert "is cancelled: only a queued or running job can be cancelled" in r.json()["detail"]

    done = store.create_job("k1", "p:m")
    store.set_job_state(done.job_id, JobState.DONE)
    r = client.post(f"/api/jobs/{done.job_id}/cancel")
    assert (r.status_code, r.json()["detail"].split(":")[0]) == (409, f"job {done.job_id} is done")
    assert store.get_job(done.job_id).state is JobState.DONE  # type: ignore[union-attr]
    assert client.post("/api/jobs/nope/cancel").status_code == 404


def test_purge_removes_files_keeps_history_and_a_resent_instance_is_stored_again(
    client: TestClient,
) -> None:
    node = node_of(client)
    sent = send_study(node)  # 3 instances + 1 superseded version
    wait_state(node, sent.key, StudyState.COMPLETE)
    assert len(spooled(node, sent.key)) == 4

    r = client.post(f"/api/studies/{sent.key}/purge")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "study_key": sent.key,
        "purged": True,
        "files_removed": 4,
        "instances": 3,
        "superseded_versions": 1,
        "unrecorded_files": 0,
        "jobs_cancelled": [],
    }
    assert spooled(node, sent.key) == []
    assert not (node.spool.root / "studies" / sent.key).exists()
    study = client.get(f"/api/studies/{sent.key}").json()
    assert (study["state"], study["instance_count"], study["series_count"]) == ("purged", 0, 0)
    kinds = [e["kind"] for e in study["history"]]
    assert kinds[:1] == ["receiving"]
    assert "instance_replaced" in kinds
    assert "complete" in kinds
    assert kinds[-1] == "purged"
    assert "4 file(s) removed" in study["history"][-1]["detail"]
    assert client.get("/api/studies", params={"state": "purged"}).json()[0]["study_key"] == sent.key

    r = client.post(f"/api/studies/{sent.key}/purge")
    assert (r.status_code, r.json()["detail"]) == (409, f"study {sent.key} is already purged")
    r = client.post(f"/api/studies/{sent.key}/rerun")
    assert r.status_code == 409
    assert "purged" in r.json()["detail"]

    # nothing comes back at reconciliation
    assert node.reconcile() == 0
    assert spooled(node, sent.key) == []

    # the same instance, same bytes, sent again after the purge: stored and recorded anew
    a = connect(node)
    assert a.send_c_store(sent.datasets[1]).Status == 0
    a.release()
    (f,) = spooled(node, sent.key)
    assert sent.datasets[1].SOPInstanceUID in f
    study = client.get(f"/api/studies/{sent.key}").json()
    assert (study["state"], study["instance_count"], study["reopened_count"]) == (
        "receiving",
        1,
        1,
    )
    assert study["history"][-1]["kind"] == "reopened"
    wait_state(node, sent.key, StudyState.COMPLETE)


def test_purge_refuses_a_busy_study_unless_forced(client: TestClient) -> None:
    node = node_of(client)
    sent = send_study(node, replace_first=False)
    r = client.post(f"/api/studies/{sent.key}/purge")
    assert r.status_code == 409
    assert r.json()["detail"].startswith(f"study {sent.key} is receiving: purge it with force")
    assert len(spooled(node, sent.key)) == 3

    wait_state(node, sent.key, StudyState.COMPLETE)
    job = node.store.create_job(sent.key, "p:m")
    r = client.post(f"/api/studies/{sent.key}/purge")
    assert r.status_code == 409
    assert "complete with 1 job(s) queued or running" in r.json()["detail"]

    node.store.set_study_state(sent.key, StudyState.PROCESSING, "test")
    r = client.post(f"/api/studies/{sent.key}/purge", params={"force": True})
    assert r.status_code == 200
    assert r.json()["jobs_cancelled"] == [job.job_id]
    assert node.store.get_job(job.job_id).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert spooled(node, sent.key) == []
    detail = client.get(f"/api/studies/{sent.key}").json()["history"][-1]["detail"]
    assert "(forced, was processing)" in detail

    assert client.post("/api/studies/nope/purge").status_code == 404


def test_purge_removes_old_unrecorded_files_but_not_one_being_received(
    client: TestClient,
) -> None:
    node = node_of(client)
    sent = send_study(node, replace_first=False)
    wait_state(node, sent.key, StudyState.COMPLETE)
    (series_dir,) = {node.spool.absolute(p).parent for p in spooled(node, sent.key)}
    crash_left = series_dir / "1.2.3.4.aaaaaaaaaaaa.dcm"  # spooled before a crash, never recorded
    crash_left.write_bytes(b"x")
    hour_ago = time.time() - 3600
    os.utime(crash_left, (hour_ago, hour_ago))
    in_flight = series_dir / "1.2.3.5.bbbbbbbbbbbb.dcm"  # written now, about to be recorded
    in_flight.write_bytes(b"y")

    r = client.post(f"/api/studies/{sent.key}/purge")
    assert r.status_code == 200
    assert (r.json()["files_removed"], r.json()["unrecorded_files"]) == (4, 1)
    assert not crash_left.exists()
    assert in_flight.exists()


def test_queue_depth_and_oldest_waiting(client: TestClient) -> None:
    node = node_of(client)
    empty = client.get("/api/queue").json()
    assert empty == {
        "jobs_queued": 0,
        "jobs_running": 0,
        "oldest_queued_age_s": None,
        "studies_receiving": 0,
        "studies_complete_waiting": 0,
        "deliveries_pending": 0,
        "deliveries_dead": 0,
        "oldest_pending_delivery_age_s": None,
    }
    done = send_study(node, replace_first=False)
    wait_state(node, done.key, StudyState.COMPLETE)
    send_study(node, replace_first=False)  # receiving
    store = node.store
    store.create_job(done.key, "a", now=time.time() - 120)
    store.create_job(done.key, "b", now=time.time() - 5)
    store.set_job_state(store.create_job(done.key, "c").job_id, JobState.RUNNING)

    q = client.get("/api/queue").json()
    assert (q["jobs_queued"], q["jobs_running"]) == (2, 1)
    assert q["oldest_queued_age_s"] == pytest.approx(120, abs=10)
    assert (q["studies_receiving"], q["studies_complete_waiting"]) == (1, 1)


def test_openapi_documents_the_admin_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    summaries = {
        ("get", "/api/jobs"),
        ("post", "/api/jobs/{job_id}/retry"),
        ("post", "/api/jobs/{job_id}/cancel"),
        ("post", "/api/studies/{study_key}/rerun"),
        ("post", "/api/studies/{study_key}/purge"),
        ("get", "/api/queue"),
    }
    for method, path in summaries:
        op = paths[path][method]
        assert op["summary"]
        if method == "post":
            assert {"404", "409"} <= set(op["responses"])


def test_a_restarted_node_does_not_bring_a_purged_study_back(settings: Settings) -> None:
    with TestClient(admin_app(settings)) as c:
        sent = send_study(node_of(c))
        wait_state(node_of(c), sent.key, StudyState.COMPLETE)
        assert c.post(f"/api/studies/{sent.key}/purge").status_code == 200
    node = Node(settings)
    node.start()  # reconciles the spool with the store
    try:
        detail = node.store.get_study(sent.key)
        assert detail is not None
        assert (detail.summary.state, detail.summary.instance_count) == (StudyState.PURGED, 0)
        assert spooled(node, sent.key) == []
    finally:
        node.stop()


def test_a_purge_cut_short_after_the_files_can_be_finished(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = node_of(client)
    sent = send_study(node)
    wait_state(node, sent.key, StudyState.COMPLETE)

    def crash(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("power loss")

    with monkeypatch.context() as m:
        m.setattr(node.store, "mark_purged", crash)
        with pytest.raises(RuntimeError):
            client.post(f"/api/studies/{sent.key}/purge")
    # files gone, records still there: nothing to re-index, the study is not purged yet
    assert spooled(node, sent.key) == []
    assert node.reconcile() == 0
    assert client.get(f"/api/studies/{sent.key}").json()["state"] == "complete"
    r = client.post(f"/api/studies/{sent.key}/purge")
    assert r.status_code == 200
    assert (r.json()["files_removed"], r.json()["purged"]) == (0, True)
