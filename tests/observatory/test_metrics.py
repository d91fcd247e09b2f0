"""issue 6: GET /metrics in the Prometheus text format: the figures match what the
store holds, each node has its own registry, and no patient value, UID, study key
or AE title reaches the text."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid

from cds.api.app import create_app
from cds.config import Settings
from cds.domain import (
    Feedback,
    FeedbackAction,
    FindingRecord,
    InstanceRecord,
    JobState,
    ResultObject,
    ResultState,
    StudyState,
)
from cds.findings import Code, Finding, InferenceRecord, InferenceResult, Label, Text
from cds.observatory.drift import record_run
from cds.observatory.metrics import StoreCollector, build_registry
from cds.orchestrator import Node
from cds.requestor import PauseSafeAE
from cds.store.sqlite import SqliteStore

T = 1794787200.0  # 2026-11-16 00:00 UTC
CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
CANARIES = ("CANARY^JEANNE", "CANARY-PID-4711", "CANARY-ACC-0815", "19010101", "CANARYAE")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def val(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _instance(study: int, sop: int, sha: str, at: float, series: int = 1) -> InstanceRecord:
    return InstanceRecord(
        study_uid=f"1.2.826.0.1.3680043.10.9.{study}",
        series_uid=f"1.2.826.0.1.3680043.10.9.{study}.{series}",
        sop_uid=f"1.2.826.0.1.3680043.10.9.{study}.{series}.{sop}",
        sop_class_uid=CT,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        series_number=series,
        study_key=f"stk{study}",
        path=f"studies/stk{study}/{sop}-{sha[:4]}.dcm",
        size=10,
        sha256=sha * 64,
        calling_ae="CANARYAE",
        received_at=at,
        quiet_time_s=10,
    )


def _result(study: int, n: int, modality: str = "SR") -> ResultObject:
    return ResultObject(
        sop_uid=f"1.2.826.0.1.3680043.10.9.{study}.9.{n}",
        study_key=f"stk{study}",
        study_uid=f"1.2.826.0.1.3680043.10.9.{study}",
        series_uid=f"1.2.826.0.1.3680043.10.9.{study}.9",
        sop_class_uid=SR,
        modality=modality,
        path=f"stk{study}/{n}.dcm",
        job_kind="chest:alpha",
        source_series_uid=f"1.2.826.0.1.3680043.10.9.{study}.1",
        model_version="1.0",
        inputs_seed="seed",
        state=ResultState.CURRENT,
        created_at=0.0,
    )


def inference_result(
    model: str = "alpha", version: str = "1.0", seconds: float = 0.3, score: float = 0.8
) -> InferenceResult:
    label = Label(
        index=1,
        code=Code(scheme="SCT", value="39607008", meaning="Lung structure"),
        display=Text(en="Nodule", fr="Nodule"),
        threshold=0.5,
    )
    record = InferenceRecord(
        model=model,
        version=version,
        sha256="a" * 64,
        provider="CPUExecutionProvider",
        cds_version="0",
        series_uids=(generate_uid(),),
        images=3,
        seconds=seconds,
        timings={},
    )
    return InferenceResult(record, "classification", [Finding(label, score, score >= 0.5)], {}, [])


def canary_headers() -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.PatientName = CANARIES[0]
    ds.PatientID = CANARIES[1]
    ds.AccessionNumber = CANARIES[2]
    ds.PatientBirthDate = CANARIES[3]
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.ManufacturerModelName = "HiSpeed"
    ds.SliceThickness = "1.25"
    ds.KVP = "120"
    ds.PixelSpacing = ["0.7", "0.7"]
    return ds


@pytest.fixture
def known_store(tmp_path: Path) -> SqliteStore:
    """Two studies written with the store's own methods at known times (see the test)."""
    store = SqliteStore(tmp_path / "state.db")
    store.record_instance(_instance(1, 1, "a", T))
    store.record_instance(_instance(1, 1, "a", T + 1))  # duplicate
    store.record_instance(_instance(1, 2, "b", T + 2))
    store.record_instance(_instance(1, 2, "c", T + 3))  # replaced
    store.record_instance(_instance(2, 1, "d", T + 4))
    assert store.complete_study("stk1", T + 20)  # 20 s after its first instance
    job = store.create_job("stk1", "chest:alpha", now=T + 21)
    store.set_job_state(job.job_id, JobState.RUNNING, now=T + 22)
    store.set_job_state(job.job_id, JobState.DONE, now=T + 25)  # ran 3 s
    failed = store.create_job("stk1", "chest:beta", now=T + 21)
    store.set_job_state(failed.job_id, JobState.FAILED, error="boom", now=T + 23)
    store.create_job("stk2", "chest:alpha", now=T + 30)  # stays queued
    sr, seg = _result(1, 1), _result(1, 2, "SEG")
    d1, d2 = store.record_results([sr, seg], ["pacs"], now=T + 24)  # 4 s after completion
    store.delivery_attempted(d1.delivery_id, ok=False, error="refused", retry_at=T + 30, now=T + 25)
    store.delivery_attempted(d1.delivery_id, ok=True, now=T + 54)  # 30 s after queued
    store.delivery_attempted(d2.delivery_id, ok=False, error="refused", now=T + 26)  # dead
    findings = [
        FindingRecord(
            tracking_uid=f"1.2.826.0.1.3680043.10.9.1.8.{i}",
            result_sop_uid=sr.sop_uid,
            study_key="stk1",
            job_kind="chest:alpha",
            model="alpha",
            version="1.0",
            sha256="a" * 64,
            label_scheme="SCT",
            label_value="39607008",
            label_meaning="Lung structure",
            display_en="Nodule",
            display_fr="Nodule",
            present=present,
            score=score,
            created_at=T + 24,
        )
        for i, (present, score) in enumerate([(True, 0.9), (False, 0.2), (True, 0.7)])
    ]
    store.record_findings(findings)
    for i, action in enumerate(
        [FeedbackAction.ACCEPT, FeedbackAction.ACCEPT, FeedbackAction.REJECT]
    ):
        store.add_feedback(
            Feedback(
                feedback_id=f"fb{i}",
                tracking_uid=findings[i].tracking_uid,
                result_sop_uid=sr.sop_uid,
                study_key="stk1",
                action=action,
                reason=f"seen on {CANARIES[0]}",
                corrected_scheme=None,
                corrected_value=None,
                corrected_meaning=None,
                who=CANARIES[1],
                source="api",
                at=T + 100 + i,
                model="alpha",
                version="1.0",
                sha256="a" * 64,
            )
        )
    for seconds in (0.3, 2.0):
        assert record_run(store, canary_headers(), inference_result(seconds=seconds), T + 24)
    return store


