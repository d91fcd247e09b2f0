"""Claims: how several nodes on one store share the work without a leader (issue 21).

Every store belongs to one node, named by ``node.name`` (``store.node``). A node takes
work by claiming it in one transaction, and the claim records its name
(``claimed_by``) and a lease (``lease_until``: ``node.lease_s``, ``store.lease_s``, from
now) that the live node renews (``renew_claims``, on the assembler's tick):

- a study's quiet-time check (``complete_study``: receiving -> complete) is claimed by
  whichever node is due first; the study stays claimed while that node routes it and
  runs its pipelines (``claim_study``, ``release_study``), so one node at a time
  decides which jobs a study needs: one job per pipeline;
- jobs (``claim_jobs``: queued -> running) and deliveries (``claim_deliveries``: due
  -> leased, still pending until the try is recorded) go to exactly one node each.

A claim whose lease has lapsed (its node was killed) may be taken by any node; a
node's own claims are its own again after a restart (``open_claims``). The SQL is the
same for SQLite and PostgreSQL but for the placeholder (``?``, ``%s``) and the row lock:
PostgreSQL's ``FOR UPDATE SKIP LOCKED`` lets nodes claim at once, each skipping what
another is claiming; SQLite's ``BEGIN IMMEDIATE`` already runs one writer at a time.
"""

# SQL text is built only from constant fragments; every value is a bound parameter
# ruff: noqa: S608

from __future__ import annotations

import socket
import time
from collections.abc import Collection
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

from cds.domain import Delivery, DeliveryState, Job, JobState, StudyState
from cds.store.sqlite_jobs import _JOB_COLS, LEASE_S, OPEN_JOB_STATES
from cds.store.sqlite_jobs import _job as _read_job
from cds.store.sqlite_outbox import _DELIVERY_COLS
from cds.store.sqlite_outbox import _delivery as _read_delivery

#: seconds a delivery taken to send stays away from other nodes (its try ends it)
DELIVERY_LEASE_S = 300.0

__all__ = ["DELIVERY_LEASE_S", "LEASE_S", "ClaimsMixin", "default_node"]

_RECEIVING = StudyState.RECEIVING.value
_FREE = "(claimed_by IS NULL OR claimed_by = ? OR lease_until < ?)"


class _Host(Protocol):
    node: str
    lease_s: float
    _PARAM: ClassVar[str]
    _SKIP_LOCKED: ClassVar[str]

    def _tx(self) -> AbstractContextManager[Any]: ...

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]: ...

    @staticmethod
    def _event(db: Any, study_key: str, at: float, kind: str, detail: str) -> None: ...


def default_node() -> str:
    """A node's name when ``node.name`` is not set: its host name."""
    return socket.gethostname() or "cds"


