"""What the SQLite store's mixins (jobs, outbox, feedback, observatory) use of
``SqliteStore``."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Protocol


class SqliteHost(Protocol):
    node: str
    lease_s: float

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]: ...

    @staticmethod
    def _event(
        db: sqlite3.Connection, study_key: str, at: float, kind: str, detail: str
    ) -> None: ...
