"""Findings and the radiologists' feedback on them, in the PostgreSQL store (the
``FeedbackStore`` role; the SQLite twin is ``sqlite_feedback``, whose row readers and
outline JSON this module shares). Feedback is append-only, as there; rows of the same
time keep their insertion order by ``seq`` (SQLite's rowid).
"""

# SQL text is built only from constant fragments; every value is a bound parameter
# (as in the sqlite_* modules, exempted in pyproject.toml)
# ruff: noqa: S608

from __future__ import annotations

import time
from collections.abc import Sequence

from cds.domain import Feedback, FindingRecord
from cds.store.postgres_host import PostgresHost as _Host
from cds.store.postgres_host import as_row
from cds.store.sqlite_feedback import _FEEDBACK_COLS, _FINDING_COLS, _box_json
from cds.store.sqlite_feedback import _feedback as _read_feedback
from cds.store.sqlite_feedback import _finding as _read_finding


class FeedbackMixin:
    """The findings/feedback half of ``PostgresStore`` (see ``FeedbackStore``)."""

    def record_findings(self: _Host, findings: Sequence[FindingRecord]) -> None:
        with self._tx() as db, db.cursor() as cur:
            cur.executemany(
                f"INSERT INTO findings ({_FINDING_COLS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tracking_uid) DO NOTHING",
                [
                    (
                        f.tracking_uid,
                        f.result_sop_uid,
                        f.study_key,
                        f.job_kind,
                        f.model,
                        f.version,
                        f.sha256,
                        f.label_scheme,
                        f.label_value,
                        f.label_meaning,
                        f.display_en,
                        f.display_fr,
                        int(f.present),
                        f.score,
                        f.created_at,
                    )
                    for f in findings
                ],
            )

    def list_findings(self: _Host, study_key: str) -> list[FindingRecord]:
        rows = self._query(
            f"SELECT {_FINDING_COLS} FROM findings WHERE study_key = %s "
            "ORDER BY created_at, result_sop_uid, seq",
            (study_key,),
        )
        return [_read_finding(as_row(r)) for r in rows]

    def get_finding(self: _Host, tracking_uid: str) -> FindingRecord | None:
        rows = self._query(
            f"SELECT {_FINDING_COLS} FROM findings WHERE tracking_uid = %s", (tracking_uid,)
        )
        return _read_finding(as_row(rows[0])) if rows else None

    def add_feedback(self: _Host, fb: Feedback) -> Feedback:
        with self._tx() as db:
            db.execute(
                f"INSERT INTO feedback ({_FEEDBACK_COLS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    fb.feedback_id,
                    fb.tracking_uid,
                    fb.result_sop_uid,
                    fb.study_key,
                    fb.action.value,
                    fb.reason,
                    fb.corrected_scheme,
                    fb.corrected_value,
                    fb.corrected_meaning,
                    fb.who,
                    fb.source,
                    fb.at,
                    fb.model,
                    fb.version,
                    fb.sha256,
                    _box_json(fb.corrected_box),
                ),
            )
            corrected = f" -> {fb.corrected_meaning}" if fb.corrected_meaning else ""
            if fb.corrected_box is not None:
                corrected += " -> new outline"
            self._event(
                db,
                fb.study_key,
                fb.at if fb.at else time.time(),
                f"feedback_{fb.action.value}",
                f"{fb.model} {fb.version} finding {fb.tracking_uid}{corrected} "
                f"by {fb.who} ({fb.source})",
            )
        return fb

    def list_feedback(
        self: _Host,
        study_key: str | None = None,
        tracking_uid: str | None = None,
        model: str | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[Feedback]:
        clauses, args = [], []
        for col, op, val in (
            ("study_key", "=", study_key),
            ("tracking_uid", "=", tracking_uid),
            ("model", "=", model),
            ("at", ">=", since),
        ):
            if val is not None:
                clauses.append(f"{col} {op} %s")
                args.append(val)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {_FEEDBACK_COLS} FROM feedback {where} ORDER BY at, seq LIMIT %s",
            (*args, limit),
        )
        return [_read_feedback(as_row(r)) for r in rows]
