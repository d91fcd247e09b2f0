"""The backfill ledger: each backfill run and each study it fetches from an archive
(tables ``backfills`` and ``backfill_studies``, schema version 10), in either store.

A run is named by its archive and its query (``run_name``), so the same command
given again after a kill -9 finds its run and goes on where it stopped. A study is
``queued`` once the archive's C-FIND named it, ``retrieving`` while it is fetched,
then ``retrieved`` (the archive sent every instance), ``failed`` (after the run's
tries) or ``skipped`` (the node already held it, or another run fetches it): a study
is fetched by one run only, and never one the node received live.

The node reads the ledger when a study completes (``mark``): a study a run is still
fetching waits (it would be routed on half its instances), and a fetched one is a
backfill job, run after live studies and delivered only when the run says so.

One class for both stores: it uses the store's own transaction and placeholder
(``_tx``, ``_query``, ``_PARAM``), as ``claims`` does.
"""

# SQL text is built only from constant fragments; every value is a bound parameter
# ruff: noqa: S608

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

#: the states of a study in a run, in the order it goes through them
STUDY_STATES = ("queued", "retrieving", "retrieved", "failed", "skipped")
#: the states of a run
RUN_STATES = ("querying", "retrieving", "finished")
#: studies still to fetch (a ``retrieving`` one was cut short by a kill: fetched again)
_OPEN = ("queued", "retrieving")


class _Host(Protocol):
    _PARAM: ClassVar[str]

    def _tx(self) -> AbstractContextManager[Any]: ...

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class BackfillSpec:
    """What a run asks of its archive; the same spec is the same run."""

    archive: str
    since: str  # YYYY-MM-DD
    until: str  # YYYY-MM-DD
    modality: str = ""
    description: str = ""
    rate_per_min: float = 30.0
    max_associations: int = 1
    deliver: bool = False

    @property
    def name(self) -> str:
        parts = [self.archive, self.since, self.until, self.modality or "*"]
        if self.description:
            parts.append(self.description)
        return "/".join(parts)


@dataclass(frozen=True, slots=True)
class BackfillMark:
    """What the node needs to know of a study a run fetches."""

    backfill: str
    state: str
    deliver: bool

    @property
    def retrieved(self) -> bool:
        return self.state == "retrieved"


@dataclass(frozen=True, slots=True)
class BackfillStatus:
    """One run: its query, its state and how many studies are where."""

    name: str
    archive: str
    since: str
    until: str
    modality: str
    rate_per_min: float
    max_associations: int
    deliver: bool
    state: str
    created_at: float
    updated_at: float
    counts: dict[str, int] = field(default_factory=dict)  # per STUDY_STATES
    processed: int = 0  # retrieved studies the node has routed and run (done or failed)
    error: str | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def remaining(self) -> int:
        return sum(self.counts.get(s, 0) for s in _OPEN)

    @property
    def eta_s(self) -> float:
        """Seconds left at the run's rate (its lower bound: retrieval takes time too)."""
        return self.remaining * 60.0 / self.rate_per_min if self.rate_per_min > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """As ``cds backfill status --json`` and ``GET /api/backfill`` give it."""
        return {
            **dataclasses.asdict(self),
            "total": self.total,
            "remaining": self.remaining,
            "eta_s": round(self.eta_s, 1),
        }


