"""issue 21 (item 3): ``GET /health`` shows the state store's kind, whether it answers
and where it is, on SQLite and on PostgreSQL (a real server, the session's cluster),
never with the URL's password; a store that does not answer makes the node
``unavailable`` (503). There is no ``cds health`` command: the CLI opens the store
itself, and says so when it cannot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds.api.app import create_app
from cds.config import Settings

from ..conftest import make_settings

PASSWORD = "s3cret-pw"  # noqa: S105 (a test value; the cluster trusts local users)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return make_settings(tmp_path / "home")
    url: str = request.getfixturevalue("postgres_url")
    url = url.replace("postgresql://cds@", f"postgresql://cds:{PASSWORD}@", 1)
    return make_settings(tmp_path / "home", store={"backend": "postgresql", "url": url})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:  # lifespan starts and stops the node
        yield c


def test_health_shows_the_store_kind_reachability_and_place(
    client: TestClient, settings: Settings
) -> None:
    r = client.get("/health")
    assert (r.status_code, r.json()["status"]) == (200, "ok")
    store = r.json()["store"]
    assert store["backend"] == settings.store.backend
    assert store["reachable"] is True
    if settings.store.backend == "sqlite":
        assert store["where"] == str(settings.sqlite_path)
    else:
        assert store["where"].startswith("postgresql://cds:***@/")
        assert PASSWORD not in r.text


def test_a_store_that_does_not_answer_makes_the_node_unavailable(client: TestClient) -> None:
    client.app.state.node.store.close()  # type: ignore[attr-defined]
    r = client.get("/health")
    assert (r.status_code, r.json()["status"]) == (503, "unavailable")
    assert r.json()["store"]["reachable"] is False
    assert PASSWORD not in r.text


def test_a_lost_postgresql_session_is_opened_again_by_the_ping(
    client: TestClient, settings: Settings
) -> None:
    """The server ended the node's session (an administrator, a failover): the next
    health check opens a new one and the store answers."""
    if settings.store.backend != "postgresql":
        pytest.skip("PostgreSQL only")
    import psycopg

    assert settings.store.url is not None
    with psycopg.connect(settings.store.url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    r = client.get("/health")
    assert (r.status_code, r.json()["store"]["reachable"]) == (200, True)
