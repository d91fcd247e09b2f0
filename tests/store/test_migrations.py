"""issue 18: the store's schema moves by numbered migrations, each applied once, in order,
inside one transaction: a file written by the first cds (schema 1), or one that records no
version, opens with every table and column of this one and its data kept."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from cds.domain import JobState, StoreOutcome, StudyState
from cds.errors import StoreError
from cds.store import sqlite_schema
from cds.store.sqlite import SCHEMA_VERSION, SqliteStore
from cds.store.sqlite_schema import MIGRATIONS, AddColumn, Migration, into_wal

from .test_sqlite import rec

#: the tables of schema 1, as the first cds wrote them (git 9fc95c4, cds/store/sqlite.py)
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE studies (
    study_key TEXT PRIMARY KEY, study_uid TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
    calling_ae TEXT NOT NULL, first_received_at REAL NOT NULL, last_received_at REAL NOT NULL,
    complete_due_at REAL, completed_at REAL, reopened_count INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL);
CREATE INDEX studies_state_due ON studies (state, complete_due_at);
CREATE INDEX studies_last ON studies (last_received_at);
CREATE TABLE series (
    series_uid TEXT PRIMARY KEY, study_key TEXT NOT NULL REFERENCES studies (study_key),
    modality TEXT NOT NULL, series_number INTEGER, first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL);
CREATE INDEX series_study ON series (study_key);
CREATE TABLE instances (
    sop_uid TEXT PRIMARY KEY, study_key TEXT NOT NULL REFERENCES studies (study_key),
    series_uid TEXT NOT NULL REFERENCES series (series_uid), sop_class_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
    sha256 TEXT NOT NULL, version INTEGER NOT NULL, calling_ae TEXT NOT NULL,
    received_at REAL NOT NULL, duplicates_received INTEGER NOT NULL DEFAULT 0);
CREATE INDEX instances_series ON instances (series_uid);
CREATE INDEX instances_study ON instances (study_key);
CREATE TABLE instance_versions (
    sop_uid TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, received_at REAL NOT NULL, superseded_at REAL NOT NULL,
    PRIMARY KEY (sop_uid, version));
CREATE TABLE study_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, study_key TEXT NOT NULL, at REAL NOT NULL,
    kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE INDEX study_events_study ON study_events (study_key, at);
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, study_key TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT);
CREATE INDEX jobs_state ON jobs (state, created_at);
CREATE INDEX jobs_study ON jobs (study_key);
"""

#: a study of two instances, one of them replaced once, its history and a done job
DATA_1 = """
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO studies VALUES ('k1', '1.2.3', 'done', 'MOD', 1001.0, 1002.0, NULL, 1020.0, 0,
    1030.0);
INSERT INTO series VALUES ('1.2.3.1', 'k1', 'CT', 1, 1001.0, 1002.0);
INSERT INTO instances VALUES ('1.2.3.1.1', 'k1', '1.2.3.1', '1.2.840.10008.5.1.4.1.1.2',
    '1.2.840.10008.1.2.1', 'studies/k1/a.dcm', 100, 'aa', 1, 'MOD', 1001.0, 0);
INSERT INTO instances VALUES ('1.2.3.1.2', 'k1', '1.2.3.1', '1.2.840.10008.5.1.4.1.1.2',
    '1.2.840.10008.1.2.1', 'studies/k1/b2.dcm', 100, 'bb2', 2, 'MOD', 1002.0, 1);
INSERT INTO instance_versions VALUES ('1.2.3.1.2', 1, 'studies/k1/b1.dcm', 'bb1', 90, 1001.5,
    1002.0);
INSERT INTO study_events (study_key, at, kind, detail) VALUES ('k1', 1001.0, 'receiving',
    'from MOD'), ('k1', 1020.0, 'complete', 'quiet time elapsed'), ('k1', 1030.0, 'done', '');
INSERT INTO jobs VALUES ('j1', 'k1', 'p:m', 'done', 1021.0, 1029.0, 1, NULL);
"""


def _old_file(path: Path, *, meta: bool = True) -> Path:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1 + DATA_1)
    if not meta:
        db.execute("DROP TABLE meta")
    db.commit()
    db.close()
    return path


Shape = dict[str, tuple[list[tuple[object, ...]], list[tuple[str, list[str]]]]]


def _shape(path: Path) -> Shape:
    """Every table's columns (name, type, not null, default, key) in order, and its indexes."""
    db = sqlite3.connect(path)
    try:
        tables = [
            str(r[0])
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            t: (
                [tuple(c[1:]) for c in db.execute("SELECT * FROM pragma_table_info(?)", (t,))],
                sorted(
                    (str(i[1]), [str(c[2]) for c in db.execute(f"PRAGMA index_info({i[1]})")])
                    for i in db.execute("SELECT * FROM pragma_index_list(?)", (t,))
                ),
            )
            for t in tables
        }
    finally:
        db.close()


