"""Jobs of the SQLite store: one per pipeline run on a study, with its state, its error
and (schema 7) what became of each result object it was to make.

``objects`` is a JSON list of ``{"kind", "made", "failed", "reason"}``; reasons are in
words, never data values (``cds.errors.safe_message``), since ``cds jobs``,
``/api/jobs`` and the review page show them.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence

from cds.domain import Job, JobState, ObjectOutcome
from cds.store.sqlite_host import SqliteHost as _Host

OPEN_JOB_STATES = (JobState.QUEUED, JobState.RUNNING)
FINAL_JOB_STATES = (
    JobState.DONE,
    JobState.PARTIAL,
    JobState.FAILED,
    JobState.SKIPPED,
    JobState.CANCELLED,
)
#: seconds a node's claim on a study or a job lasts unless it renews it (``claims``):
#: the default of ``node.lease_s``, a store's ``lease_s``
LEASE_S = 60.0
_JOB_COLS = (
    "job_id, study_key, kind, state, created_at, updated_at, attempts, error, "
    "started_at, finished_at, objects, claimed_by"
)


def _opt(v: float | None) -> float | None:
    return None if v is None else float(v)


def _objects(text: object) -> tuple[ObjectOutcome, ...]:
    if not text:
        return ()
    try:
        items = json.loads(str(text))
        return tuple(
            ObjectOutcome(
                kind=str(o["kind"]),
                made=bool(o["made"]),
                failed=bool(o.get("failed", False)),
                reason=str(o.get("reason", "")),
            )
            for o in items
        )
    except (ValueError, TypeError, KeyError):
        return ()  # a store edited by hand: the job still lists


def _objects_json(objects: Sequence[ObjectOutcome] | None) -> str | None:
    if objects is None:
        return None
    return json.dumps(
        [{"kind": o.kind, "made": o.made, "failed": o.failed, "reason": o.reason} for o in objects]
    )


def _job(row: sqlite3.Row) -> Job:
    return Job(
        job_id=str(row["job_id"]),
        study_key=str(row["study_key"]),
        kind=str(row["kind"]),
        state=JobState(str(row["state"])),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        attempts=int(row["attempts"]),
        error=None if row["error"] is None else str(row["error"]),
        started_at=_opt(row["started_at"]),
        finished_at=_opt(row["finished_at"]),
        objects=_objects(row["objects"]),
        claimed_by=None if row["claimed_by"] is None else str(row["claimed_by"]),
    )


def _job_in(db: sqlite3.Connection, job_id: str) -> Job:
    found = db.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if found is None:
        raise KeyError(f"no job with id {job_id}")
    return _job(found)


class JobsMixin:
    def create_job(self: _Host, study_key: str, kind: str, now: float | None = None) -> Job:
        at = time.time() if now is None else now
        job_id = uuid.uuid4().hex
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (job_id, study_key, kind, state, created_at, updated_at, "
                "claimed_by, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, study_key, kind, JobState.QUEUED.value, at, at, self.node,
                 at + self.lease_s),
            )  # fmt: skip
            self._event(db, study_key, at, "job_queued", f"{kind} job {job_id}")
        return Job(job_id, study_key, kind, JobState.QUEUED, at, at, 0, None, claimed_by=self.node)

    def set_job_state(
        self: _Host,
        job_id: str,
        state: JobState,
        error: str | None = None,
        now: float | None = None,
        *,
        objects: Sequence[ObjectOutcome] | None = None,
    ) -> Job:
        at = time.time() if now is None else now
        with self._tx() as db:
            before = _job_in(db, job_id)
            if before.state is JobState.CANCELLED:
                return before  # final: the worker reads the cancellation here
            started = {JobState.RUNNING: at, JobState.QUEUED: None}.get(state, before.started_at)
            finished = at if state in FINAL_JOB_STATES else None
            db.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, error = ?, "
                "attempts = attempts + ?, started_at = ?, finished_at = ?, objects = ? "
                "WHERE job_id = ?",
                (
                    state.value,
                    at,
                    error,
                    1 if state is JobState.RUNNING else 0,
                    started,
                    finished,
                    _objects_json(objects),
                    job_id,
                ),
            )
            job = _job_in(db, job_id)
            self._event(db, job.study_key, at, f"job_{state.value}", f"{job.kind} job {job_id}")
        return job

    def get_job(self: _Host, job_id: str) -> Job | None:
        rows = self._query(f"SELECT {_JOB_COLS} FROM jobs WHERE job_id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def cancel_job(
        self: _Host, job_id: str, detail: str = "", now: float | None = None
    ) -> tuple[Job, bool]:
        at = time.time() if now is None else now
        with self._tx() as db:
            before = _job_in(db, job_id)
            if before.state not in OPEN_JOB_STATES:
                return before, False
            db.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, finished_at = ? WHERE job_id = ?",
                (JobState.CANCELLED.value, at, at, job_id),
            )
            job = _job_in(db, job_id)
            why = f" ({detail})" if detail else ""
            self._event(
                db,
                job.study_key,
                at,
                "job_cancelled",
                f"{job.kind} job {job_id} was {before.state.value}{why}",
            )
        return job, True

    def list_jobs(
        self: _Host, study_key: str | None = None, state: JobState | None = None, limit: int = 100
    ) -> list[Job]:
        clauses, args = [], []
        if study_key is not None:
            clauses.append("study_key = ?")
            args.append(study_key)
        if state is not None:
            clauses.append("state = ?")
            args.append(state.value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {_JOB_COLS} FROM jobs {where} ORDER BY created_at DESC LIMIT ?",
            (*args, limit),
        )
        return [_job(r) for r in rows]
