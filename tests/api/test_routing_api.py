"""issue 4: POST /api/route/explain, GET /api/routing, the models kill switch over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds.api.app import create_app

from ..conftest import DICOM
from ..test_pipeline import ROUTING, settings_with_routing

HEAD_CT = "ct/dcm_qa_ct_GE_HiSpeedDual_series"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = settings_with_routing(tmp_path, ROUTING, explain_roots=[str(DICOM)])
    with TestClient(create_app(settings)) as c:
        yield c


def test_explain_paths(client: TestClient, corpus: Path) -> None:
    r = client.post(
        "/api/route/explain",
        json={"paths": [str(corpus / HEAD_CT), str(corpus / "mr" / "MR_small.dcm")]},
    )
    assert r.status_code == 200
    plans = {p["study_uid"]: p for p in r.json()["studies"]}
    assert len(plans) == 2
    ct = next(p for p in plans.values() if p["rules"][0]["matched"])
    rule = ct["rules"][0]
    assert rule["rule"] == "head CT"
    assert len(rule["selected"]) == 1
    assert [p["model"] for p in rule["plans"]] == ["cds-ref-ct-bone", "cds-ref-blob-detect"]
    assert rule["plans"][0]["destinations"] == ["pacs (ORTHANC@127.0.0.1:4242)"]
    assert rule["plans"][0]["status"] == "run"
    mr = next(p for p in plans.values() if not p["rules"][0]["matched"])
    assert mr["rules"][0]["series"][0]["reasons"] == ["Modality is 'MR', not equal to 'CT'"]


def test_explain_errors(client: TestClient) -> None:
    assert client.post("/api/route/explain", json={}).status_code == 422
    r = client.post("/api/route/explain", json={"study_key": "0123456789abcdef"})
    assert r.status_code == 404
    assert r.json()["detail"] == "no spooled study with this study_key"
    assert client.post("/api/route/explain", json={"study_key": "nope"}).status_code == 422
    r = client.post("/api/route/explain", json={"paths": [str(DICOM / "no" / "such")]})
    assert r.status_code == 422
    assert r.json()["detail"] == "paths[0]: no such file or folder"  # the path not quoted
    r = client.post("/api/route/explain", json={"paths": ["/no/such/file"]})
    assert r.status_code == 403  # outside routing.explain_roots: not even looked up


def test_kill_switch_over_http(client: TestClient, corpus: Path) -> None:
    assert client.post("/api/models/not-a-model/disable").status_code == 404
    r = client.post("/api/models/cds-ref-ct-bone/disable")
    assert r.json() == {"model": "cds-ref-ct-bone", "disabled": True}
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert models["cds-ref-ct-bone"]["disabled"] is True
    assert models["cds-ref-blob-detect"]["disabled"] is False
    plan = client.post("/api/route/explain", json={"paths": [str(corpus / HEAD_CT)]}).json()
    statuses = [p["status"] for p in plan["studies"][0]["rules"][0]["plans"]]
    assert statuses == ["skipped: model disabled", "run"]
    assert client.get("/api/routing").json()["disabled_models"] == ["cds-ref-ct-bone"]
    client.post("/api/models/cds-ref-ct-bone/enable")
    assert client.get("/api/routing").json()["disabled_models"] == []


def test_routing_state(client: TestClient) -> None:
    body = client.get("/api/routing").json()
    assert body["rules"] == [{"name": "head CT", "priority": 0, "pipelines": ["bone", "blobs"]}]
    assert body["destinations"]["pacs"]["ae_title"] == "ORTHANC"
    assert body["last_refused_change"] == []
