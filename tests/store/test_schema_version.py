"""issue 18: the store's schema version is read: an older file is brought up to date, a
newer one (written by a later cds) is refused and left as it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cds.errors import StoreError
from cds.store.sqlite import SCHEMA_VERSION, SqliteStore


def test_a_new_store_records_this_schema_version(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    try:
        assert store.schema_version == SCHEMA_VERSION
    finally:
        store.close()


def test_a_store_written_by_a_newer_cds_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than"):
        SqliteStore(path)
    assert path.read_bytes() == before
