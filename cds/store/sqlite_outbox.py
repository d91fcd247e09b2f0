"""Result objects and the delivery outbox of the SQLite store.

A result object is recorded, with one delivery per configured destination, in
the same transaction, after its file is durably written: the outbox is this
table, so a delivery is never lost across a restart. Sending is at least once;
result UIDs are deterministic, so a resend is the same object to the PACS.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence

from cds.domain import Delivery, DeliveryState, ResultObject, ResultState
from cds.store.sqlite_host import SqliteHost as _Host

_RESULT_COLS = (
    "sop_uid, study_key, study_uid, series_uid, sop_class_uid, modality, path, job_kind, "
    "source_series_uid, model_version, inputs_seed, state, created_at, superseded_at"
)
_DELIVERY_COLS = (
    "delivery_id, study_key, sop_uid, sop_class_uid, modality, path, destination, state, "
    "attempts, last_error, next_attempt_at, created_at, updated_at, delivered_at, priority, "
    "claimed_by"
)


def _opt(v: float | None) -> float | None:
    return None if v is None else float(v)


def _result(row: sqlite3.Row) -> ResultObject:
    return ResultObject(
        sop_uid=str(row["sop_uid"]),
        study_key=str(row["study_key"]),
        study_uid=str(row["study_uid"]),
        series_uid=str(row["series_uid"]),
        sop_class_uid=str(row["sop_class_uid"]),
        modality=str(row["modality"]),
        path=str(row["path"]),
        job_kind=str(row["job_kind"]),
        source_series_uid=str(row["source_series_uid"]),
        model_version=str(row["model_version"]),
        inputs_seed=str(row["inputs_seed"]),
        state=ResultState(str(row["state"])),
        created_at=float(row["created_at"]),
        superseded_at=_opt(row["superseded_at"]),
    )


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        delivery_id=str(row["delivery_id"]),
        study_key=str(row["study_key"]),
        sop_uid=str(row["sop_uid"]),
        sop_class_uid=str(row["sop_class_uid"]),
        modality=str(row["modality"]),
        path=str(row["path"]),
        destination=str(row["destination"]),
        state=DeliveryState(str(row["state"])),
        attempts=int(row["attempts"]),
        last_error=None if row["last_error"] is None else str(row["last_error"]),
        next_attempt_at=_opt(row["next_attempt_at"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        delivered_at=_opt(row["delivered_at"]),
        priority=int(row["priority"]),
        claimed_by=None if row["claimed_by"] is None else str(row["claimed_by"]),
    )


class OutboxMixin:
    """The results/deliveries half of ``SqliteStore`` (see ``StateStore`` for the contract)."""

    def record_results(
        self: _Host,
        objects: Sequence[ResultObject],
        destinations: Sequence[str],
        superseded: Sequence[str] = (),
        now: float | None = None,
        priority: int = 0,
    ) -> list[Delivery]:
        at = time.time() if now is None else now
        out: list[Delivery] = []
        with self._tx() as db:
            for sop in superseded:
                db.execute(
                    "UPDATE results SET state = ?, superseded_at = ? WHERE sop_uid = ? "
                    "AND state = ?",
                    (ResultState.SUPERSEDED.value, at, sop, ResultState.CURRENT.value),
                )
                db.execute(
                    "UPDATE deliveries SET state = ?, updated_at = ?, next_attempt_at = NULL, "
                    "last_error = 'superseded by a newer result before it was sent' "
                    "WHERE sop_uid = ? AND state IN (?, ?)",
                    (
                        DeliveryState.CANCELLED.value,
                        at,
                        sop,
                        DeliveryState.PENDING.value,
                        DeliveryState.DEAD.value,
                    ),
                )
            for r in objects:
                db.execute(
                    f"INSERT INTO results ({_RESULT_COLS}) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) "
                    "ON CONFLICT (sop_uid) DO UPDATE SET path = excluded.path, "
                    "state = excluded.state, superseded_at = NULL",
                    (
                        r.sop_uid,
                        r.study_key,
                        r.study_uid,
                        r.series_uid,
                        r.sop_class_uid,
                        r.modality,
                        r.path,
                        r.job_kind,
                        r.source_series_uid,
                        r.model_version,
                        r.inputs_seed,
                        r.state.value,
                        at,
                    ),
                )
                for dest in destinations:
                    # a re-run of the same inputs makes the same object: one already
                    # delivered is not sent again; one pending or dead starts afresh
                    db.execute(
                        f"INSERT INTO deliveries ({_DELIVERY_COLS}) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?, ?, ?, NULL, ?, NULL) "
                        "ON CONFLICT (sop_uid, destination) DO UPDATE SET "
                        "path = excluded.path, updated_at = excluded.updated_at, "
                        "priority = excluded.priority, "
                        "state = CASE WHEN state = 'delivered' THEN state ELSE 'pending' END, "
                        "attempts = CASE WHEN state = 'delivered' THEN attempts ELSE 0 END, "
                        "next_attempt_at = CASE WHEN state = 'delivered' THEN NULL "
                        "ELSE excluded.next_attempt_at END",
                        (
                            uuid.uuid4().hex,
                            r.study_key,
                            r.sop_uid,
                            r.sop_class_uid,
                            r.modality,
                            r.path,
                            dest,
                            DeliveryState.PENDING.value,
                            at,
                            at,
                            at,
                            priority,
                        ),
                    )
                    row = db.execute(
                        f"SELECT {_DELIVERY_COLS} FROM deliveries "
                        "WHERE sop_uid = ? AND destination = ?",
                        (r.sop_uid, dest),
                    ).fetchone()
                    out.append(_delivery(row))
        return out

    def current_results(
        self: _Host, study_key: str, job_kind: str, source_series_uid: str
    ) -> list[ResultObject]:
        rows = self._query(
            f"SELECT {_RESULT_COLS} FROM results WHERE study_key = ? AND job_kind = ? "
            "AND source_series_uid = ? AND state = ? ORDER BY created_at, sop_uid",
            (study_key, job_kind, source_series_uid, ResultState.CURRENT.value),
        )
        return [_result(r) for r in rows]

    def list_results(self: _Host, study_key: str) -> list[ResultObject]:
        rows = self._query(
            f"SELECT {_RESULT_COLS} FROM results WHERE study_key = ? "
            "ORDER BY created_at, modality, sop_uid",
            (study_key,),
        )
        return [_result(r) for r in rows]

    def due_deliveries(self: _Host, now: float, limit: int = 500) -> list[Delivery]:
        rows = self._query(
            f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE state = ? AND next_attempt_at <= ? "
            "ORDER BY priority DESC, next_attempt_at, created_at LIMIT ?",
            (DeliveryState.PENDING.value, now, limit),
        )
        return [_delivery(r) for r in rows]

    def deliveries_due_now(self: _Host, destination: str, now: float) -> int:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE deliveries SET next_attempt_at = ? WHERE destination = ? "
                "AND state = ? AND next_attempt_at > ? "
                "AND (lease_until IS NULL OR lease_until <= ?)",  # another node sends it
                (now, destination, DeliveryState.PENDING.value, now, now),
            )
            return int(cur.rowcount)

    def next_delivery_due(self: _Host) -> float | None:
        rows = self._query(
            "SELECT MIN(next_attempt_at) AS due FROM deliveries WHERE state = ?",
            (DeliveryState.PENDING.value,),
        )
        return _opt(rows[0]["due"]) if rows else None

    def delivery_attempted(
        self: _Host,
        delivery_id: str,
        *,
        ok: bool,
        error: str | None = None,
        retry_at: float | None = None,
        now: float | None = None,
    ) -> Delivery:
        """Record one try: delivered (``ok``), pending again at ``retry_at``, or dead
        (not ok and no ``retry_at``). A delivery cancelled meanwhile stays cancelled."""
        now = time.time() if now is None else now
        if ok:
            state, when = DeliveryState.DELIVERED, None
        elif retry_at is not None:
            state, when = DeliveryState.PENDING, retry_at
        else:
            state, when = DeliveryState.DEAD, None
        with self._tx() as db:
            db.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ?, updated_at = ?, delivered_at = ?, lease_until = NULL "
                "WHERE delivery_id = ? AND state = ?",
                (
                    state.value,
                    None if ok else error,
                    when,
                    now,
                    now if ok else None,
                    delivery_id,
                    DeliveryState.PENDING.value,
                ),
            )
            row = db.execute(
                f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()
        if row is None:
            raise KeyError(f"no delivery with id {delivery_id}")
        return _delivery(row)

    def list_deliveries(
        self: _Host,
        study_key: str | None = None,
        state: DeliveryState | None = None,
        destination: str | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        clauses, args = [], []
        for col, val in (
            ("study_key", study_key),
            ("state", state.value if state else None),
            ("destination", destination),
        ):
            if val is not None:
                clauses.append(f"{col} = ?")
                args.append(val)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {_DELIVERY_COLS} FROM deliveries {where} "
            "ORDER BY created_at DESC, modality, sop_uid LIMIT ?",
            (*args, limit),
        )
        return [_delivery(r) for r in rows]

    def get_delivery(self: _Host, delivery_id: str) -> Delivery | None:
        rows = self._query(
            f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE delivery_id = ?", (delivery_id,)
        )
        return _delivery(rows[0]) if rows else None

    def retry_delivery(
        self: _Host, delivery_id: str, detail: str = "", now: float | None = None
    ) -> tuple[Delivery, bool]:
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no delivery with id {delivery_id}")
            before = _delivery(row)
            if before.state not in (DeliveryState.DEAD, DeliveryState.PENDING):
                return before, False
            db.execute(
                "UPDATE deliveries SET state = ?, attempts = 0, next_attempt_at = ?, "
                "updated_at = ? WHERE delivery_id = ?",
                (DeliveryState.PENDING.value, now, now, delivery_id),
            )
            why = f" ({detail})" if detail else ""
            self._event(
                db,
                before.study_key,
                now,
                "delivery_retried",
                f"{before.modality} {before.sop_uid} to {before.destination} was "
                f"{before.state.value} after {before.attempts} tries{why}",
            )
            after = db.execute(
                f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()
        return _delivery(after), True

    def delivery_counts(self: _Host) -> tuple[int, int, float | None]:
        """(pending, dead, oldest pending created_at)."""
        rows = self._query(
            "SELECT state, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries "
            "WHERE state IN (?, ?) GROUP BY state",
            (DeliveryState.PENDING.value, DeliveryState.DEAD.value),
        )
        by = {str(r["state"]): (int(r["n"]), _opt(r["oldest"])) for r in rows}
        pending, oldest = by.get(DeliveryState.PENDING.value, (0, None))
        return pending, by.get(DeliveryState.DEAD.value, (0, None))[0], oldest
