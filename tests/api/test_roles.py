"""issue 7 'roles': every route of the app has a deliberate access decision, and
each role gets in or is refused (403) as this table says; no credential is a 401.

The route list comes from ``app.routes``: a new route missing from ROLE_OF fails
here (and ``create_app`` refuses a route that states no decision at all).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds.api.app import create_app
from cds.api.auth import RouteDecision, check_routes, route_decisions
from cds.config import Settings

from .authkit import ROLES, bearer, token_settings

# (method, path) -> the lowest role let in ("public": no credential needed)
ROLE_OF: dict[tuple[str, str], str] = {
    ("GET", "/health"): "public",
    ("GET", "/login"): "public",
    ("POST", "/login"): "public",
    ("POST", "/logout"): "public",
    # conformance: what the node offers (OpenAPI), for vendors
    ("GET", "/openapi.json"): "observer",
    ("GET", "/docs"): "observer",
    ("GET", "/redoc"): "observer",
    # status, queue, models, observatory, metrics: read-only, no study named
    ("GET", "/api/queue"): "observer",
    ("GET", "/api/workers"): "observer",
    ("GET", "/api/models"): "observer",
    ("GET", "/metrics"): "observer",
    ("GET", "/api/observatory/drift"): "observer",
    ("GET", "/api/observatory/models"): "observer",
    ("GET", "/observatory"): "observer",
    # reading studies and findings, giving feedback, the review page
    ("GET", "/api/studies"): "radiologist",
    ("GET", "/api/studies/{study_key}"): "radiologist",
    ("GET", "/api/studies/{study_key}/results"): "radiologist",
    ("GET", "/api/studies/{study_key}/findings"): "radiologist",
    ("POST", "/api/results/{sop_instance_uid}/findings/{tracking_uid}/feedback"): "radiologist",
    # results with their state, and withdrawing one everywhere (issue 25)
    ("GET", "/api/results"): "radiologist",
    ("POST", "/api/results/{sop_instance_uid}/retract"): "radiologist",
    ("GET", "/api/feedback"): "radiologist",
    ("GET", "/review"): "radiologist",
    ("GET", "/review/{study_key}"): "radiologist",
    ("GET", "/review/{study_key}/findings/{tracking_uid}.png"): "radiologist",
    ("POST", "/review/{study_key}/findings/{tracking_uid}"): "radiologist",
    ("POST", "/review/{study_key}/results/{sop_uid}/retract"): "radiologist",
    # steering the node: jobs, deliveries, purge, routing, the kill switch
    ("GET", "/api/jobs"): "admin",
    ("POST", "/api/jobs/{job_id}/retry"): "admin",
    ("POST", "/api/jobs/{job_id}/cancel"): "admin",
    ("POST", "/api/studies/{study_key}/rerun"): "admin",
    ("POST", "/api/studies/{study_key}/purge"): "admin",
    ("GET", "/api/deliveries"): "admin",
    ("POST", "/api/deliveries/{delivery_id}/retry"): "admin",
    ("POST", "/api/deliveries/retry-dead"): "admin",
    ("GET", "/api/notifications"): "admin",
    ("POST", "/api/notifications/{notification_id}/retry"): "admin",
    ("POST", "/api/notifications/retry-dead"): "admin",
    ("POST", "/api/route/explain"): "admin",
    ("GET", "/api/routing"): "admin",
    ("POST", "/api/models/{name}/disable"): "admin",
    ("POST", "/api/models/{name}/enable"): "admin",
    # STOW-RS in (issue 22): sending studies starts pipelines and deliveries
    ("GET", "/api/backfill"): "admin",
    # IHE AI Workflow (issue 25): the UPS workitems claimed as Task Performer
    ("GET", "/api/workitems"): "admin",
    ("POST", "/dicomweb/studies"): "admin",
    ("POST", "/dicomweb/studies/{study}"): "admin",
}
RANK = {"observer": 1, "radiologist": 2, "admin": 3}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings: Settings = token_settings(tmp_path_factory.mktemp("roles") / "home")
    with TestClient(create_app(settings)) as c:
        yield c


def _routes(client: TestClient) -> list[RouteDecision]:
    found = route_decisions(client.app)  # type: ignore[arg-type]
    assert len(found) > 30
    return [r for r in found if r.method != "HEAD"]


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x-no-such", path)


def test_every_route_has_a_decision_and_it_is_the_table(client: TestClient) -> None:
    found = {(r.method, r.path): r.decision for r in _routes(client)}
    assert set(found) == set(ROLE_OF), "a route was added or removed: decide its role here"
    assert found == ROLE_OF


def test_no_credential_is_401_with_a_bearer_challenge(client: TestClient) -> None:
    for r in _routes(client):
        method, path = r.method, r.path
        if ROLE_OF[(method, path)] == "public":
            continue
        got = client.request(method, _url(path))
        assert got.status_code == 401, (method, path, got.status_code)
        assert got.headers["www-authenticate"].startswith("Bearer"), (method, path)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_let_in_or_refused_as_the_table_says(client: TestClient, role: str) -> None:
    for r in _routes(client):
        method, path = r.method, r.path
        needs = ROLE_OF[(method, path)]
        if needs == "public":
            continue
        got = client.request(method, _url(path), headers=bearer(role))
        denied = got.status_code == 403 and "role may not do this" in got.text
        if RANK[role] >= RANK[needs]:
            assert got.status_code != 401, (role, method, path, got.text)
            assert not denied, (role, method, path, got.text)
        else:
            assert denied, (role, method, path, got.status_code, got.text)
            assert f"needs the {needs} role" in got.json()["detail"]


def test_a_browser_without_a_session_is_sent_to_the_login_form(client: TestClient) -> None:
    for path in ("/review", "/review/x", "/observatory", "/docs"):
        got = client.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
        assert got.status_code == 303, path
        assert got.headers["location"].startswith("/login?next=%2F")


def test_health_is_open_but_says_only_the_status(client: TestClient) -> None:
    got = client.get("/health")
    assert got.status_code == 200
    assert got.json() == {"status": "ok"}
    full = client.get("/health", headers=bearer("observer")).json()
    assert full["status"] == "ok"
    assert {"dicom", "store", "spool", "models"} <= set(full)


def test_an_app_with_an_undecided_route_is_refused(client: TestClient) -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/undecided")
    def undecided() -> None: ...

    with pytest.raises(RuntimeError, match="/undecided"):
        check_routes(app)


def test_the_openapi_description_declares_bearer_auth(client: TestClient) -> None:
    schema = client.get("/openapi.json", headers=bearer("observer")).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "/api/studies" in schema["paths"]
    assert client.get("/docs", headers=bearer("observer")).status_code == 200


def test_tokens_are_never_in_the_audit_trail(client: TestClient) -> None:
    from .authkit import TOKENS

    settings = client.app.state.node.settings  # type: ignore[attr-defined]
    data = b"\n".join(p.read_bytes() for p in Path(settings.audit_path).rglob("*") if p.is_file())
    assert b"access_denied" in data
    for token in TOKENS.values():
        assert token.encode() not in data
