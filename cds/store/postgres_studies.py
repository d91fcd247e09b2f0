"""Instances and studies of the PostgreSQL store (the ``InstanceStore`` and
``StudyStore`` roles; the contract is in ``base``, the SQLite twin in ``sqlite``).

Recording an instance takes two transaction advisory locks, on its SOP Instance UID
and on its study key, before reading what is known of them: two nodes receiving the
same instance (or the first instances of one study) at once are counted as SQLite
counts them one after the other. A purge takes the study's lock too.
"""

# SQL text is built only from constant fragments; every value is a bound parameter
# (as in the sqlite_* modules, exempted in pyproject.toml)

from __future__ import annotations

import functools
import time
from collections.abc import Collection, Sequence

from cds.domain import (
    InstanceRecord,
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
from cds.store.postgres_host import Db, Row, as_row, one
from cds.store.postgres_host import PostgresHost as _Host
from cds.store.sqlite import SqliteStore

_STUDY_SUMMARY_SQL = """
SELECT s.study_key, s.study_uid, s.state, s.calling_ae, s.first_received_at,
       s.last_received_at, s.complete_due_at, s.completed_at, s.reopened_count,
       s.updated_at,
       (SELECT COUNT(*) FROM series r WHERE r.study_key = s.study_key) AS series_count,
       (SELECT COUNT(*) FROM instances i WHERE i.study_key = s.study_key) AS instance_count,
       (SELECT string_agg(DISTINCT r.modality, ',') FROM series r
        WHERE r.study_key = s.study_key) AS modalities,
       (SELECT string_agg(DISTINCT i.received_by, ',') FROM instances i
        WHERE i.study_key = s.study_key) AS received_by
FROM studies s
"""

_ACTIVE = StudyState.RECEIVING.value


def opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _lock(db: Db, *names: str) -> None:
    """Transaction advisory locks on ``names`` (64-bit hashes), in the order given."""
    for name in names:
        db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))


def _names(rec: InstanceRecord) -> tuple[str, str]:
    """The advisory locks recording ``rec`` takes: "sop:" sorts before "study:"."""
    return f"sop:{rec.sop_uid}", f"study:{rec.study_key}"


def _summary(row: Row) -> StudySummary:
    return SqliteStore._summary(as_row(row))  # the one row reader of both stores


