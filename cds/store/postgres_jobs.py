"""Jobs of the PostgreSQL store (the ``JobStore`` role; the SQLite twin is
``sqlite_jobs``, whose row reader and JSON of ``objects`` this module shares).

A job changed after being read is locked first (``SELECT ... FOR UPDATE``), so a
cancellation and a worker's state change on two nodes are one after the other as in
SQLite. ``claim_jobs`` (``claims``, shared with SQLite) hands queued jobs to one node
each (``FOR UPDATE SKIP LOCKED``).
"""

# SQL text is built only from constant fragments; every value is a bound parameter
# (as in the sqlite_* modules, exempted in pyproject.toml)
# ruff: noqa: S608

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from cds.domain import Job, JobState, ObjectOutcome
from cds.store.postgres_host import Db, as_row, one
from cds.store.postgres_host import PostgresHost as _Host
from cds.store.sqlite_jobs import (
    _JOB_COLS,
    FINAL_JOB_STATES,
    OPEN_JOB_STATES,
    _objects_json,
)
from cds.store.sqlite_jobs import _job as _read_job


def _job_in(db: Db, job_id: str, *, lock: bool = False) -> Job:
    found = one(
        db,
        f"SELECT {_JOB_COLS} FROM jobs WHERE job_id = %s{' FOR UPDATE' if lock else ''}",
        (job_id,),
    )
    if found is None:
        raise KeyError(f"no job with id {job_id}")
    return _read_job(as_row(found))


class JobsMixin:
    def create_job(self: _Host, study_key: str, kind: str, now: float | None = None) -> Job:
        at = time.time() if now is None else now
        job_id = uuid.uuid4().hex
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (job_id, study_key, kind, state, created_at, updated_at, "
                "claimed_by, lease_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
            before = _job_in(db, job_id, lock=True)
            if before.state is JobState.CANCELLED:
                return before  # final: the worker reads the cancellation here
            started = {JobState.RUNNING: at, JobState.QUEUED: None}.get(state, before.started_at)
            finished = at if state in FINAL_JOB_STATES else None
            db.execute(
                "UPDATE jobs SET state = %s, updated_at = %s, error = %s, "
                "attempts = attempts + %s, started_at = %s, finished_at = %s, objects = %s "
                "WHERE job_id = %s",
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
        rows = self._query(f"SELECT {_JOB_COLS} FROM jobs WHERE job_id = %s", (job_id,))
        return _read_job(as_row(rows[0])) if rows else None

    def cancel_job(
        self: _Host, job_id: str, detail: str = "", now: float | None = None
    ) -> tuple[Job, bool]:
        at = time.time() if now is None else now
        with self._tx() as db:
            before = _job_in(db, job_id, lock=True)
            if before.state not in OPEN_JOB_STATES:
                return before, False
            db.execute(
                "UPDATE jobs SET state = %s, updated_at = %s, finished_at = %s WHERE job_id = %s",
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
            clauses.append("study_key = %s")
            args.append(study_key)
        if state is not None:
            clauses.append("state = %s")
            args.append(state.value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {_JOB_COLS} FROM jobs {where} ORDER BY created_at DESC LIMIT %s",
            (*args, limit),
        )
        return [_read_job(as_row(r)) for r in rows]