def _sql(host: _Host, sql: str) -> str:
    """``sql`` (written with ``?``) in the host driver's placeholder."""
    return sql.replace("?", host._PARAM)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class ClaimsMixin:
    """The claims of a store (both backends); the host sets ``node``, ``_PARAM`` and
    ``_SKIP_LOCKED``."""

    def complete_study(self: _Host, study_key: str, now: float) -> bool:
        """receiving -> complete if still due at ``now`` and no other node's live claim
        holds it (its early start); the study is then claimed by this node."""
        with self._tx() as db:
            cur = db.execute(
                _sql(
                    self,
                    "UPDATE studies SET state = ?, completed_at = ?, complete_due_at = NULL, "
                    "updated_at = ?, claimed_by = ?, lease_until = ? WHERE study_key = ? "
                    f"AND state = ? AND complete_due_at <= ? AND {_FREE}",
                ),
                (StudyState.COMPLETE.value, now, now, self.node, now + self.lease_s, study_key,
                 _RECEIVING, now, self.node, now),
            )  # fmt: skip
            if cur.rowcount != 1:
                return False
            self._event(db, study_key, now, "complete", f"quiet time elapsed (node {self.node})")
            return True

    def claim_study(
        self: _Host, study_key: str, now: float | None = None, lease_s: float | None = None
    ) -> bool:
        """Claim a study to route it and run its pipelines: True when it was free, this
        node's already, or its claim had lapsed; False while another node holds it.
        The claim lasts ``lease_s`` (default: the store's ``lease_s``, ``node.lease_s``)."""
        at = time.time() if now is None else now
        lease_s = self.lease_s if lease_s is None else lease_s
        with self._tx() as db:
            cur = db.execute(
                _sql(
                    self,
                    f"UPDATE studies SET claimed_by = ?, lease_until = ? "
                    f"WHERE study_key = ? AND {_FREE}",
                ),
                (self.node, at + lease_s, study_key, self.node, at),
            )
            return bool(cur.rowcount == 1)

    def release_study(self: _Host, study_key: str) -> None:
        """Give up this node's claim on a study (routed, its jobs ended)."""
        with self._tx() as db:
            db.execute(
                _sql(
                    self,
                    "UPDATE studies SET claimed_by = NULL, lease_until = NULL "
                    "WHERE study_key = ? AND claimed_by = ?",
                ),
                (study_key, self.node),
            )

    def lapsed_studies(self: _Host, now: float | None = None) -> list[str]:
        """Complete or processing studies held by another node whose lease lapsed (it
        died): a live node takes them over."""
        at = time.time() if now is None else now
        rows = self._query(
            _sql(
                self,
                "SELECT study_key FROM studies WHERE state IN (?, ?) AND claimed_by <> ? "
                "AND lease_until < ? ORDER BY lease_until",
            ),
            (StudyState.COMPLETE.value, StudyState.PROCESSING.value, self.node, at),
        )
        return [str(r["study_key"]) for r in rows]

    def renew_claims(self: _Host, now: float | None = None, lease_s: float | None = None) -> int:
        """Extend the lease of every study and open job this node holds; how many."""
        at = time.time() if now is None else now
        lease_s = self.lease_s if lease_s is None else lease_s
        with self._tx() as db:
            studies = db.execute(
                _sql(self, "UPDATE studies SET lease_until = ? WHERE claimed_by = ?"),
                (at + lease_s, self.node),
            ).rowcount
            jobs = db.execute(
                _sql(
                    self,
                    "UPDATE jobs SET lease_until = ? WHERE claimed_by = ? AND state IN (?, ?)",
                ),
                (at + lease_s, self.node, *(s.value for s in OPEN_JOB_STATES)),
            ).rowcount
        return int(studies) + int(jobs)

    def claim_jobs(
        self: _Host,
        limit: int = 1,
        now: float | None = None,
        *,
        lease_s: float | None = None,
        job_ids: Collection[str] | None = None,
    ) -> list[Job]:
        """Up to ``limit`` queued jobs (of ``job_ids`` only, when given), oldest first,
        moved to running for this node alone: each job is claimed exactly once, and a
        cancelled job (not queued) never."""
        at = time.time() if now is None else now
        lease_s = self.lease_s if lease_s is None else lease_s
        where, args = "state = ?", [JobState.QUEUED.value]
        if job_ids is not None and not job_ids:
            return []
        if job_ids is not None:
            where += f" AND job_id IN ({_marks(len(job_ids))})"
            args += list(job_ids)
        with self._tx() as db:
            ids = [
                str(r["job_id"])
                for r in db.execute(
                    _sql(
                        self,
                        f"SELECT job_id FROM jobs WHERE {where} ORDER BY created_at, job_id "
                        f"LIMIT ?{self._SKIP_LOCKED}",
                    ),
                    (*args, limit),
                ).fetchall()
            ]
            if not ids:
                return []
            rows = db.execute(
                _sql(
                    self,
                    "UPDATE jobs SET state = ?, updated_at = ?, attempts = attempts + 1, "
                    "started_at = ?, finished_at = NULL, claimed_by = ?, lease_until = ? "
                    f"WHERE job_id IN ({_marks(len(ids))}) RETURNING {_JOB_COLS}",
                ),
                (JobState.RUNNING.value, at, at, self.node, at + lease_s, *ids),
            ).fetchall()
            jobs = sorted((_read_job(r) for r in rows), key=lambda j: (j.created_at, j.job_id))
            for job in jobs:
                self._event(
                    db, job.study_key, at, "job_running", f"{job.kind} job {job.job_id}"
                    f" (node {self.node})"
                )  # fmt: skip
        return jobs

    def open_claims(self: _Host, now: float | None = None) -> list[Job]:
        """Queued and running jobs no live node holds: this node's own (left by its last
        run), ones no node claimed (a store older than schema 9), and ones whose lease
        has lapsed (their node died). A start hands these back; another live node's
        jobs are left alone."""
        at = time.time() if now is None else now
        rows = self._query(
            _sql(
                self,
                f"SELECT {_JOB_COLS} FROM jobs WHERE state IN (?, ?) AND {_FREE} "
                "ORDER BY created_at, job_id",
            ),
            (*(s.value for s in OPEN_JOB_STATES), self.node, at),
        )
        return [_read_job(r) for r in rows]

    def release_deliveries(self: _Host, now: float) -> int:
        """This node's delivery leases, left by its last run (killed between sending a
        batch and recording it), end: those deliveries are due again at ``now``, not
        when the lease would have lapsed. A start calls it; returns how many."""
        with self._tx() as db:
            rows = db.execute(
                _sql(
                    self,
                    "UPDATE deliveries SET next_attempt_at = ?, lease_until = NULL, "
                    "claimed_by = NULL WHERE state = ? AND claimed_by = ? AND lease_until > ? "
                    "RETURNING delivery_id",
                ),
                (now, DeliveryState.PENDING.value, self.node, now),
            ).fetchall()
        return len(rows)

    def claim_deliveries(
        self: _Host, now: float, limit: int = 500, lease_s: float = DELIVERY_LEASE_S
    ) -> list[Delivery]:
        """Due deliveries (``due_deliveries``' order: highest priority, longest due,
        oldest) for this node alone: each is leased until ``now + lease_s`` (its
        ``next_attempt_at``; still pending, so a node that dies holding it loses
        nothing) and skipped by other nodes meanwhile. ``delivery_attempted`` ends the
        lease."""
        with self._tx() as db:
            ids = [
                str(r["delivery_id"])
                for r in db.execute(
                    _sql(
                        self,
                        "SELECT delivery_id FROM deliveries WHERE state = ? "
                        "AND next_attempt_at <= ? ORDER BY priority DESC, next_attempt_at, "
                        f"created_at LIMIT ?{self._SKIP_LOCKED}",
                    ),
                    (DeliveryState.PENDING.value, now, limit),
                ).fetchall()
            ]
            if not ids:
                return []
            rows = db.execute(
                _sql(
                    self,
                    "UPDATE deliveries SET next_attempt_at = ?, lease_until = ?, claimed_by = ? "
                    f"WHERE delivery_id IN ({_marks(len(ids))}) RETURNING {_DELIVERY_COLS}",
                ),
                (now + lease_s, now + lease_s, self.node, *ids),
            ).fetchall()
        order = {d: n for n, d in enumerate(ids)}
        return sorted((_read_delivery(r) for r in rows), key=lambda d: order[d.delivery_id])
