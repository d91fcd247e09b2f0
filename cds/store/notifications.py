"""The notification outbox: urgent-finding notifications (FHIR R4, HL7 v2) written to
the store before anything is sent (table ``notifications``, schema version 11), in
either store.

A notification is one message to one target. Its id is deterministic (the study, the
model and its findings, the target: ``cds.delivery.notify.notification_id``) and is
carried in the message itself (FHIR's ``identifier``, HL7's MSH-10 control ID): the
same finding queued again is the same row, and a message sent again after a kill -9
between the receiver's answer and the record of it is one the receiver recognises.

The row is committed before the first try; the worker (``cds.delivery.notify``) claims
due rows with a lease, as deliveries are claimed (``cds.store.claims``): ``pending``
until a try is recorded, then ``sent``, ``pending`` again after a backoff, or ``dead``
after the last try, where it waits for an admin's retry (``cds notifications retry``).

One class for both stores: it uses the store's own transaction and placeholder
(``_tx``, ``_query``, ``_PARAM``), as ``claims`` and ``backfill`` do.
"""

# SQL text is built only from constant fragments; every value is a bound parameter
# ruff: noqa: S608

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

#: the states of a notification
STATES = ("pending", "sent", "dead")
#: seconds a notification taken to send stays away from other nodes (its try ends it)
NOTIFY_LEASE_S = 300.0

_COLS = (
    "notification_id, study_key, target, format, findings, body, state, attempts, "
    "last_error, next_attempt_at, created_at, updated_at, sent_at, claimed_by"
)


