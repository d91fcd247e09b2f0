"""issue 2: GET /health and GET /api/studies on a running node."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from cds.api.app import create_app
from cds.config import Settings

from ..ingest.test_scp import connect, ct


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:  # lifespan starts and stops the node
        yield c


def test_health_reports_listener_store_and_spool(client: TestClient, settings: Settings) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["dicom"] == {
        "listening": True,
        "ae_title": "CDS",
        "active_associations": 0,
        "port": settings.dicom.port,
        "tls_port": None,
    }
    assert body["store"]["reachable"] is True
    assert body["spool"]["free_bytes"] > 0
    assert body["spool"]["below_watermark"] is False


def test_studies_list_and_detail(client: TestClient) -> None:
    node = client.app.state.node  # type: ignore[attr-defined]
    study = generate_uid()
    a = connect(node)
    series = generate_uid()
    for _ in range(3):
        assert a.send_c_store(ct(study=study, SeriesInstanceUID=series)).Status == 0
    assert a.send_c_store(ct(study=study, Modality="SR")).Status == 0
    a.release()

    (s,) = client.get("/api/studies").json()
    assert s["study_instance_uid"] == study
    assert (s["series_count"], s["instance_count"], s["state"]) == (2, 4, "receiving")
    assert s["modalities"] == ["CT", "SR"]
    assert s["calling_ae_title"] == "TESTSCU"

    d = client.get(f"/api/studies/{s['study_key']}").json()
    assert sorted(x["instance_count"] for x in d["series"]) == [1, 3]
    assert d["history"][0]["kind"] == "receiving"
    assert "PatientName" not in str(d)
    assert "CANARY" not in str(d)

    assert client.get("/api/studies", params={"state": "done"}).json() == []


def test_unknown_study_is_404_with_message(client: TestClient) -> None:
    r = client.get("/api/studies/nope")
    assert r.status_code == 404
    assert "nope" in r.json()["detail"]


def test_bad_query_is_422(client: TestClient) -> None:
    assert client.get("/api/studies", params={"state": "bogus"}).status_code == 422
    assert client.get("/api/studies", params={"limit": 0}).status_code == 422


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/api/studies", "/api/studies/{study_key}"} <= set(paths)