def _recorded(path: Path) -> str | None:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return None if row is None else str(row[0])
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()


def test_migrations_are_numbered_from_2_to_this_schema_version_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(2, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("meta", [True, False], ids=["schema-1", "no-version-recorded"])
def test_a_schema_1_store_opens_with_every_column_and_its_data_kept(
    tmp_path: Path, meta: bool
) -> None:
    SqliteStore(tmp_path / "new.db").close()
    path = _old_file(tmp_path / "old.db", meta=meta)

    store = SqliteStore(path)
    try:
        assert store.schema_version == SCHEMA_VERSION == 13
        detail = store.get_study("k1")
        assert detail is not None
        s = detail.summary
        assert (s.state, s.series_count, s.instance_count, s.completed_at) == (
            StudyState.DONE,
            1,
            2,
            1020.0,
        )
        assert [e.kind for e in detail.events] == ["receiving", "complete", "done"]
        assert store.find_instance("1.2.3.1.2") == ("bb2", "studies/k1/b2.dcm")
        assert store.instance_paths("k1") == [
            "studies/k1/a.dcm",
            "studies/k1/b1.dcm",
            "studies/k1/b2.dcm",
        ]
        (job,) = store.list_jobs()
        assert (job.job_id, job.state, job.attempts, job.started_at, job.objects) == (
            "j1",
            JobState.DONE,
            1,
            None,
            (),
        )
        # the tables and columns added since work on the old file
        again = store.record_instance(rec(3, study_key="k1", sha256="cc"))
        assert (again.outcome, again.reopened) == (StoreOutcome.NEW, True)
        job = store.create_job("k1", "p:m", now=2000.0)
        running = store.set_job_state(job.job_id, JobState.RUNNING, now=2001.0)
        assert running.started_at == 2001.0
        assert store.list_deliveries() == []
        assert store.list_feedback() == []
        assert store.list_runs() == []
    finally:
        store.close()
    assert _shape(path) == _shape(tmp_path / "new.db")
    assert _recorded(path) == str(SCHEMA_VERSION)


def test_stores_opening_an_old_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """The node and a CLI may open the same file together: the version is read inside
    the migration's write transaction, so the second finds the work done."""
    SqliteStore(tmp_path / "new.db").close()
    path = _old_file(tmp_path / "old.db")
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        start.wait()
        try:
            SqliteStore(path).close()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _shape(path) == _shape(tmp_path / "new.db")


def test_a_step_runs_only_above_the_version_the_file_records(tmp_path: Path) -> None:
    """The version is read, not guessed from the tables: a file that says 8 gets no step."""
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE feedback DROP COLUMN corrected_box")
    db.commit()
    db.close()
    SqliteStore(path).close()
    columns, _ = _shape(path)["feedback"]
    assert "corrected_box" not in [c[0] for c in columns]


def test_a_failed_step_leaves_the_old_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step and the version are one transaction: a step that fails undoes the
    steps before it (SQLite's DDL is transactional)."""
    path = _old_file(tmp_path / "old.db")
    before = _shape(path)
    bad = Migration(SCHEMA_VERSION + 1, "refused", (AddColumn("jobs", "x", "TEXT NOT NULL"),))
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", (*MIGRATIONS, bad))
    with pytest.raises(
        StoreError, match=rf"schema step {SCHEMA_VERSION + 1} \(refused\) failed, .*NOT NULL"
    ):
        SqliteStore(path)
    assert _shape(path) == before
    assert _recorded(path) == "1"


class _Racing:
    """A connection whose journal switch is answered SQLITE_BUSY ``busy`` times (another
    connection switching the same file at that moment), then done."""

    def __init__(self, busy: int, name: str = "SQLITE_BUSY") -> None:
        self.busy, self.name, self.asked = busy, name, 0

    def execute(self, sql: str) -> None:
        assert sql == "PRAGMA journal_mode=WAL"
        self.asked += 1
        if self.asked <= self.busy:
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorname = self.name  # type: ignore[attr-defined]
            raise exc


def test_a_journal_switch_answered_busy_at_once_is_asked_again_until_the_timeout() -> None:
    """SQLite answers one of two connections switching an old file to WAL at once
    SQLITE_BUSY without waiting its busy timeout: the store asks again (the test above
    failed about 1 time in 15 before)."""
    racing = _Racing(busy=3)
    into_wal(racing, timeout_s=5)  # type: ignore[arg-type]
    assert racing.asked == 4
    with pytest.raises(sqlite3.OperationalError):  # not forever
        into_wal(_Racing(busy=10**9), timeout_s=0.05)  # type: ignore[arg-type]
    other = _Racing(busy=1, name="SQLITE_IOERR")  # any other error: at once
    with pytest.raises(sqlite3.OperationalError):
        into_wal(other, timeout_s=5)  # type: ignore[arg-type]
    assert other.asked == 1
