"""Tables of the PostgreSQL state store: the SQLite store's, in PostgreSQL's types, and
the same numbered migrations.

What is shared with ``sqlite_schema``: ``SCHEMA`` (every table and index), the
``MIGRATIONS`` steps and ``SCHEMA_VERSION``, so a version number means the same tables
in both stores. Their SQL is portable except for three type words, translated here
(``postgres_sql``):

- ``REAL`` is a 4-byte float in PostgreSQL: times and scores are ``DOUBLE PRECISION``;
- ``INTEGER`` is 4 bytes: ``BIGINT`` (sizes, counts), as SQLite's are 8;
- ``INTEGER PRIMARY KEY AUTOINCREMENT`` (``study_events.id``) is an identity column.

What differs: a step adds its column with ``ADD COLUMN IF NOT EXISTS`` (SQLite asks
``pragma_table_info`` first); PostgreSQL has no ``rowid``, so ``findings`` and
``feedback`` get a ``seq`` identity column (``PG_EXTRA``) that orders rows of the same
time as SQLite's rowid does (insertion order). ``migrate`` runs in the caller's
transaction under an advisory lock, so nodes starting together do not both alter the
tables; PostgreSQL's DDL is transactional, so a failed step leaves the database as it
was. A database written by a newer cds is refused, nothing written.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from cds.errors import StoreError
from cds.store.sqlite_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "migrate", "postgres_sql", "recorded_version"]

#: advisory lock key held while the schema is checked and brought up to date
MIGRATION_LOCK = 0x0C_D5_5C_4E

_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT GENERATED ALWAYS AS IDENTITY "
     "PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
)  # fmt: skip

#: PostgreSQL only: insertion order where SQLite orders by rowid
PG_EXTRA = (
    "ALTER TABLE findings ADD COLUMN IF NOT EXISTS seq BIGINT GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE feedback ADD COLUMN IF NOT EXISTS seq BIGINT GENERATED ALWAYS AS IDENTITY",
)


def postgres_sql(sql: str) -> str:
    """SQLite DDL (``SCHEMA``, a step's column declaration) in PostgreSQL's types."""
    for pattern, replacement in _TYPES:
        sql = pattern.sub(replacement, sql)
    return sql


_SCHEMA_STATEMENTS = tuple(postgres_sql(s.strip()) for s in SCHEMA.split(";") if s.strip())


def recorded_version(db: psycopg.Connection[Any]) -> int | None:
    """The schema version the database records; None when it records none (a new one)."""
    row = db.execute("SELECT to_regclass('meta') IS NOT NULL AS present").fetchone()
    if row is None or not _first(row):
        return None
    found = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(_first(found)) if found is not None else None


def _first(row: object) -> Any:
    """The first column of a row, whichever row factory made it."""
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]  # type: ignore[index]


def refuse_newer(found: int | None, where: str) -> None:
    """Raise StoreError for a database written by a newer cds (left as it is)."""
    if found is not None and found > SCHEMA_VERSION:
        raise StoreError(
            f"state store {where} has schema version {found}, newer than this cds "
            f"understands ({SCHEMA_VERSION}): run the cds release that wrote it (or a "
            "newer one); this one leaves the database as it is"
        )


def migrate(db: psycopg.Connection[Any], where: str) -> None:
    """Bring the database to SCHEMA_VERSION inside the caller's transaction; ``where``
    names it in errors (its URL without the password)."""
    db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    found = recorded_version(db)
    refuse_newer(found, where)
    for migration in MIGRATIONS:
        if migration.version > (found or 0):
            for step in migration.steps:
                exists = db.execute("SELECT to_regclass(%s) IS NOT NULL", (step.table,))
                row = exists.fetchone()
                if row is None or not _first(row):
                    continue  # no table: created whole below
                try:
                    db.execute(
                        f"ALTER TABLE {step.table} ADD COLUMN IF NOT EXISTS {step.column} "
                        f"{postgres_sql(step.declaration)}"
                    )
                except psycopg.Error as exc:
                    raise StoreError(
                        f"state store {where}: schema step {migration.version} "
                        f"({migration.what}) failed, the database is left as it was: {exc}"
                    ) from exc
    for statement in (*_SCHEMA_STATEMENTS, *PG_EXTRA):
        db.execute(statement)
    if found != SCHEMA_VERSION:
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
