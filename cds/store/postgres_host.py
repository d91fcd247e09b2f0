"""What the PostgreSQL store's mixins (studies, jobs, outbox, feedback, observatory) use
of ``PostgresStore``, and how they read rows.

Rows are dicts by column name (psycopg's ``dict_row``). The SQLite store's row readers
(``sqlite_jobs._job``, ``sqlite_outbox._delivery``, ...) read by column name only, so
both stores turn a row into a domain value with the same function: ``as_row`` says so
to the type checker.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Any, Protocol, cast

import psycopg

Row = dict[str, Any]
Db = psycopg.Connection[Row]


def as_row(row: Row) -> sqlite3.Row:
    """A PostgreSQL row for a SQLite row reader (both read ``row["column"]`` only)."""
    return cast("sqlite3.Row", row)


def one(db: Db, sql: str, args: tuple[object, ...] = ()) -> Row | None:
    """The first row of ``sql`` in ``db``'s transaction, or None."""
    return db.execute(sql, args).fetchone()


class PostgresHost(Protocol):
    node: str
    lease_s: float

    def _tx(self) -> AbstractContextManager[Db]: ...

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[Row]: ...

    @staticmethod
    def _event(db: Db, study_key: str, at: float, kind: str, detail: str) -> None: ...