def scrape(store: SqliteStore, now: float) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, clock=lambda: now))
    return generate_latest(registry).decode()


def test_metrics_match_the_store(known_store: SqliteStore) -> None:
    """issue 6: instances, studies, jobs by state, queue depth, deliveries and failures,
    feedback by model and action: the figures are those the store holds."""
    s = parse(scrape(known_store, T + 90))
    assert val(s, "cds_instances_received", outcome="new") == 3
    assert val(s, "cds_instances_received", outcome="replaced") == 1
    assert val(s, "cds_instances_received", outcome="duplicate") == 1
    assert val(s, "cds_instances_stored") == 3
    counts = known_store.count_studies_by_state()
    for state in StudyState:
        assert val(s, "cds_studies", state=state.value) == counts.get(state, 0)
    assert val(s, "cds_studies", state="complete") == 1
    assert val(s, "cds_studies", state="receiving") == 1
    assert val(s, "cds_jobs", kind="chest:alpha", state="done") == 1
    assert val(s, "cds_jobs", kind="chest:alpha", state="queued") == 1
    assert val(s, "cds_jobs", kind="chest:beta", state="failed") == 1
    assert val(s, "cds_jobs_by_state", state="done") == 1
    assert val(s, "cds_jobs_by_state", state="running") == 0
    assert val(s, "cds_queue_depth", queue="jobs_queued") == 1
    assert val(s, "cds_queue_depth", queue="deliveries_dead") == 1
    assert val(s, "cds_queue_depth", queue="deliveries_pending") == 0
    assert val(s, "cds_queue_oldest_age_seconds", queue="jobs") == 60  # queued at T + 30
    assert val(s, "cds_deliveries", destination="pacs", state="delivered") == 1
    assert val(s, "cds_deliveries", destination="pacs", state="dead") == 1
    assert val(s, "cds_deliveries", destination="pacs", state="pending") == 0
    assert val(s, "cds_delivery_failed_attempts", destination="pacs") == 2
    assert val(s, "cds_results", kind="chest:alpha", state="current") == 2
    assert val(s, "cds_findings", model="alpha", version="1.0", present="true") == 2
    assert val(s, "cds_findings", model="alpha", version="1.0", present="false") == 1
    assert val(s, "cds_feedback_total", model="alpha", version="1.0", action="accept") == 2
    assert val(s, "cds_feedback_total", model="alpha", version="1.0", action="reject") == 1
    assert ("cds_feedback_total", (("action", "correct"),)) not in s


