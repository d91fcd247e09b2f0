"""The UPS workitems this node claimed as an IHE AI Workflow Task Performer (table
``workitems``, schema version 12), in either store.

A row is written when a claim succeeded (the task manager moved the workitem to IN
PROGRESS under our Transaction UID), before anything else is done for it, so that a
node stopped or killed after claiming finds its claims again at start and finishes or
cancels them (``cds.workflow.performer``): the Transaction UID is what lets it change
the workitem's state, and only the performer that holds it can.

States: ``in_progress`` (claimed, waiting for its input study and its jobs), then
``completed`` or ``canceled`` once the task manager accepted the final state, or
``lost`` when the task manager says the workitem is no longer ours (cancelled by
someone else, or gone).

One class for both stores: it uses the store's own transaction and placeholder
(``_tx``, ``_query``, ``_PARAM``), as ``backfill`` and ``claims`` do.
"""

# SQL text is built only from constant fragments; every value is a bound parameter
# ruff: noqa: S608

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

#: the states of a claimed workitem, in the order it goes through them
STATES = ("in_progress", "completed", "canceled", "lost")
OPEN = "in_progress"

_COLS = (
    "workitem_uid, transaction_uid, performer, state, study_uid, series_uids, study_key, "
    "progress, reason, outputs, claimed_at, updated_at, finished_at"
)


class _Host(Protocol):
    _PARAM: ClassVar[str]

    def _tx(self) -> AbstractContextManager[Any]: ...

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class ClaimedWorkitem:
    """One workitem this node (``performer``: its node name) claimed, and where it stands."""

    workitem_uid: str
    transaction_uid: str
    performer: str
    state: str
    study_uid: str  # the Input Information Sequence's study
    series_uids: tuple[str, ...]  # its series (empty: the whole study)
    study_key: str
    progress: float  # percent, as last reported to the task manager
    reason: str | None  # why it was canceled or lost (in words, never a data value)
    outputs: int  # result objects named in its Output Information Sequence
    claimed_at: float
    updated_at: float
    finished_at: float | None

    def as_dict(self) -> dict[str, Any]:
        """As ``cds workitems --json`` and ``GET /api/workitems`` give it: never the
        Transaction UID (whoever holds it may change the workitem's state)."""
        return {
            "workitem_uid": self.workitem_uid,
            "state": self.state,
            "performer": self.performer,
            "study_instance_uid": self.study_uid,
            "series_instance_uids": list(self.series_uids),
            "study_key": self.study_key,
            "progress": self.progress,
            "reason": self.reason,
            "outputs": self.outputs,
            "claimed_at": self.claimed_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
        }


def _row(r: Any) -> ClaimedWorkitem:
    return ClaimedWorkitem(
        workitem_uid=str(r["workitem_uid"]),
        transaction_uid=str(r["transaction_uid"]),
        performer=str(r["performer"]),
        state=str(r["state"]),
        study_uid=str(r["study_uid"]),
        series_uids=tuple(json.loads(r["series_uids"])),
        study_key=str(r["study_key"]),
        progress=float(r["progress"]),
        reason=None if r["reason"] is None else str(r["reason"]),
        outputs=int(r["outputs"]),
        claimed_at=float(r["claimed_at"]),
        updated_at=float(r["updated_at"]),
        finished_at=None if r["finished_at"] is None else float(r["finished_at"]),
    )


class WorkitemLedger:
    """The claimed workitems, on a SqliteStore or a PostgresStore (``store``)."""

    def __init__(self, store: Any) -> None:
        self._host: _Host = store

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self._host._PARAM)

    def record_claim(
        self,
        workitem_uid: str,
        *,
        transaction_uid: str,
        performer: str,
        study_uid: str,
        series_uids: tuple[str, ...],
        study_key: str,
        now: float | None = None,
    ) -> ClaimedWorkitem:
        """Record a claim before it is asked of the task manager (so that a node
        killed in between asks again with the same Transaction UID), ``forget`` it if
        refused. The same workitem claimed again replaces the old row."""
        at = time.time() if now is None else now
        with self._host._tx() as db:
            db.execute(self._sql("DELETE FROM workitems WHERE workitem_uid = ?"), (workitem_uid,))
            db.execute(
                self._sql(
                    f"INSERT INTO workitems ({_COLS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (workitem_uid, transaction_uid, performer, OPEN, study_uid,
                 json.dumps(list(series_uids)), study_key, 0.0, None, 0, at, at, None),
            )  # fmt: skip
        found = self.get(workitem_uid)
        assert found is not None
        return found

    def forget(self, workitem_uid: str) -> None:
        """The claim recorded was refused (another performer won): no row is left."""
        with self._host._tx() as db:
            db.execute(self._sql("DELETE FROM workitems WHERE workitem_uid = ?"), (workitem_uid,))

    def set_progress(self, workitem_uid: str, progress: float) -> None:
        with self._host._tx() as db:
            db.execute(
                self._sql(
                    "UPDATE workitems SET progress = ?, updated_at = ? WHERE workitem_uid = ?"
                ),
                (progress, time.time(), workitem_uid),
            )

    def finish(
        self, workitem_uid: str, state: str, *, reason: str | None = None, outputs: int = 0
    ) -> None:
        """The workitem left our hands: ``completed``, ``canceled`` or ``lost``."""
        if state not in STATES or state == OPEN:
            raise ValueError(f"not a final workitem state: {state!r}")
        at = time.time()
        with self._host._tx() as db:
            db.execute(
                self._sql(
                    "UPDATE workitems SET state = ?, reason = ?, outputs = ?, "
                    "progress = CASE WHEN ? THEN 100 ELSE progress END, "
                    "updated_at = ?, finished_at = ? WHERE workitem_uid = ?"
                ),
                (state, reason, outputs, state == "completed", at, at, workitem_uid),
            )

    def get(self, workitem_uid: str) -> ClaimedWorkitem | None:
        rows = self._host._query(
            self._sql(f"SELECT {_COLS} FROM workitems WHERE workitem_uid = ?"), (workitem_uid,)
        )
        return _row(rows[0]) if rows else None

    def open_claims(self, performer: str) -> list[ClaimedWorkitem]:
        """What ``performer`` claimed and has not finished, oldest first."""
        rows = self._host._query(
            self._sql(
                f"SELECT {_COLS} FROM workitems WHERE state = ? AND performer = ? "
                "ORDER BY claimed_at, workitem_uid"
            ),
            (OPEN, performer),
        )
        return [_row(r) for r in rows]

    def list(self, state: str | None = None, limit: int = 500) -> list[ClaimedWorkitem]:
        """Claimed workitems, newest first (``state``: only those)."""
        if state is not None:
            rows = self._host._query(
                self._sql(
                    f"SELECT {_COLS} FROM workitems WHERE state = ? "
                    "ORDER BY claimed_at DESC LIMIT ?"
                ),
                (state, limit),
            )
        else:
            rows = self._host._query(
                self._sql(f"SELECT {_COLS} FROM workitems ORDER BY claimed_at DESC LIMIT ?"),
                (limit,),
            )
        return [_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """How many workitems are in each state."""
        rows = self._host._query("SELECT state, COUNT(*) AS n FROM workitems GROUP BY state")
        found = {str(r["state"]): int(r["n"]) for r in rows}
        return {s: found.get(s, 0) for s in STATES}
