"""Findings and the radiologists' feedback on them, in the SQLite store.

Feedback is append-only: a record is never updated or deleted, and never
changes the result it is about; the latest record per finding is its current
verdict.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence

from cds.domain import Feedback, FeedbackAction, FindingRecord, ImageBox
from cds.store.sqlite_host import SqliteHost as _Host

_FINDING_COLS = (
    "tracking_uid, result_sop_uid, study_key, job_kind, model, version, sha256, label_scheme, "
    "label_value, label_meaning, display_en, display_fr, present, score, created_at"
)
_FEEDBACK_COLS = (
    "feedback_id, tracking_uid, result_sop_uid, study_key, action, reason, corrected_scheme, "
    "corrected_value, corrected_meaning, who, source, at, model, version, sha256, corrected_box"
)


def _finding(row: sqlite3.Row) -> FindingRecord:
    return FindingRecord(
        tracking_uid=str(row["tracking_uid"]),
        result_sop_uid=str(row["result_sop_uid"]),
        study_key=str(row["study_key"]),
        job_kind=str(row["job_kind"]),
        model=str(row["model"]),
        version=str(row["version"]),
        sha256=str(row["sha256"]),
        label_scheme=str(row["label_scheme"]),
        label_value=str(row["label_value"]),
        label_meaning=str(row["label_meaning"]),
        display_en=str(row["display_en"]),
        display_fr=str(row["display_fr"]),
        present=bool(row["present"]),
        score=float(row["score"]),
        created_at=float(row["created_at"]),
    )


def _opt(v: object) -> str | None:
    return None if v is None else str(v)


def _box_json(box: ImageBox | None) -> str | None:
    if box is None:
        return None
    return json.dumps(
        {"sop_uid": box.sop_uid, "frame": box.frame, "box": [box.x0, box.y0, box.x1, box.y1]}
    )


def _box(value: object) -> ImageBox | None:
    if value is None:
        return None
    d = json.loads(str(value))
    x0, y0, x1, y1 = (float(v) for v in d["box"])
    return ImageBox(str(d["sop_uid"]), int(d["frame"]), x0, y0, x1, y1)


def _feedback(row: sqlite3.Row) -> Feedback:
    return Feedback(
        feedback_id=str(row["feedback_id"]),
        tracking_uid=str(row["tracking_uid"]),
        result_sop_uid=str(row["result_sop_uid"]),
        study_key=str(row["study_key"]),
        action=FeedbackAction(str(row["action"])),
        reason=str(row["reason"]),
        corrected_scheme=_opt(row["corrected_scheme"]),
        corrected_value=_opt(row["corrected_value"]),
        corrected_meaning=_opt(row["corrected_meaning"]),
        who=str(row["who"]),
        source=str(row["source"]),
        at=float(row["at"]),
        model=str(row["model"]),
        version=str(row["version"]),
        sha256=str(row["sha256"]),
        corrected_box=_box(row["corrected_box"]),
    )


class FeedbackMixin:
    """The findings/feedback half of ``SqliteStore`` (see ``StateStore`` for the contract)."""

    def record_findings(self: _Host, findings: Sequence[FindingRecord]) -> None:
        with self._tx() as db:
            db.executemany(
                f"INSERT INTO findings ({_FINDING_COLS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tracking_uid) "
                "DO NOTHING",
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
            f"SELECT {_FINDING_COLS} FROM findings WHERE study_key = ? "
            "ORDER BY created_at, result_sop_uid, rowid",
            (study_key,),
        )
        return [_finding(r) for r in rows]

    def get_finding(self: _Host, tracking_uid: str) -> FindingRecord | None:
        rows = self._query(
            f"SELECT {_FINDING_COLS} FROM findings WHERE tracking_uid = ?", (tracking_uid,)
        )
        return _finding(rows[0]) if rows else None

    def add_feedback(self: _Host, fb: Feedback) -> Feedback:
        with self._tx() as db:
            db.execute(
                f"INSERT INTO feedback ({_FEEDBACK_COLS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                clauses.append(f"{col} {op} ?")
                args.append(val)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {_FEEDBACK_COLS} FROM feedback {where} ORDER BY at, rowid LIMIT ?",
            (*args, limit),
        )
        return [_feedback(r) for r in rows]
