"""Retracted results (table ``retractions``, schema version 13), in either store.

A result is the objects one run of a model made for one input series (SR, SEG, GSPS,
SC: ``current`` together). ``cds results retract`` withdraws them everywhere
(``cds.retraction``): the rejection note and the withdrawing notifications are queued
first, each under a deterministic id, then ``retract`` commits the retraction, the
commit point: the objects' state becomes ``retracted``, their deliveries not yet sent
are cancelled, and one row here records who retracted it, why (the operator's text,
kept here and in the audit trail, never logged), the model, and the rejection note.
A retraction killed before its commit is done again in full by the next one: what
was queued already is the same rows, nothing is sent twice.

One class for both stores: it uses the store's own transaction and placeholder
(``_tx``, ``_query``, ``_PARAM``), as ``notifications`` and ``claims`` do.
"""

# SQL text is built only from constant fragments; every value is a bound parameter
# ruff: noqa: S608

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cds.domain import DeliveryState, ResultObject, ResultState

_COLS = (
    "result_uid, study_key, job_kind, model, version, sha256, objects, kos_uid, who, "
    "reason, retracted_at"
)
_RESULT_COLS = (
    "sop_uid, study_key, study_uid, series_uid, sop_class_uid, modality, path, job_kind, "
    "source_series_uid, model_version, inputs_seed, state, created_at, superseded_at"
)


class AlreadyRetracted(Exception):
    """The result is not current (retracted, superseded, or a rejection note)."""


@dataclass(frozen=True, slots=True)
class Retraction:
    """One retracted result: whose, by whom, why, and the note that withdrew it."""

    result_uid: str  # the SOP Instance UID the operator named
    study_key: str
    job_kind: str  # "<pipeline>:<model>"
    model: str
    version: str
    sha256: str
    objects: int  # result objects withdrawn
    kos_uid: str  # the rejection note's SOP Instance UID
    who: str
    reason: str
    retracted_at: float

    def as_dict(self, *, with_reason: bool = True) -> dict[str, Any]:
        out = {
            "result_uid": self.result_uid,
            "study_key": self.study_key,
            "job_kind": self.job_kind,
            "model": self.model,
            "version": self.version,
            "sha256": self.sha256,
            "objects": self.objects,
            "kos_uid": self.kos_uid,
            "who": self.who,
            "retracted_at": self.retracted_at,
        }
        if with_reason:
            out["reason"] = self.reason
        return out


def _read(r: Any) -> Retraction:
    return Retraction(
        result_uid=str(r["result_uid"]),
        study_key=str(r["study_key"]),
        job_kind=str(r["job_kind"]),
        model=str(r["model"]),
        version=str(r["version"]),
        sha256=str(r["sha256"]),
        objects=int(r["objects"]),
        kos_uid=str(r["kos_uid"]),
        who=str(r["who"]),
        reason=str(r["reason"]),
        retracted_at=float(r["retracted_at"]),
    )


def _result(r: Any) -> ResultObject:
    return ResultObject(
        sop_uid=str(r["sop_uid"]),
        study_key=str(r["study_key"]),
        study_uid=str(r["study_uid"]),
        series_uid=str(r["series_uid"]),
        sop_class_uid=str(r["sop_class_uid"]),
        modality=str(r["modality"]),
        path=str(r["path"]),
        job_kind=str(r["job_kind"]),
        source_series_uid=str(r["source_series_uid"]),
        model_version=str(r["model_version"]),
        inputs_seed=str(r["inputs_seed"]),
        state=ResultState(str(r["state"])),
        created_at=float(r["created_at"]),
        superseded_at=None if r["superseded_at"] is None else float(r["superseded_at"]),
    )