class BackfillLedger:
    """The ledger, on a SqliteStore or a PostgresStore (``store``)."""

    def __init__(self, store: Any) -> None:
        self._host: _Host = store

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self._host._PARAM)

    # --- runs --------------------------------------------------------------
    def open_run(self, spec: BackfillSpec, now: float | None = None) -> str:
        """Start the run ``spec`` names, or find it again (resume); its state."""
        at = time.time() if now is None else now
        with self._host._tx() as db:
            row = db.execute(
                self._sql("SELECT state FROM backfills WHERE name = ?"), (spec.name,)
            ).fetchone()
            if row is not None:
                db.execute(
                    self._sql(
                        "UPDATE backfills SET rate_per_min = ?, max_associations = ?, "
                        "deliver = ?, updated_at = ?, error = NULL WHERE name = ?"
                    ),
                    (spec.rate_per_min, spec.max_associations, int(spec.deliver), at, spec.name),
                )
                return str(row["state"])
            db.execute(
                self._sql(
                    "INSERT INTO backfills (name, archive, since, until, modality, description, "
                    "rate_per_min, max_associations, deliver, state, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (spec.name, spec.archive, spec.since, spec.until, spec.modality,
                 spec.description, spec.rate_per_min, spec.max_associations,
                 int(spec.deliver), "querying", at, at),
            )  # fmt: skip
            return "querying"

    def set_run_state(self, name: str, state: str, error: str | None = None) -> None:
        if state not in RUN_STATES:
            raise ValueError(f"unknown backfill state {state!r}")
        with self._host._tx() as db:
            db.execute(
                self._sql(
                    "UPDATE backfills SET state = ?, error = ?, updated_at = ? WHERE name = ?"
                ),
                (state, error, time.time(), name),
            )

    def add_studies(
        self, name: str, found: Iterable[tuple[str, str]], deliver: bool, now: float | None = None
    ) -> int:
        """Queue each (Study Instance UID, study key) the query found, once: a study this
        run has already is left as it is; one the node holds, or another run fetches,
        is ``skipped``. Returns how many were queued."""
        at = time.time() if now is None else now
        queued = 0
        with self._host._tx() as db:
            for study_uid, key in found:
                mine = db.execute(
                    self._sql(
                        "SELECT 1 FROM backfill_studies WHERE backfill = ? AND study_uid = ?"
                    ),
                    (name, study_uid),
                ).fetchone()
                if mine is not None:
                    continue
                elsewhere = db.execute(
                    self._sql(
                        "SELECT backfill FROM backfill_studies WHERE study_key = ? "
                        "AND state <> 'skipped'"
                    ),
                    (key,),
                ).fetchone()
                held = db.execute(
                    self._sql("SELECT 1 FROM studies WHERE study_key = ?"), (key,)
                ).fetchone()
                if elsewhere is not None:
                    state, why = "skipped", f"fetched by backfill {elsewhere['backfill']}"
                elif held is not None:
                    state, why = "skipped", "already on the node"
                else:
                    state, why = "queued", None
                db.execute(
                    self._sql(
                        "INSERT INTO backfill_studies (backfill, study_uid, study_key, state, "
                        "deliver, error, queued_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    ),
                    (name, study_uid, key, state, int(deliver), why, at, at),
                )
                queued += state == "queued"
        return queued

    def open_studies(self, name: str) -> list[str]:
        """Study Instance UIDs still to fetch, in the order the query found them."""
        marks = ", ".join("?" * len(_OPEN))
        rows = self._host._query(
            self._sql(
                f"SELECT study_uid FROM backfill_studies WHERE backfill = ? "
                f"AND state IN ({marks}) ORDER BY queued_at, study_uid"
            ),
            (name, *_OPEN),
        )
        return [str(r["study_uid"]) for r in rows]

    def set_study_state(
        self,
        name: str,
        study_uid: str,
        state: str,
        *,
        instances: int | None = None,
        error: str | None = None,
    ) -> None:
        if state not in STUDY_STATES:
            raise ValueError(f"unknown backfill study state {state!r}")
        at = time.time()
        started = state == "retrieving"
        with self._host._tx() as db:
            db.execute(
                self._sql(
                    "UPDATE backfill_studies SET state = ?, error = ?, updated_at = ?, "
                    "attempts = attempts + ?, instances = COALESCE(?, instances), "
                    "retrieved_at = CASE WHEN ? THEN ? ELSE retrieved_at END "
                    "WHERE backfill = ? AND study_uid = ?"
                ),
                (state, error, at, int(started), instances, state == "retrieved", at,
                 name, study_uid),
            )  # fmt: skip

    # --- what the node reads --------------------------------------------------
    def mark(self, study_key: str) -> BackfillMark | None:
        """The run fetching this study, or None: a live study."""
        rows = self._host._query(
            self._sql(
                "SELECT backfill, state, deliver FROM backfill_studies "
                "WHERE study_key = ? AND state <> 'skipped' ORDER BY queued_at LIMIT 1"
            ),
            (study_key,),
        )
        if not rows:
            return None
        r = rows[0]
        return BackfillMark(str(r["backfill"]), str(r["state"]), bool(r["deliver"]))

    def status(self, names: Sequence[str] = ()) -> list[BackfillStatus]:
        """Every run (or those named), newest first, with its counts."""
        runs = self._host._query("SELECT * FROM backfills ORDER BY created_at DESC")
        counts = self._host._query(
            "SELECT backfill, state, COUNT(*) AS n FROM backfill_studies GROUP BY backfill, state"
        )
        processed = self._host._query(
            "SELECT b.backfill, COUNT(*) AS n FROM backfill_studies b "
            "JOIN studies s ON s.study_key = b.study_key "
            "WHERE b.state = 'retrieved' AND s.state IN ('done', 'failed') GROUP BY b.backfill"
        )
        by_run: dict[str, dict[str, int]] = {}
        for c in counts:
            by_run.setdefault(str(c["backfill"]), {})[str(c["state"])] = int(c["n"])
        done = {str(p["backfill"]): int(p["n"]) for p in processed}
        out = []
        for r in runs:
            name = str(r["name"])
            if names and name not in names:
                continue
            out.append(
                BackfillStatus(
                    name=name,
                    archive=str(r["archive"]),
                    since=str(r["since"]),
                    until=str(r["until"]),
                    modality=str(r["modality"]),
                    rate_per_min=float(r["rate_per_min"]),
                    max_associations=int(r["max_associations"]),
                    deliver=bool(r["deliver"]),
                    state=str(r["state"]),
                    created_at=float(r["created_at"]),
                    updated_at=float(r["updated_at"]),
                    counts={s: by_run.get(name, {}).get(s, 0) for s in STUDY_STATES},
                    processed=done.get(name, 0),
                    error=None if r["error"] is None else str(r["error"]),
                )
            )
        return out


#: a backfill job's priority is the routing rule's less this: live studies go first
BACKFILL_PRIORITY_DROP = 1000
#: how often the node looks again at a completed study its run is still fetching
BACKFILL_RECHECK_S = 2.0


def backfill_mark(store: Any, study_key: str) -> BackfillMark | None:
    """The run fetching ``study_key`` (a backfill job), or None (a live study)."""
    return BackfillLedger(store).mark(study_key)
