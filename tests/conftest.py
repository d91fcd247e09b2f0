"""Shared fixtures of the unit tests: settings on free loopback ports, a running node,
a PostgreSQL server for the session (``postgres_server``, issue 21) and a database of
one's own on it (``postgres_url``)."""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest

from cds.config import Settings, load_settings
from cds.logging import configure_logging
from cds.orchestrator import Node

from .store.pgcluster import PgCluster, with_database

REPO = Path(__file__).resolve().parent.parent
DICOM = REPO.parent / "shared" / "dicom"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(home: Path, **sections: dict[str, object]) -> Settings:
    data: dict[str, dict[str, object]] = {
        "dicom": {"host": "127.0.0.1", "port": free_port()},
        "http": {"port": free_port()},
        "spool": {"min_free_mb": 1},
        "assembly": {"quiet_time_s": 0.5, "check_interval_s": 0.05},
        "inference": {"model_dirs": []},  # tests that need models name their folder
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Settings(home=home, **data)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home")


@pytest.fixture
def node(settings: Settings) -> Iterator[Node]:
    n = Node(settings)
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def json_logs() -> Iterator[StringIO]:
    """Route every log line (structlog and stdlib) as JSON into a buffer for the test."""
    import logging

    buf = StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("json", "debug", stream=buf)
    try:
        yield buf
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A URL of a PostgreSQL server whose user may create databases: a throwaway
    cluster this test session starts (tests/store/pgcluster.py), stopped when it ends,
    or the server ``CDS_TEST_POSTGRES_URL`` names."""
    if url := os.environ.get("CDS_TEST_POSTGRES_URL"):
        yield url
        return
    cluster = PgCluster(free_port())
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.remove()


_DB_NUMBERS = itertools.count(1)


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


@pytest.fixture
def corpus() -> Path:
    if not DICOM.is_dir():
        pytest.skip(f"shared DICOM corpus not found at {DICOM}")
    return DICOM


__all__ = ["DICOM", "REPO", "free_port", "load_settings", "make_settings"]