def test_stage_latency_histograms_from_store_times(known_store: SqliteStore) -> None:
    """issue 6: receive->complete 20 s, complete->result 4 s, job 3 s, delivery 30 s,
    inference 0.3 s and 2.0 s per model and provider (cumulative buckets)."""
    s = parse(scrape(known_store, T + 90))
    h = "cds_study_receive_to_complete_seconds"
    assert val(s, f"{h}_count") == 1
    assert val(s, f"{h}_sum") == 20
    assert val(s, f"{h}_bucket", le="10.0") == 0
    assert val(s, f"{h}_bucket", le="30.0") == 1
    h = "cds_study_complete_to_result_seconds"
    assert val(s, f"{h}_sum", kind="chest:alpha") == 4
    assert val(s, f"{h}_bucket", kind="chest:alpha", le="2.5") == 0
    assert val(s, f"{h}_bucket", kind="chest:alpha", le="5.0") == 1
    assert val(s, "cds_job_run_seconds_sum", kind="chest:alpha") == 3
    assert val(s, "cds_job_run_seconds_count", kind="chest:alpha") == 1
    assert val(s, "cds_delivery_seconds_sum", destination="pacs") == 30
    assert val(s, "cds_delivery_seconds_count", destination="pacs") == 1
    inf = {"model": "alpha", "version": "1.0", "provider": "CPUExecutionProvider"}
    assert val(s, "cds_inference_seconds_count", **inf) == 2
    assert val(s, "cds_inference_seconds_sum", **inf) == pytest.approx(2.3)
    assert val(s, "cds_inference_seconds_bucket", le="0.25", **inf) == 0
    assert val(s, "cds_inference_seconds_bucket", le="0.5", **inf) == 1
    assert val(s, "cds_inference_seconds_bucket", le="2.5", **inf) == 2
    assert val(s, "cds_inference_seconds_bucket", le="+Inf", **inf) == 2


def test_metrics_carry_no_identifier(known_store: SqliteStore) -> None:
    text = scrape(known_store, T + 90)
    for canary in (*CANARIES, "stk1", "stk2", "1.2.826.0.1.3680043", "fb0"):
        assert canary not in text


def test_each_node_has_its_own_registry(known_store: SqliteStore, tmp_path: Path) -> None:
    empty = SqliteStore(tmp_path / "other.db")
    a = parse(generate_latest(build_registry(known_store, process=False)).decode())
    b = parse(generate_latest(build_registry(empty, process=False)).decode())
    assert val(a, "cds_instances_stored") == 3
    assert val(b, "cds_instances_stored") == 0


def _send(node: Node, tmp_path: Path, corpus: Path) -> list[pydicom.Dataset]:
    src = sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]
    sent = []
    ae = PauseSafeAE(ae_title="CANARYAE")
    ae.add_requested_context(CT, "1.2.840.10008.1.2.1")
    host, port = node.listener.address
    assoc = ae.associate(host, port, ae_title="CDS")
    assert assoc.is_established
    for i, f in enumerate(src):
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientID = CANARIES[0], CANARIES[1]
        ds.AccessionNumber, ds.PatientBirthDate = CANARIES[2], CANARIES[3]
        out = tmp_path / f"canary{i}.dcm"
        ds.save_as(out, enforce_file_format=True)
        assert assoc.send_c_store(out).Status == 0
        sent.append(ds)
    assoc.release()
    return sent


def test_running_node_metrics_and_canaries(
    settings: Settings, tmp_path: Path, corpus: Path
) -> None:
    """issue 6 (show when done): canary strings in the patient fields of an incoming
    study reach neither /metrics nor the drift API; the counts follow what was sent."""
    with TestClient(create_app(settings)) as client:
        node: Node = client.app.state.node  # type: ignore[attr-defined]
        sent = _send(node, tmp_path, corpus)
        deadline = time.monotonic() + 30
        while node.store.count_studies_by_state().get(StudyState.COMPLETE, 0) != 1:
            assert time.monotonic() < deadline, node.store.count_studies_by_state()
            time.sleep(0.1)
        assert record_run(node.store, sent[0], inference_result())
        res = client.get("/metrics")
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/plain")
        text = res.text
        s = parse(text)
        assert val(s, "cds_instances_received", outcome="new") == 3
        assert val(s, "cds_studies", state="complete") == 1
        assert (
            "cds_inference_seconds_count",
            (
                ("model", "alpha"),
                ("provider", "CPUExecutionProvider"),
                ("version", "1.0"),
            ),
        ) in s
        assert any(name.startswith("process_") for name, _ in s)  # the node's own process
        drift = client.get("/api/observatory/drift").text
        key = node.store.list_studies()[0].study_key
        uids = {str(ds.SOPInstanceUID) for ds in sent} | {
            str(sent[0].StudyInstanceUID),
            str(sent[0].SeriesInstanceUID),
        }
        for body in (text, drift):
            for canary in (*CANARIES, key, *uids):
                assert canary not in body