def _record(self: _Host, db: Db, rec: InstanceRecord) -> RecordResult:
    """Record ``rec`` in the transaction ``db``, which holds its locks (``_names``)."""
    row = one(
        db,
        "SELECT sha256, version, path, size, received_at FROM instances WHERE sop_uid = %s",
        (rec.sop_uid,),
    )
    if row is not None and row["sha256"] == rec.sha256:
        db.execute(
            "UPDATE instances SET duplicates_received = duplicates_received + 1 WHERE sop_uid = %s",
            (rec.sop_uid,),
        )
        return RecordResult(StoreOutcome.DUPLICATE, rec.study_key, False, int(row["version"]))
    reopened = _touch_study(db, rec)
    _touch_series(db, rec)
    if row is None:
        outcome, version = StoreOutcome.NEW, 1
        db.execute(
            "INSERT INTO instances (sop_uid, study_key, series_uid, sop_class_uid, "
            "transfer_syntax_uid, path, size, sha256, version, calling_ae, received_at, "
            "received_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
            "received_at, superseded_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
            "UPDATE instances SET study_key = %s, series_uid = %s, sop_class_uid = %s, "
            "transfer_syntax_uid = %s, path = %s, size = %s, sha256 = %s, version = %s, "
            "calling_ae = %s, received_at = %s, received_by = %s WHERE sop_uid = %s",
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


class StudiesMixin:
    """Instances, series and studies of ``PostgresStore``."""

    @staticmethod
    def _event(db: Db, study_key: str, at: float, kind: str, detail: str) -> None:
        db.execute(
            "INSERT INTO study_events (study_key, at, kind, detail) VALUES (%s, %s, %s, %s)",
            (study_key, at, kind, detail),
        )

    # --- instances -------------------------------------------------------
    def find_instance(self: _Host, sop_uid: str) -> tuple[str, str] | None:
        rows = self._query("SELECT sha256, path FROM instances WHERE sop_uid = %s", (sop_uid,))
        return (str(rows[0]["sha256"]), str(rows[0]["path"])) if rows else None

    def known_paths(self: _Host) -> set[str]:
        rows = self._query("SELECT path FROM instances UNION SELECT path FROM instance_versions")
        return {str(r["path"]) for r in rows}

    def instance_paths(self: _Host, study_key: str) -> list[str]:
        rows = self._query(
            "SELECT path FROM instances WHERE study_key = %s UNION "
            "SELECT v.path FROM instance_versions v JOIN instances i ON i.sop_uid = v.sop_uid "
            "WHERE i.study_key = %s ORDER BY 1",
            (study_key, study_key),
        )
        return [str(r["path"]) for r in rows]

    def record_instance(self: _Host, rec: InstanceRecord) -> RecordResult:
        with self._tx() as db:
            _lock(db, *_names(rec))
            return _record(self, db, rec)

    def record_instances(
        self: _Host, recs: Sequence[InstanceRecord]
    ) -> list[RecordResult | StoreError]:
        """One transaction; its locks taken first, in one order for every transaction
        (each name sorted: one instance's own two are in that order too), so that two
        nodes' batches wait for each other rather than deadlock. Should it fail: one
        transaction each (``base.one_by_one``)."""
        try:
            with self._tx() as db:
                _lock(db, *sorted({n for rec in recs for n in _names(rec)}))
                return [_record(self, db, rec) for rec in recs]
        except StoreError as exc:
            return one_by_one(functools.partial(StudiesMixin.record_instance, self), recs, exc)

    # --- studies ---------------------------------------------------------
    def list_studies(
        self: _Host, state: StudyState | None = None, limit: int = 100, offset: int = 0
    ) -> list[StudySummary]:
        where, args = ("WHERE s.state = %s", (state.value,)) if state is not None else ("", ())
        rows = self._query(
            f"{_STUDY_SUMMARY_SQL} {where} ORDER BY s.last_received_at DESC LIMIT %s OFFSET %s",
            (*args, limit, offset),
        )
        return [_summary(r) for r in rows]

    def get_study(self: _Host, study_key: str) -> StudyDetail | None:
        rows = self._query(f"{_STUDY_SUMMARY_SQL} WHERE s.study_key = %s", (study_key,))
        if not rows:
            return None
        series = self._query(
            "SELECT r.series_uid, r.modality, r.series_number, "
            "(SELECT COUNT(*) FROM instances i WHERE i.series_uid = r.series_uid) "
            "AS instance_count, "
            "r.first_received_at, r.last_received_at FROM series r WHERE r.study_key = %s "
            "ORDER BY r.series_number NULLS FIRST, r.first_received_at",
            (study_key,),
        )
        events = self._query(
            "SELECT at, kind, detail FROM study_events WHERE study_key = %s ORDER BY at, id",
            (study_key,),
        )
        return StudyDetail(
            summary=_summary(rows[0]),
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

    def studies_due(self: _Host, now: float) -> list[str]:
        rows = self._query(
            "SELECT study_key FROM studies WHERE state = %s AND complete_due_at <= %s "
            "ORDER BY complete_due_at",
            (_ACTIVE, now),
        )
        return [str(r["study_key"]) for r in rows]

    def set_study_state(
        self: _Host, study_key: str, state: StudyState, detail: str = "", now: float | None = None
    ) -> None:
        at = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute(
                "UPDATE studies SET state = %s, updated_at = %s WHERE study_key = %s",
                (state.value, at, study_key),
            )
            if cur.rowcount != 1:
                raise KeyError(f"no study with key {study_key}")
            self._event(db, study_key, at, state.value, detail)

    def count_studies_by_state(self: _Host) -> dict[StudyState, int]:
        counts = dict.fromkeys(StudyState, 0)
        for r in self._query("SELECT state, COUNT(*) AS n FROM studies GROUP BY state"):
            counts[StudyState(str(r["state"]))] = int(r["n"])
        return counts

    def record_event(
        self: _Host, study_key: str, kind: str, detail: str = "", now: float | None = None
    ) -> None:
        with self._tx() as db:
            self._event(db, study_key, time.time() if now is None else now, kind, detail)

    def mark_purged(
        self: _Host, study_key: str, paths: Collection[str], detail: str, now: float | None = None
    ) -> bool:
        at = time.time() if now is None else now
        gone = set(paths)
        with self._tx() as db:
            _lock(db, f"study:{study_key}")
            if one(db, "SELECT 1 FROM studies WHERE study_key = %s", (study_key,)) is None:
                raise KeyError(f"no study with key {study_key}")
            current = db.execute(
                "SELECT sop_uid, path FROM instances WHERE study_key = %s", (study_key,)
            ).fetchall()
            for row in current:
                sop_uid = row["sop_uid"]
                if row["path"] in gone:
                    # its superseded versions go with it (see SqliteStore.mark_purged)
                    db.execute("DELETE FROM instance_versions WHERE sop_uid = %s", (sop_uid,))
                    db.execute("DELETE FROM instances WHERE sop_uid = %s", (sop_uid,))
                else:  # arrived during the purge: keep it, drop only purged old versions
                    db.execute(
                        "DELETE FROM instance_versions WHERE sop_uid = %s AND path = ANY(%s)",
                        (sop_uid, sorted(gone)),
                    )
            db.execute(
                "DELETE FROM series WHERE study_key = %s AND NOT EXISTS "
                "(SELECT 1 FROM instances i WHERE i.series_uid = series.series_uid)",
                (study_key,),
            )
            counted = one(
                db, "SELECT COUNT(*) AS n FROM instances WHERE study_key = %s", (study_key,)
            )
            left = int(counted["n"]) if counted is not None else 0
            if left:
                detail += f"; {left} instance(s) received during the purge kept"
            else:
                db.execute(
                    "UPDATE studies SET state = %s, complete_due_at = NULL, updated_at = %s "
                    "WHERE study_key = %s",
                    (StudyState.PURGED.value, at, study_key),
                )
            self._event(db, study_key, at, "purged", detail)
            return not left


def _touch_study(db: Db, rec: InstanceRecord) -> bool:
    due = rec.received_at + rec.quiet_time_s
    row = one(db, "SELECT state FROM studies WHERE study_key = %s FOR UPDATE", (rec.study_key,))
    if row is None:
        db.execute(
            "INSERT INTO studies (study_key, study_uid, state, calling_ae, "
            "first_received_at, last_received_at, complete_due_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
        StudiesMixin._event(
            db, rec.study_key, rec.received_at, "receiving", f"from {rec.calling_ae}"
        )
        return False
    reopened = row["state"] != _ACTIVE
    db.execute(
        "UPDATE studies SET state = %s, calling_ae = %s,"
        " last_received_at = GREATEST(%s, last_received_at),"
        " complete_due_at = GREATEST(%s, COALESCE(complete_due_at, 0)), updated_at = %s,"
        " reopened_count = reopened_count + %s WHERE study_key = %s",
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
        StudiesMixin._event(
            db,
            rec.study_key,
            rec.received_at,
            "reopened",
            f"late instance after state {row['state']}, from {rec.calling_ae}",
        )
    return bool(reopened)


def _touch_series(db: Db, rec: InstanceRecord) -> None:
    db.execute(
        "INSERT INTO series (series_uid, study_key, modality, series_number, "
        "first_received_at, last_received_at) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (series_uid) DO UPDATE SET "
        "last_received_at = GREATEST(excluded.last_received_at, series.last_received_at)",
        (
            rec.series_uid,
            rec.study_key,
            rec.modality,
            rec.series_number,
            rec.received_at,
            rec.received_at,
        ),
    )
