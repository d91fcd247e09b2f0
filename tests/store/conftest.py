"""The store tests run against both stores: the fixture ``store`` is parametrised
``["sqlite", "postgresql"]`` (issue 21: one contract suite for both).

PostgreSQL is a real server: the session's throwaway cluster (``postgres_server`` in
tests/conftest.py, started by tests/store/pgcluster.py) or the server
``CDS_TEST_POSTGRES_URL`` names. Each test gets a database of its own
(``postgres_url``). Without PostgreSQL's binaries (or psycopg) the PostgreSQL side
skips with the reason, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cds.store.base import StateStore
from cds.store.sqlite import SqliteStore

from .pgcluster import with_database

BACKENDS = ["sqlite", "postgresql"]

StoreOpener = Callable[..., StateStore]  # (node=None, **kw): node.name; lease_s=...


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StoreOpener]:
    """Opens a store (again) on this test's place: one file, or one database; each open
    is a connection of its own (for PostgreSQL: as another node would)."""
    opened: list[StateStore] = []
    if backend == "sqlite":

        def opener(node: str | None = None, **kw: float) -> StateStore:
            return SqliteStore(tmp_path / "state.db", node=node, **kw)
    else:
        url = request.getfixturevalue("postgres_url")
        from cds.store.postgres import PostgresStore

        def opener(node: str | None = None, **kw: float) -> StateStore:
            return PostgresStore(url, node=node, **kw)

    def tracked(node: str | None = None, **kw: float) -> StateStore:
        opened.append(opener(node, **kw))
        return opened[-1]

    yield tracked
    for s in opened:
        with contextlib.suppress(Exception):
            s.close()


@pytest.fixture
def store(open_store: StoreOpener) -> StateStore:
    """The store under test, on each backend."""
    return open_store()


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[StateStore]:
    """A PostgreSQL store alone (tests of what only PostgreSQL has)."""
    from cds.store.postgres import PostgresStore

    s = PostgresStore(postgres_url)
    try:
        yield s
    finally:
        s.close()


__all__ = ["BACKENDS", "StoreOpener", "with_database"]
