"""Result objects and the delivery outbox of the PostgreSQL store (the ``Outbox`` role;
the SQLite twin is ``sqlite_outbox``, whose row readers this module shares).

Results and their deliveries are recorded in one transaction, as in SQLite.
``claim_deliveries`` (``claims``, shared with SQLite) hands due deliveries to one node
each (``FOR UPDATE SKIP LOCKED``).
"""

# SQL text is built only from constant fragments; every value is a bound parameter
# (as in the sqlite_* modules, exempted in pyproject.toml)
# ruff: noqa: S608

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from cds.domain import Delivery, DeliveryState, ResultObject, ResultState
from cds.store.postgres_host import PostgresHost as _Host
from cds.store.postgres_host import as_row, one
from cds.store.sqlite_outbox import _DELIVERY_COLS, _RESULT_COLS
from cds.store.sqlite_outbox import _delivery as _read_delivery
from cds.store.sqlite_outbox import _result as _read_result

_PENDING = DeliveryState.PENDING.value
_BY_ID = f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE delivery_id = %s"


def _opt(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]


class OutboxMixin:
    """The results/deliveries half of ``PostgresStore`` (see ``Outbox`` for the contract)."""

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
                    "UPDATE results SET state = %s, superseded_at = %s WHERE sop_uid = %s "
                    "AND state = %s",
                    (ResultState.SUPERSEDED.value, at, sop, ResultState.CURRENT.value),
                )
                db.execute(
                    "UPDATE deliveries SET state = %s, updated_at = %s, next_attempt_at = NULL, "
                    "last_error = 'superseded by a newer result before it was sent' "
                    "WHERE sop_uid = %s AND state IN (%s, %s)",
                    (DeliveryState.CANCELLED.value, at, sop, _PENDING, DeliveryState.DEAD.value),
                )
            for r in objects:
                db.execute(
                    f"INSERT INTO results ({_RESULT_COLS}) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL) "
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
                    row = one(
                        db,
                        f"INSERT INTO deliveries AS d ({_DELIVERY_COLS}) VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, 0, NULL, %s, %s, %s, NULL, %s, NULL) "
                        "ON CONFLICT (sop_uid, destination) DO UPDATE SET "
                        "path = excluded.path, updated_at = excluded.updated_at, "
                        "priority = excluded.priority, "
                        "state = CASE WHEN d.state = 'delivered' THEN d.state "
                        "ELSE 'pending' END, "
                        "attempts = CASE WHEN d.state = 'delivered' THEN d.attempts ELSE 0 END, "
                        "next_attempt_at = CASE WHEN d.state = 'delivered' THEN NULL "
                        f"ELSE excluded.next_attempt_at END RETURNING {_DELIVERY_COLS}",
                        (
                            uuid.uuid4().hex,
                            r.study_key,
                            r.sop_uid,
                            r.sop_class_uid,
                            r.modality,
                            r.path,
                            dest,
                            _PENDING,
                            at,
                            at,
                            at,
                            priority,
                        ),
                    )
                    assert row is not None  # RETURNING of an insert or an update
                    out.append(_read_delivery(as_row(row)))
        return out

    def current_results(
        self: _Host, study_key: str, job_kind: str, source_series_uid: str
    ) -> list[ResultObject]:
        rows = self._query(
            f"SELECT {_RESULT_COLS} FROM results WHERE study_key = %s AND job_kind = %s "
            "AND source_series_uid = %s AND state = %s ORDER BY created_at, sop_uid",
            (study_key, job_kind, source_series_uid, ResultState.CURRENT.value),
        )
        return [_read_result(as_row(r)) for r in rows]

    def list_results(self: _Host, study_key: str) -> list[ResultObject]:
        rows = self._query(
            f"SELECT {_RESULT_COLS} FROM results WHERE study_key = %s "
            "ORDER BY created_at, modality, sop_uid",
            (study_key,),
        )
        return [_read_result(as_row(r)) for r in rows]

    def due_deliveries(self: _Host, now: float, limit: int = 500) -> list[Delivery]:
        rows = self._query(
            f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE state = %s "
            "AND next_attempt_at <= %s ORDER BY priority DESC, next_attempt_at, created_at "
            "LIMIT %s",
            (_PENDING, now, limit),
        )
        return [_read_delivery(as_row(r)) for r in rows]

    def deliveries_due_now(self: _Host, destination: str, now: float) -> int:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE deliveries SET next_attempt_at = %s WHERE destination = %s "
                "AND state = %s AND next_attempt_at > %s "
                "AND (lease_until IS NULL OR lease_until <= %s)",  # another node sends it
                (now, destination, _PENDING, now, now),
            )
            return int(cur.rowcount)

    def next_delivery_due(self: _Host) -> float | None:
        rows = self._query(
            "SELECT MIN(next_attempt_at) AS due FROM deliveries WHERE state = %s", (_PENDING,)
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
                "UPDATE deliveries SET state = %s, attempts = attempts + 1, last_error = %s, "
                "next_attempt_at = %s, updated_at = %s, delivered_at = %s, lease_until = NULL "
                "WHERE delivery_id = %s AND state = %s",
                (
                    state.value,
                    None if ok else error,
                    when,
                    now,
                    now if ok else None,
                    delivery_id,
                    _PENDING,
                ),
            )
            row = one(db, _BY_ID, (delivery_id,))
        if row is None:
            raise KeyError(f"no delivery with id {delivery_id}")
        return _read_delivery(as_row(row))

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
                clauses.append(f"{col} = %s")
                args.append(val)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {_DELIVERY_COLS} FROM deliveries {where} "
            "ORDER BY created_at DESC, modality, sop_uid LIMIT %s",
            (*args, limit),
        )
        return [_read_delivery(as_row(r)) for r in rows]

    def get_delivery(self: _Host, delivery_id: str) -> Delivery | None:
        rows = self._query(_BY_ID, (delivery_id,))
        return _read_delivery(as_row(rows[0])) if rows else None

    def retry_delivery(
        self: _Host, delivery_id: str, detail: str = "", now: float | None = None
    ) -> tuple[Delivery, bool]:
        now = time.time() if now is None else now
        with self._tx() as db:
            row = one(db, f"{_BY_ID} FOR UPDATE", (delivery_id,))
            if row is None:
                raise KeyError(f"no delivery with id {delivery_id}")
            before = _read_delivery(as_row(row))
            if before.state not in (DeliveryState.DEAD, DeliveryState.PENDING):
                return before, False
            db.execute(
                "UPDATE deliveries SET state = %s, attempts = 0, next_attempt_at = %s, "
                "updated_at = %s WHERE delivery_id = %s",
                (_PENDING, now, now, delivery_id),
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
            after = one(db, _BY_ID, (delivery_id,))
        assert after is not None  # locked above
        return _read_delivery(as_row(after)), True

    def delivery_counts(self: _Host) -> tuple[int, int, float | None]:
        """(pending, dead, oldest pending created_at)."""
        rows = self._query(
            "SELECT state, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries "
            "WHERE state IN (%s, %s) GROUP BY state",
            (_PENDING, DeliveryState.DEAD.value),
        )
        by = {str(r["state"]): (int(r["n"]), _opt(r["oldest"])) for r in rows}
        pending, oldest = by.get(_PENDING, (0, None))
        return pending, by.get(DeliveryState.DEAD.value, (0, None))[0], oldest
