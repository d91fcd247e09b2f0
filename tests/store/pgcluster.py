"""A throwaway PostgreSQL cluster for tests (issue 21): Debian's ``initdb`` and
``pg_ctl`` in a temporary folder, a unix socket there, a free port number, no TCP.

The session's shared server (``postgres_server`` in tests/conftest.py) is one; a test
that stops its server mid-run (tests/ingest/test_store_down.py) starts one of its own,
so that the others' databases never go away under them. Without PostgreSQL's binaries
(or psycopg) a test needing one skips with the reason, except in CI (``CI=true``),
where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from glob import glob
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest


def unavailable(reason: str) -> None:
    """Skip (fail in CI) a test that needs PostgreSQL."""
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


def with_database(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


class PgCluster:
    """One cluster: ``start`` (initdb the first time), ``stop``, ``remove``; ``url``
    names its ``postgres`` database as the superuser ``cds`` (trust authentication)."""

    def __init__(self, port: int) -> None:
        try:
            import psycopg  # noqa: F401 (the optional extra)
        except ImportError:
            unavailable("psycopg is not installed (pip install -e '.[postgres]')")
        bindir = _pg_bin()
        if bindir is None:
            unavailable("PostgreSQL's binaries are absent (Debian package postgresql)")
            raise AssertionError  # unreachable: skip or fail raised
        self._bin = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="cds-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.port = port
        self._data = self.folder / "data"
        self._log = self.folder / "server.log"
        self.url = f"postgresql://cds@/postgres?host={self.folder}&port={port}"

    def _run(self, argv: list[str]) -> None:
        try:
            subprocess.run(
                _as_postgres([str(self._bin / argv[0]), *argv[1:]]),
                check=True, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            text = self._log.read_text() if self._log.exists() else ""
            pytest.fail(f"test cluster: {argv[0]} failed: {exc.stderr}{exc.stdout}{text}")

    def start(self) -> None:
        if not self._data.exists():
            self._run(
                ["initdb", "-D", str(self._data), "-A", "trust", "-U", "cds", "-E", "UTF8",
                 "--locale=C", "--no-sync"]
            )  # fmt: skip
        options = (
            f"-k {self.folder} -p {self.port} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            ["pg_ctl", "-D", str(self._data), "-o", options, "-l", str(self._log), "-w",
             "-t", "60", "start"]
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop``: ``fast`` ends every session (what an administrator's restart
        does), ``immediate`` as a crash would."""
        self._run(["pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop"])

    def remove(self) -> None:
        """Stop (if running) and delete the cluster."""
        subprocess.run(
            _as_postgres([str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate",
                          "stop"]),
            check=False, capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["PgCluster", "unavailable", "with_database"]
