"""issue 6, end to end: a CT whose patient fields hold canary strings goes through the
real node (DICOM in, the reference blob detector, findings), a radiologist accepts a
finding over the REST API; the observatory's figures match that feedback, and no
canary reaches the export (JSON and CSV), the observatory API, the dashboard or the
logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from typer.testing import CliRunner

from cds.cli import app as cli
from cds.domain import StudyState
from cds.orchestrator import Node

from ..admin.helpers import admin_app
from ..test_pipeline import send_files, settings_with_routing, wait_state

ROUTING = """
pipelines:
  blobs: {model: cds-ref-blob-detect, results: [SR]}
rules:
  - name: CT
    match: [{attribute: Modality, equals: CT}]
    pipelines: [blobs]
"""
CANARIES = {
    "PatientName": "CANARYNAME^JEANNE",
    "PatientID": "CANARYPID0042",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "CANARYACC77",
    "InstitutionName": "CANARY HOSPITAL",
    "ReferringPhysicianName": "CANARYDOC^PAUL",
}


@pytest.fixture
def sent(tmp_path: Path, corpus: Path, json_logs: StringIO) -> Iterator[tuple[TestClient, Node]]:
    """The node has run the study (logs captured from its start)."""
    settings = settings_with_routing(tmp_path, ROUTING)
    node = Node(settings)
    node.start()
    files = []
    for i, src in enumerate(
        sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]
    ):
        ds = dcmread(src)
        for keyword, value in CANARIES.items():
            setattr(ds, keyword, value)
        files.append(tmp_path / f"canary{i}.dcm")
        ds.save_as(files[-1])
    send_files(node, files)
    wait_state(node, {StudyState.DONE, StudyState.FAILED})
    with TestClient(admin_app(settings, node)) as client:  # stops the node at exit
        yield client, node


def test_canaries_reach_no_observatory_output(
    sent: tuple[TestClient, Node], tmp_path: Path, json_logs: StringIO
) -> None:
    client, node = sent
    (study,) = node.store.list_studies()
    assert study.state is StudyState.DONE
    found = client.get(f"/api/studies/{study.study_key}/findings").json()
    assert found, "the blob detector reports findings on this CT"
    f = found[0]
    url = f"/api/results/{f['result_sop_instance_uid']}/findings/{f['tracking_uid']}/feedback"
    reason = f"seen on {CANARIES['PatientName']} {CANARIES['PatientID']}"
    assert (
        client.post(
            url, json={"action": "accept", "user": "dr.martin", "reason": reason}
        ).status_code
        == 201
    )

    rows = client.get("/api/observatory/models", params={"bucket": "all"}).json()
    (row,) = rows
    assert (row["model"], row["studies"], row["findings"]) == (
        "cds-ref-blob-detect",
        1,
        len(found),
    )
    assert (row["reviewed"], row["accepted"], row["corrected"], row["rejected"]) == (1, 1, 0, 0)
    assert row["accept_rate"] == 1.0
    assert row["positives"] == sum(1 for x in found if x["present"])
    assert row["time_to_result_s"]["n"] == 1
    assert row["job_run_time_s"]["n"] == 1

    outputs = {"api": json.dumps(rows), "dashboard": client.get("/observatory").text}
    for fmt in ("json", "csv"):
        out = tmp_path / f"export.{fmt}"
        got = CliRunner().invoke(
            cli,
            [
                "observatory",
                "export",
                "--home",
                str(node.settings.home),
                "--out",
                str(out),
                "--format",
                fmt,
                "--min-count",
                "1",
            ],
        )
        assert got.exit_code == 0, got.output
        outputs[f"export {fmt}"] = out.read_text()
    assert '"accept_rate": {\n        "value": 1.0' in outputs["export json"]
    outputs["logs"] = json_logs.getvalue()
    assert study.study_key in outputs["logs"], "the node's logs were captured"
    identifiers = {
        study.study_key,
        study.study_uid,
        f["tracking_uid"],
        f["result_sop_instance_uid"],
    }
    for where, text in outputs.items():
        for value in CANARIES.values():
            assert value not in text, f"{value!r} in the {where}"
        if where != "logs":  # the logs name the study key on purpose (pseudonymous)
            for value in identifiers:
                assert value not in text, f"{value!r} in the {where}"
