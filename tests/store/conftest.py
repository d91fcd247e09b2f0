"""The store tests run against both stores: the fixture ``store`` is parametrised
``["sqlite", "postgresql"]`` (issue 21: one contract suite for both).

PostgreSQL is a real server: a throwaway cluster this test session starts with
Debian's ``initdb`` and ``pg_ctl`` in a temporary folder (a unix socket there, a free
port number, no TCP), stopped when the session ends; or the server
``CDS_TEST_POSTGRES_URL`` names (a user that may create databases). Each test gets
a database of its own. Without PostgreSQL's binaries (or psycopg) the PostgreSQL side
skips with the reason, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from glob import glob
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from cds.store.base import StateStore
from cds.store.sqlite import SqliteStore

from ..conftest import free_port

BACKENDS = ["sqlite", "postgresql"]
_DB_NUMBERS = itertools.count(1)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is needed in CI: {reason}")
    pytest.skip(reason)


def _pg_bin() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _as_postgres(argv: list[str]) -> list[str]:
    """``argv`` as the ``postgres`` user when run as root (initdb refuses root)."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A URL of a PostgreSQL server whose user may create databases."""
    if url := os.environ.get("CDS_TEST_POSTGRES_URL"):
        yield url
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[postgres]')")
    bindir = _pg_bin()
    if bindir is None:
        _unavailable("PostgreSQL's binaries are absent (Debian package postgresql)")
        raise AssertionError  # unreachable: skip or fail raised
    tmp = Path(tempfile.mkdtemp(prefix="cds-pg-"))
    data, port = tmp / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    log = tmp / "server.log"
    try:
        subprocess.run(
            _as_postgres(
                [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "cds",
                 "-E", "UTF8", "--locale=C", "--no-sync"]
            ),
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        options = (
            f"-k {tmp} -p {port} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            _as_postgres(
                [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
                 "-w", "-t", "60", "start"]
            ),
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        text = log.read_text() if log.exists() else ""
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"cannot start the test cluster: {exc.stderr}{exc.stdout}{text}")
    try:
        yield f"postgresql://cds@/postgres?host={tmp}&port={port}"
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(tmp, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A new empty database for one test, dropped after it."""
    import psycopg

    name = f"cds_test_{os.getpid()}_{next(_DB_NUMBERS)}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(postgres_server, name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


StoreOpener = Callable[[], StateStore]


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

        def opener() -> StateStore:
            return SqliteStore(tmp_path / "state.db")
    else:
        url = request.getfixturevalue("postgres_url")
        from cds.store.postgres import PostgresStore

        def opener() -> StateStore:
            return PostgresStore(url)

    def tracked() -> StateStore:
        opened.append(opener())
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
