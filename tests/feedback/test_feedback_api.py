"""issue 6: every finding of a result can be accepted, corrected or rejected over the
REST API, keyed by the SR's SOP Instance UID and the finding's Tracking UID; feedback
is appended and never changes the result."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread

from cds.domain import StudyState
from cds.feedback.findings import tracking_uids
from cds.orchestrator import Node

from ..admin.helpers import admin_app
from ..test_pipeline import send_files, settings_with_routing, wait_state

ROUTING = """
pipelines:
  blobs: {model: cds-ref-blob-detect, results: [SR, GSPS]}
rules:
  - name: CT
    match: [{attribute: Modality, equals: CT}]
    pipelines: [blobs]
"""


@pytest.fixture
def client_node(tmp_path: Path, corpus: Path) -> Iterator[tuple[TestClient, Node]]:
    settings = settings_with_routing(tmp_path, ROUTING)
    node = Node(settings)
    node.start()
    files = sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]
    send_files(node, files)
    wait_state(node, {StudyState.DONE, StudyState.FAILED})
    with TestClient(admin_app(settings, node)) as client:  # stops the node at exit
        yield client, node


def findings(client: TestClient, node: Node) -> tuple[str, list[dict[str, Any]]]:
    (study,) = node.store.list_studies()
    got = client.get(f"/api/studies/{study.study_key}/findings")
    assert got.status_code == 200, got.text
    return study.study_key, got.json()


def test_findings_are_keyed_by_the_sr_tracking_uids(client_node: tuple[TestClient, Node]) -> None:
    client, node = client_node
    key, found = findings(client, node)
    assert found, "the blob detector reports findings on this CT"
    (sr,) = [r for r in node.store.list_results(key) if r.modality == "SR"]
    sr_ds = dcmread(node.settings.results_path / sr.path)
    assert [f["tracking_uid"] for f in found] == tracking_uids(sr_ds)
    assert {f["result_sop_instance_uid"] for f in found} == {sr.sop_uid}
    f = found[0]
    assert f["model"] == "cds-ref-blob-detect"
    assert f["model_version"] == "1.0.0"
    assert len(f["model_sha256"]) == 64
    assert f["verdict"] is None
    assert f["feedback"] == []


def test_accept_correct_reject_are_appended(client_node: tuple[TestClient, Node]) -> None:
    client, node = client_node
    key, found = findings(client, node)
    (sr,) = [r for r in node.store.list_results(key) if r.modality == "SR"]
    sr_file = node.settings.results_path / sr.path
    before = hashlib.sha256(sr_file.read_bytes()).hexdigest()
    f = found[0]
    url = f"/api/results/{f['result_sop_instance_uid']}/findings/{f['tracking_uid']}/feedback"
    accepted = client.post(url, json={"action": "accept", "user": "dr.martin"})
    assert accepted.status_code == 201, accepted.text
    corrected = client.post(
        url,
        json={
            "action": "correct",
            "user": "dr.martin",
            "reason": "calcification, not a haemorrhage",
            "corrected_label": {"scheme": "SCT", "value": "82650004", "meaning": "Calcification"},
        },
    )
    assert corrected.status_code == 201, corrected.text
    time.sleep(0.01)
    rejected = client.post(
        url, json={"action": "reject", "user": "dr.durand", "reason": "artefact"}
    )
    assert rejected.status_code == 201
    _, again = findings(client, node)
    mine = next(x for x in again if x["tracking_uid"] == f["tracking_uid"])
    assert [x["action"] for x in mine["feedback"]] == ["accept", "correct", "reject"]
    assert mine["verdict"] == "reject"
    assert mine["feedback"][1]["corrected_label"]["meaning"] == "Calcification"
    assert {x["model_sha256"] for x in mine["feedback"]} == {f["model_sha256"]}
    assert hashlib.sha256(sr_file.read_bytes()).hexdigest() == before  # result untouched
    listed = client.get("/api/feedback", params={"model": "cds-ref-blob-detect"}).json()
    assert [x["user"] for x in listed] == ["dr.martin", "dr.martin", "dr.durand"]
    assert client.get("/api/feedback", params={"model": "other"}).json() == []
    events = [e.kind for e in node.store.get_study(key).events]  # type: ignore[union-attr]
    assert [k for k in events if k.startswith("feedback_")] == [
        "feedback_accept",
        "feedback_correct",
        "feedback_reject",
    ]


def test_bad_feedback_is_refused_with_a_reason(client_node: tuple[TestClient, Node]) -> None:
    client, node = client_node
    _, found = findings(client, node)
    f = found[0]
    url = f"/api/results/{f['result_sop_instance_uid']}/findings/{f['tracking_uid']}/feedback"
    wrong = client.post(
        f"/api/results/1.2.3/findings/{f['tracking_uid']}/feedback",
        json={"action": "accept", "user": "dr.martin"},
    )
    assert wrong.status_code == 404
    assert "no finding" in wrong.json()["detail"]
    bare = client.post(url, json={"action": "correct", "user": "dr.martin"})
    assert bare.status_code == 422
    assert "corrected label" in bare.json()["detail"]
    label_on_accept = client.post(
        url,
        json={
            "action": "accept",
            "user": "x",
            "corrected_label": {"scheme": "SCT", "value": "1", "meaning": "m"},
        },
    )
    assert label_on_accept.status_code == 422
    assert client.post(url, json={"action": "maybe", "user": "x"}).status_code == 422
    assert client.post(url, json={"action": "accept", "user": "   "}).status_code == 422
    assert client.get("/api/studies/nope/findings").status_code == 404
    assert client.get("/api/feedback").json() == []