class _Host(Protocol):
    node: str
    _PARAM: ClassVar[str]
    _SKIP_LOCKED: ClassVar[str]

    def _tx(self) -> AbstractContextManager[Any]: ...

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]: ...

    @staticmethod
    def _event(db: Any, study_key: str, at: float, kind: str, detail: str) -> None: ...


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one notification target, and where it stands."""

    notification_id: str
    study_key: str
    target: str
    format: str
    findings: int
    body: str
    state: str
    attempts: int
    last_error: str | None
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    sent_at: float | None
    claimed_by: str | None

    def as_dict(self) -> dict[str, Any]:
        """As ``cds notifications --json`` and ``GET /api/notifications`` give it: the
        message itself stays in the store (it is the receiver's business)."""
        return {
            "notification_id": self.notification_id,
            "study_key": self.study_key,
            "target": self.target,
            "format": self.format,
            "findings": self.findings,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "sent_at": self.sent_at,
        }


def _read(r: Any) -> Notification:
    return Notification(
        notification_id=str(r["notification_id"]),
        study_key=str(r["study_key"]),
        target=str(r["target"]),
        format=str(r["format"]),
        findings=int(r["findings"]),
        body=str(r["body"]),
        state=str(r["state"]),
        attempts=int(r["attempts"]),
        last_error=None if r["last_error"] is None else str(r["last_error"]),
        next_attempt_at=_opt(r["next_attempt_at"]),
        created_at=float(r["created_at"]),
        updated_at=float(r["updated_at"]),
        sent_at=_opt(r["sent_at"]),
        claimed_by=None if r["claimed_by"] is None else str(r["claimed_by"]),
    )


class NotificationOutbox:
    """The outbox, on a SqliteStore or a PostgresStore (``store``)."""

    def __init__(self, store: Any) -> None:
        self._host: _Host = store

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self._host._PARAM)

    def _one(self, db: Any, notification_id: str) -> Notification | None:
        row = db.execute(
            self._sql(f"SELECT {_COLS} FROM notifications WHERE notification_id = ?"),
            (notification_id,),
        ).fetchone()
        return None if row is None else _read(row)

    # --- the notifier ------------------------------------------------------
    def queue(
        self,
        notification_id: str,
        study_key: str,
        target: str,
        *,
        fmt: str,
        findings: int,
        body: str,
        now: float | None = None,
    ) -> tuple[Notification, bool]:
        """Write a notification, due at ``now``, committed before this returns. The same
        id again (the same findings of a re-run) leaves one already sent as it is and
        starts a pending or dead one afresh with the new body. Returns the row and
        whether it is to be sent (False: it was sent already)."""
        at = time.time() if now is None else now
        with self._host._tx() as db:
            db.execute(
                self._sql(
                    f"INSERT INTO notifications ({_COLS}) VALUES "
                    "(?, ?, ?, ?, ?, ?, 'pending', 0, NULL, ?, ?, ?, NULL, NULL) "
                    "ON CONFLICT (notification_id) DO UPDATE SET "
                    "body = CASE WHEN notifications.state = 'sent' THEN notifications.body "
                    "ELSE excluded.body END, "
                    "attempts = CASE WHEN notifications.state = 'sent' THEN "
                    "notifications.attempts ELSE 0 END, "
                    "next_attempt_at = CASE WHEN notifications.state = 'sent' THEN NULL "
                    "ELSE excluded.next_attempt_at END, "
                    "state = CASE WHEN notifications.state = 'sent' THEN 'sent' "
                    "ELSE 'pending' END, "
                    "updated_at = excluded.updated_at"
                ),
                (notification_id, study_key, target, fmt, findings, body, at, at, at),
            )
            row = self._one(db, notification_id)
        assert row is not None  # written just above
        return row, row.state == "pending"

    def claim(
        self, now: float, limit: int = 100, lease_s: float = NOTIFY_LEASE_S
    ) -> list[Notification]:
        """Due notifications (longest due first) for this node alone, leased until
        ``now + lease_s``: still pending, so a node that dies holding one loses nothing."""
        h = self._host
        with h._tx() as db:
            ids = [
                str(r["notification_id"])
                for r in db.execute(
                    self._sql(
                        "SELECT notification_id FROM notifications WHERE state = 'pending' "
                        "AND next_attempt_at <= ? ORDER BY next_attempt_at, created_at "
                        f"LIMIT ?{h._SKIP_LOCKED}"
                    ),
                    (now, limit),
                ).fetchall()
            ]
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            rows = db.execute(
                self._sql(
                    "UPDATE notifications SET next_attempt_at = ?, claimed_by = ?, "
                    f"lease_until = ? WHERE notification_id IN ({marks}) RETURNING {_COLS}"
                ),
                (now + lease_s, h.node, now + lease_s, *ids),
            ).fetchall()
        order = {n: i for i, n in enumerate(ids)}
        return sorted((_read(r) for r in rows), key=lambda n: order[n.notification_id])

    def release(self, now: float) -> int:
        """This node's leases left by its last run (killed between a send and its
        record) end: those notifications are due again at ``now``. A start calls it."""
        with self._host._tx() as db:
            rows = db.execute(
                self._sql(
                    "UPDATE notifications SET next_attempt_at = ?, lease_until = NULL, "
                    "claimed_by = NULL WHERE state = 'pending' AND claimed_by = ? "
                    "AND lease_until > ? RETURNING notification_id"
                ),
                (now, self._host.node, now),
            ).fetchall()
        return len(rows)

    def attempted(
        self,
        notification_id: str,
        *,
        ok: bool,
        error: str | None = None,
        retry_at: float | None = None,
        now: float | None = None,
    ) -> Notification:
        """Record one try: sent (``ok``), pending again at ``retry_at``, or dead."""
        at = time.time() if now is None else now
        state = "sent" if ok else "pending" if retry_at is not None else "dead"
        with self._host._tx() as db:
            db.execute(
                self._sql(
                    "UPDATE notifications SET state = ?, attempts = attempts + 1, "
                    "last_error = ?, next_attempt_at = ?, updated_at = ?, sent_at = ?, "
                    "lease_until = NULL WHERE notification_id = ? AND state = 'pending'"
                ),
                (state, None if ok else error, None if ok else retry_at, at,
                 at if ok else None, notification_id),
            )  # fmt: skip
            row = self._one(db, notification_id)
        if row is None:
            raise KeyError(f"no notification with id {notification_id}")
        return row

    def due_now(self, target: str, now: float) -> int:
        """Make every pending notification to ``target`` (not leased by another node)
        due at ``now``: it answered again after an outage."""
        with self._host._tx() as db:
            cur = db.execute(
                self._sql(
                    "UPDATE notifications SET next_attempt_at = ? WHERE target = ? "
                    "AND state = 'pending' AND next_attempt_at > ? "
                    "AND (lease_until IS NULL OR lease_until <= ?)"
                ),
                (now, target, now, now),
            )
            return int(cur.rowcount)

    def next_due(self) -> float | None:
        """When the earliest pending notification is due (None: nothing pending)."""
        rows = self._host._query(
            "SELECT MIN(next_attempt_at) AS due FROM notifications WHERE state = 'pending'"
        )
        return _opt(rows[0]["due"]) if rows else None

    # --- the admin ---------------------------------------------------------
    def find(
        self,
        study_key: str | None = None,
        state: str | None = None,
        target: str | None = None,
        limit: int = 100,
    ) -> list[Notification]:
        """Notifications, newest first."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown notification state {state!r} (known: {', '.join(STATES)})")
        clauses, args = [], []
        for col, val in (("study_key", study_key), ("state", state), ("target", target)):
            if val is not None:
                clauses.append(f"{col} = ?")
                args.append(val)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._host._query(
            self._sql(
                f"SELECT {_COLS} FROM notifications {where} "
                "ORDER BY created_at DESC, notification_id LIMIT ?"
            ),
            (*args, limit),
        )
        return [_read(r) for r in rows]

    def get(self, notification_id: str) -> Notification | None:
        with self._host._tx() as db:
            return self._one(db, notification_id)

    def retry(
        self, notification_id: str, detail: str = "", now: float | None = None
    ) -> tuple[Notification, bool]:
        """dead (or pending) -> pending now, tries reset; recorded in the study's history
        as ``notify_retried``. Returns it and whether it changed; KeyError if unknown."""
        at = time.time() if now is None else now
        with self._host._tx() as db:
            before = self._one(db, notification_id)
            if before is None:
                raise KeyError(f"no notification with id {notification_id}")
            if before.state == "sent":
                return before, False
            db.execute(
                self._sql(
                    "UPDATE notifications SET state = 'pending', attempts = 0, "
                    "next_attempt_at = ?, updated_at = ?, lease_until = NULL, "
                    "claimed_by = NULL WHERE notification_id = ?"
                ),
                (at, at, notification_id),
            )
            why = f" ({detail})" if detail else ""
            self._host._event(
                db, before.study_key, at, "notify_retried",
                f"notification {notification_id} to {before.target} was {before.state} "
                f"after {before.attempts} tries{why}",
            )  # fmt: skip
            after = self._one(db, notification_id)
        assert after is not None
        return after, True

    def retry_dead(self, target: str | None = None, now: float | None = None) -> list[str]:
        """Every dead notification (to ``target``) pending again now; their ids."""
        ids = [n.notification_id for n in self.find(state="dead", target=target, limit=100_000)]
        return [i for i in ids if self.retry(i, "all dead retried", now)[1]]

    def counts(self) -> dict[str, int]:
        """How many notifications are in each state."""
        rows = self._host._query("SELECT state, COUNT(*) AS n FROM notifications GROUP BY state")
        found = {str(r["state"]): int(r["n"]) for r in rows}
        return {s: found.get(s, 0) for s in STATES}
