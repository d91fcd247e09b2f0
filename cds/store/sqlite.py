"""SQLite implementation of the state store (the embedded default).

One connection shared by every thread behind a lock, WAL journal; rows are read by
column name (``sqlite3.Row``). Commits use
``synchronous=NORMAL``: a commit survives a crash of the node process (kill -9);
after a power loss the last commits may be lost, and the node re-indexes
every spooled file the store does not know at start (see
``orchestrator.Node.reconcile``), so an acknowledged instance is never lost:
the fsync'd spool file is the source of truth.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cds.domain import (
    InstanceRecord,
    JobState,
    QueueStats,
    RecordResult,
    SeriesSummary,
    StoreOutcome,
    StudyDetail,
    StudyEvent,
    StudyState,
    StudySummary,
)
from cds.errors import StoreError
from cds.store.base import one_by_one
from cds.store.claims import LEASE_S, ClaimsMixin, default_node
from cds.store.sqlite_feedback import FeedbackMixin
from cds.store.sqlite_jobs import JobsMixin
from cds.store.sqlite_observatory import ObservatoryMixin
from cds.store.sqlite_outbox import OutboxMixin
from cds.store.sqlite_schema import (
    SCHEMA_VERSION,
    into_wal,
    migrate,
    recorded_version,
    refuse_newer,
)

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

_STUDY_SUMMARY_SQL = """
SELECT s.study_key, s.study_uid, s.state, s.calling_ae, s.first_received_at,
       s.last_received_at, s.complete_due_at, s.completed_at, s.reopened_count,
       s.updated_at,
       (SELECT COUNT(*) FROM series r WHERE r.study_key = s.study_key) AS series_count,
       (SELECT COUNT(*) FROM instances i WHERE i.study_key = s.study_key) AS instance_count,
       (SELECT group_concat(DISTINCT r.modality) FROM series r WHERE r.study_key = s.study_key)
           AS modalities,
       (SELECT group_concat(DISTINCT i.received_by) FROM instances i
        WHERE i.study_key = s.study_key) AS received_by