class RetractionLog:
    """Retractions and the results' states, on a SqliteStore or a PostgresStore."""

    def __init__(self, store: Any) -> None:
        self._host = store

    def _sql(self, sql: str) -> str:
        return str(sql.replace("?", self._host._PARAM))

    # --- the results -------------------------------------------------------
    def result(self, sop_uid: str) -> ResultObject | None:
        """The result object with this SOP Instance UID (None: unknown)."""
        rows = self._host._query(
            self._sql(f"SELECT {_RESULT_COLS} FROM results WHERE sop_uid = ?"), (sop_uid,)
        )
        return _result(rows[0]) if rows else None

    def results(
        self,
        study_key: str | None = None,
        model: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[ResultObject]:
        """Result objects, newest first; ``model`` matches the job kind's model part."""
        if state is not None and state not in {s.value for s in ResultState}:
            known = ", ".join(s.value for s in ResultState)
            raise ValueError(f"unknown result state {state!r} (known: {known})")
        clauses: list[str] = []
        args: list[object] = []
        if study_key is not None:
            clauses.append("study_key = ?")
            args.append(study_key)
        if model is not None:
            clauses.append("job_kind LIKE ? ESCAPE '!'")
            args.append("%:" + "".join("!" + c if c in "!%_" else c for c in model))
        if state is not None:
            clauses.append("state = ?")
            args.append(state)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._host._query(
            self._sql(
                f"SELECT {_RESULT_COLS} FROM results {where} "
                "ORDER BY created_at DESC, modality, sop_uid LIMIT ?"
            ),
            (*args, limit),
        )
        return [_result(r) for r in rows]

    # --- the retraction ----------------------------------------------------
    def retract(
        self,
        rec: Retraction,
        sop_uids: Sequence[str],
        now: float | None = None,
    ) -> Retraction:
        """Commit a retraction: ``sop_uids`` (current) become ``retracted``, their
        deliveries not yet sent are cancelled, ``rec`` is recorded. AlreadyRetracted
        (nothing written) when ``rec.result_uid`` is retracted already or not current."""
        at = time.time() if now is None else now
        with self._host._tx() as db:
            row = db.execute(
                self._sql("SELECT state FROM results WHERE sop_uid = ?"), (rec.result_uid,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no result with SOP Instance UID {rec.result_uid}")
            if str(row["state"]) != ResultState.CURRENT.value:
                raise AlreadyRetracted(f"result {rec.result_uid} is {row['state']}")
            for sop in sop_uids:
                db.execute(
                    self._sql(
                        "UPDATE results SET state = ?, superseded_at = ? WHERE sop_uid = ? "
                        "AND state = ?"
                    ),
                    (ResultState.RETRACTED.value, at, sop, ResultState.CURRENT.value),
                )
                db.execute(
                    self._sql(
                        "UPDATE deliveries SET state = ?, updated_at = ?, next_attempt_at = NULL, "
                        "last_error = 'retracted before it was sent' "
                        "WHERE sop_uid = ? AND state IN (?, ?)"
                    ),
                    (DeliveryState.CANCELLED.value, at, sop,
                     DeliveryState.PENDING.value, DeliveryState.DEAD.value),
                )  # fmt: skip
            db.execute(
                self._sql(f"INSERT INTO retractions ({_COLS}) VALUES ({', '.join('?' * 11)})"),
                (rec.result_uid, rec.study_key, rec.job_kind, rec.model, rec.version,
                 rec.sha256, rec.objects, rec.kos_uid, rec.who, rec.reason, at),
            )  # fmt: skip
            self._host._event(
                db, rec.study_key, at, "retracted",
                f"{rec.objects} object(s) of {rec.job_kind} retracted by {rec.who} "
                f"(rejection note {rec.kos_uid})",
            )  # fmt: skip
        return Retraction(**{**rec.as_dict(), "reason": rec.reason, "retracted_at": at})

    def get(self, result_uid: str) -> Retraction | None:
        rows = self._host._query(
            self._sql(f"SELECT {_COLS} FROM retractions WHERE result_uid = ?"), (result_uid,)
        )
        return _read(rows[0]) if rows else None

    def of_objects(self, sop_uids: Sequence[str]) -> Retraction | None:
        """The retraction that withdrew any of ``sop_uids`` (a sibling named)."""
        for sop in sop_uids:
            found = self.get(sop)
            if found is not None:
                return found
        return None

    def all(self) -> list[Retraction]:
        rows = self._host._query(f"SELECT {_COLS} FROM retractions ORDER BY retracted_at")
        return [_read(r) for r in rows]

    def counts(self) -> dict[tuple[str, str], int]:
        """Retractions per (model, version)."""
        rows = self._host._query(
            "SELECT model, version, COUNT(*) AS n FROM retractions GROUP BY model, version"
        )
        return {(str(r["model"]), str(r["version"])): int(r["n"]) for r in rows}