FROM studies s
"""

_ACTIVE = StudyState.RECEIVING.value


class SqliteStore(ClaimsMixin, JobsMixin, OutboxMixin, FeedbackMixin, ObservatoryMixin):
    """StateStore on one SQLite file, of the node named ``node`` (``claims``)."""

    _PARAM = "?"
    _SKIP_LOCKED = ""  # BEGIN IMMEDIATE: one writer at a time

    def __init__(self, path: Path, *, node: str | None = None, lease_s: float = LEASE_S) -> None:
        self.path = path
        self.node = node or default_node()
        self.lease_s = lease_s
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.row_factory = sqlite3.Row
            into_wal(self._db, timeout_s=30)  # the connection's own busy timeout
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state store {path}: {exc}") from exc
        try:
            refuse_newer(recorded_version(self._db), path)  # before taking the write lock
            with self._tx() as db:
                migrate(db, path)
        except BaseException:
            self._db.close()
            raise

    @property
    def schema_version(self) -> int:
        """The schema version the file records (this cds' after opening it)."""
        with self._lock:
            return recorded_version(self._db) or 0

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"state store error: {exc}") from exc

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"state store error: {exc}") from exc

    def ping(self) -> bool:
        try:
            return [tuple(r) for r in self._query("SELECT 1")] == [(1,)]
        except StoreError:
            return False

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- instances -------------------------------------------------------
    def find_instance(self, sop_uid: str) -> tuple[str, str] | None:
        rows = self._query("SELECT sha256, path FROM instances WHERE sop_uid = ?", (sop_uid,))
        return (str(rows[0]["sha256"]), str(rows[0]["path"])) if rows else None

    def known_paths(self) -> set[str]:
        rows = self._query("SELECT path FROM instances UNION SELECT path FROM instance_versions")
        return {str(r["path"]) for r in rows}

    def instance_paths(self, study_key: str) -> list[str]:
        rows = self._query(
            "SELECT path FROM instances WHERE study_key = ? UNION "
            "SELECT v.path FROM instance_versions v JOIN instances i ON i.sop_uid = v.sop_uid "
            "WHERE i.study_key = ? ORDER BY 1",
            (study_key, study_key),
        )
        return [str(r["path"]) for r in rows]

    def record_instance(self, rec: InstanceRecord) -> RecordResult:
        with self._tx() as db:
            return self._record(db, rec)

    def record_instances(self, recs: Sequence[InstanceRecord]) -> list[RecordResult | StoreError]:
        try:  # one transaction; should it fail, one each (base.one_by_one)
            with self._tx() as db:
                return [self._record(db, rec) for rec in recs]
        except StoreError as exc:
            return one_by_one(self.record_instance, recs, exc)

    def _record(self, db: sqlite3.Connection, rec: InstanceRecord) -> RecordResult:
        row = db.execute(
            "SELECT sha256, version, path, size, received_at FROM instances WHERE sop_uid = ?",
            (rec.sop_uid,),
        ).fetchone()
        if row is not None and row["sha256"] == rec.sha256:
            db.execute(
                "UPDATE instances SET duplicates_received = duplicates_received + 1 "
                "WHERE sop_uid = ?",
                (rec.sop_uid,),
            )
            return RecordResult(StoreOutcome.DUPLICATE, rec.study_key, False, int(row["version"]))

        reopened = self._touch_study(db, rec)
        self._touch_series(db, rec)
        if row is None:
            outcome, version = StoreOutcome.NEW, 1
            db.execute(
                "INSERT INTO instances (sop_uid, study_key, series_uid, sop_class_uid, "
                "transfer_syntax_uid, path, size, sha256, version, calling_ae, received_at, "
                "received_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.sop_uid,
                    rec.study_key,
                    rec.series_uid,
                    rec.sop_class_uid,
                    rec.transfer_syntax_uid,
                    rec.path,
                    rec.size,
                    rec.sha256,
                    1,
                    rec.calling_ae,
                    rec.received_at,
                    self.node,
                ),
            )
        else:
            outcome, version = StoreOutcome.REPLACED, int(row["version"]) + 1
            db.execute(
                "INSERT INTO instance_versions (sop_uid, version, path, sha256, size, "
                "received_at, superseded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.sop_uid,
                    row["version"],
                    row["path"],
                    row["sha256"],
                    row["size"],
                    row["received_at"],
                    rec.received_at,
                ),
            )
            db.execute(
                "UPDATE instances SET study_key = ?, series_uid = ?, sop_class_uid = ?, "
                "transfer_syntax_uid = ?, path = ?, size = ?, sha256 = ?, version = ?, "
                "calling_ae = ?, received_at = ?, received_by = ? WHERE sop_uid = ?",
                (
                    rec.study_key,
                    rec.series_uid,
                    rec.sop_class_uid,
                    rec.transfer_syntax_uid,
                    rec.path,
                    rec.size,
                    rec.sha256,
                    version,
                    rec.calling_ae,
                    rec.received_at,
                    self.node,
                    rec.sop_uid,
                ),
            )
            self._event(
                db,
                rec.study_key,
                rec.received_at,
                "instance_replaced",
                f"SOP Instance {rec.sop_uid} version {version} (newest wins, "
                f"version {row['version']} kept)",
            )
        return RecordResult(outcome, rec.study_key, reopened, version)

    def _touch_study(self, db: sqlite3.Connection, rec: InstanceRecord) -> bool:
        due = rec.received_at + rec.quiet_time_s
        row = db.execute(
            "SELECT state, last_received_at, complete_due_at FROM studies WHERE study_key = ?",
            (rec.study_key,),
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO studies (study_key, study_uid, state, calling_ae, "
                "first_received_at, last_received_at, complete_due_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.study_key,
                    rec.study_uid,
                    _ACTIVE,
                    rec.calling_ae,
                    rec.received_at,
                    rec.received_at,
                    due,
                    rec.received_at,
                ),
            )
            self._event(db, rec.study_key, rec.received_at, "receiving", f"from {rec.calling_ae}")
            return False
        reopened = row["state"] != _ACTIVE
        db.execute(
            "UPDATE studies SET state = ?, calling_ae = ?,"
            " last_received_at = MAX(?, last_received_at),"
            " complete_due_at = MAX(?, COALESCE(complete_due_at, 0)), updated_at = ?,"
            " reopened_count = reopened_count + ? WHERE study_key = ?",
            (
                _ACTIVE,
                rec.calling_ae,
                rec.received_at,
                due,
                rec.received_at,
                1 if reopened else 0,
                rec.study_key,
            ),
        )
        if reopened:
            self._event(
                db,
                rec.study_key,
                rec.received_at,
                "reopened",
                f"late instance after state {row['state']}, from {rec.calling_ae}",
            )
        return bool(reopened)

    def _touch_series(self, db: sqlite3.Connection, rec: InstanceRecord) -> None:
        db.execute(
            "INSERT INTO series (series_uid, study_key, modality, series_number, "
            "first_received_at, last_received_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (series_uid) DO UPDATE SET "
            "last_received_at = MAX(excluded.last_received_at, last_received_at)",
            (
                rec.series_uid,
                rec.study_key,
                rec.modality,
                rec.series_number,
                rec.received_at,
                rec.received_at,
            ),
        )

    @staticmethod
    def _event(db: sqlite3.Connection, study_key: str, at: float, kind: str, detail: str) -> None:
        db.execute(
            "INSERT INTO study_events (study_key, at, kind, detail) VALUES (?, ?, ?, ?)",
            (study_key, at, kind, detail),
        )

    # --- studies ---------------------------------------------------------
    @staticmethod
    def _summary(row: sqlite3.Row) -> StudySummary:
        mods = str(row["modalities"]) if row["modalities"] else ""
        return StudySummary(
            study_key=str(row["study_key"]),
            study_uid=str(row["study_uid"]),
            state=StudyState(str(row["state"])),
            calling_ae=str(row["calling_ae"]),
            first_received_at=float(row["first_received_at"]),
            last_received_at=float(row["last_received_at"]),
            complete_due_at=_opt_float(row["complete_due_at"]),
            completed_at=_opt_float(row["completed_at"]),
            reopened_count=int(row["reopened_count"]),
            updated_at=float(row["updated_at"]),
            series_count=int(row["series_count"]),
            instance_count=int(row["instance_count"]),
            modalities=tuple(sorted(m for m in mods.split(",") if m)),
            received_by=tuple(sorted(n for n in str(row["received_by"] or "").split(",") if n)),
        )

    def list_studies(
        self, state: StudyState | None = None, limit: int = 100, offset: int = 0
    ) -> list[StudySummary]:
        where, args = ("WHERE s.state = ?", (state.value,)) if state is not None else ("", ())
        rows = self._query(
            f"{_STUDY_SUMMARY_SQL} {where} ORDER BY s.last_received_at DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [self._summary(r) for r in rows]

    def get_study(self, study_key: str) -> StudyDetail | None:
        rows = self._query(f"{_STUDY_SUMMARY_SQL} WHERE s.study_key = ?", (study_key,))
        if not rows:
            return None
        series = self._query(
            "SELECT r.series_uid, r.modality, r.series_number, "
            "(SELECT COUNT(*) FROM instances i WHERE i.series_uid = r.series_uid) "
            "AS instance_count, "
            "r.first_received_at, r.last_received_at FROM series r WHERE r.study_key = ? "
            "ORDER BY r.series_number, r.first_received_at",
            (study_key,),
        )
        events = self._query(
            "SELECT at, kind, detail FROM study_events WHERE study_key = ? ORDER BY at, id",
            (study_key,),
        )
        return StudyDetail(
            summary=self._summary(rows[0]),
            series=tuple(
                SeriesSummary(
                    series_uid=str(r["series_uid"]),
                    modality=str(r["modality"]),
                    series_number=None if r["series_number"] is None else int(r["series_number"]),
                    instance_count=int(r["instance_count"]),
                    first_received_at=float(r["first_received_at"]),
                    last_received_at=float(r["last_received_at"]),
                )
                for r in series
            ),
            events=tuple(
                StudyEvent(at=float(e["at"]), kind=str(e["kind"]), detail=str(e["detail"]))
                for e in events
            ),
        )

    def studies_due(self, now: float) -> list[str]:
        rows = self._query(
            "SELECT study_key FROM studies WHERE state = ? AND complete_due_at <= ? "
            "ORDER BY complete_due_at",
            (_ACTIVE, now),
        )
        return [str(r["study_key"]) for r in rows]

    def set_study_state(
        self, study_key: str, state: StudyState, detail: str = "", now: float | None = None
    ) -> None:
        at = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute(
                "UPDATE studies SET state = ?, updated_at = ? WHERE study_key = ?",
                (state.value, at, study_key),
            )
            if cur.rowcount != 1:
                raise KeyError(f"no study with key {study_key}")
            self._event(db, study_key, at, state.value, detail)

    def count_studies_by_state(self) -> dict[StudyState, int]:
        counts = dict.fromkeys(StudyState, 0)
        for r in self._query("SELECT state, COUNT(*) AS n FROM studies GROUP BY state"):
            counts[StudyState(str(r["state"]))] = int(r["n"])
        return counts

    def record_event(
        self, study_key: str, kind: str, detail: str = "", now: float | None = None
    ) -> None:
        with self._tx() as db:
            self._event(db, study_key, time.time() if now is None else now, kind, detail)

    def mark_purged(
        self, study_key: str, paths: Collection[str], detail: str, now: float | None = None
    ) -> bool:
        at = time.time() if now is None else now
        gone = set(paths)
        with self._tx() as db:
            if (
                db.execute("SELECT 1 FROM studies WHERE study_key = ?", (study_key,)).fetchone()
                is None
            ):
                raise KeyError(f"no study with key {study_key}")
            current = db.execute(
                "SELECT sop_uid, path FROM instances WHERE study_key = ?", (study_key,)
            ).fetchall()
            for row in current:
                sop_uid = row["sop_uid"]
                if row["path"] in gone:
                    # its superseded versions go with it: a re-sent instance starts
                    # again at version 1, so none may be left behind under its UID
                    db.execute("DELETE FROM instance_versions WHERE sop_uid = ?", (sop_uid,))
                    db.execute("DELETE FROM instances WHERE sop_uid = ?", (sop_uid,))
                else:  # arrived during the purge: keep it, drop only purged old versions
                    for version in db.execute(
                        "SELECT path FROM instance_versions WHERE sop_uid = ?", (sop_uid,)
                    ).fetchall():
                        if version["path"] in gone:
                            db.execute(
                                "DELETE FROM instance_versions WHERE sop_uid = ? AND path = ?",
                                (sop_uid, version["path"]),
                            )
            db.execute(
                "DELETE FROM series WHERE study_key = ? AND NOT EXISTS "
                "(SELECT 1 FROM instances i WHERE i.series_uid = series.series_uid)",
                (study_key,),
            )
            left = int(
                db.execute(
                    "SELECT COUNT(*) AS n FROM instances WHERE study_key = ?", (study_key,)
                ).fetchone()["n"]
            )
            if left:
                detail += f"; {left} instance(s) received during the purge kept"
            else:
                db.execute(
                    "UPDATE studies SET state = ?, complete_due_at = NULL, updated_at = ? "
                    "WHERE study_key = ?",
                    (StudyState.PURGED.value, at, study_key),
                )
            self._event(db, study_key, at, "purged", detail)
            return not left

    # --- jobs: see sqlite_jobs.JobsMixin --------------------------------
    def queue_stats(self) -> QueueStats:
        return queue_stats_of(self, "?")


def queue_stats_of(store: Any, param: str) -> QueueStats:
    """The queue's figures from ``store``'s ``_query``, ``count_studies_by_state`` and
    ``delivery_counts``; ``param`` is its driver's placeholder (SQLite ``?``, psycopg
    ``%s``): the one query both stores run."""
    jobs = {
        JobState(str(r["state"])): (int(r["n"]), _opt_float(r["oldest"]))
        for r in store._query(
            "SELECT state, COUNT(*) AS n, MIN(created_at) AS oldest FROM jobs "
            f"WHERE state IN ({param}, {param}) GROUP BY state",
            (JobState.QUEUED.value, JobState.RUNNING.value),
        )
    }
    queued, oldest = jobs.get(JobState.QUEUED, (0, None))
    studies = store.count_studies_by_state()
    pending, dead, oldest_delivery = store.delivery_counts()
    return QueueStats(
        jobs_queued=queued,
        jobs_running=jobs.get(JobState.RUNNING, (0, None))[0],
        oldest_queued_at=oldest,
        studies_receiving=studies[StudyState.RECEIVING],
        studies_complete_waiting=studies[StudyState.COMPLETE],
        deliveries_pending=pending,
        deliveries_dead=dead,
        oldest_pending_delivery_at=oldest_delivery,
    )


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)
