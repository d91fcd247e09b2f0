"""PostgreSQL implementation of the state store, for sites that run more than one node
(``store.backend: postgresql``, ``store.url``; the extra ``cds[postgres]``).

The same roles as ``SqliteStore``, the same tables and schema versions
(``postgres_schema``), the same domain values (the row readers are shared). One
connection per store, shared by the node's threads behind a lock, in autocommit:
a read is one statement, and every write that SQLite does in one ``BEGIN IMMEDIATE``
transaction is one transaction here. SQLite serialises its writers; PostgreSQL runs
them together at READ COMMITTED, so each read-then-write takes the lock it needs:

- the row it changes (``SELECT ... FOR UPDATE``: a job, a delivery, a study);
- an instance and its study (transaction advisory locks on the SOP Instance UID and
  the study key), so that two nodes receiving the same instance or the first two
  instances of a study count them once;
- queued jobs and due deliveries are claimed with ``FOR UPDATE SKIP LOCKED``
  (``claim_jobs``, ``claim_deliveries``): several nodes claim at once and each job or
  delivery goes to exactly one of them.

A connection lost (the server restarted) is opened again on the next call; the call
that met the loss fails with StoreError and its transaction is rolled back. The URL is
never logged or shown with its password (``redact_url``). ``ping`` (``/health``) waits
at most ``PING_TIMEOUT_S`` for the connection and for a new one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from cds.config.settings import redact_url
from cds.domain import QueueStats
from cds.errors import StoreError
from cds.store.claims import LEASE_S, ClaimsMixin, default_node
from cds.store.postgres_feedback import FeedbackMixin
from cds.store.postgres_host import Db, Row
from cds.store.postgres_jobs import JobsMixin
from cds.store.postgres_observatory import ObservatoryMixin
from cds.store.postgres_outbox import OutboxMixin
from cds.store.postgres_schema import SCHEMA_VERSION, migrate, recorded_version
from cds.store.postgres_studies import StudiesMixin
from cds.store.sqlite import queue_stats_of

__all__ = ["PING_TIMEOUT_S", "SCHEMA_VERSION", "PostgresStore"]

#: how long ``ping`` waits for the shared connection (another thread's call) or for a new one
PING_TIMEOUT_S = 2


class PostgresStore(
    ClaimsMixin, StudiesMixin, JobsMixin, OutboxMixin, FeedbackMixin, ObservatoryMixin
):
    """StateStore on one PostgreSQL database, of the node named ``node`` (``claims``)."""

    _PARAM = "%s"
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"  # nodes claiming at once skip each other's rows

    def __init__(
        self,
        url: str,
        *,
        node: str | None = None,
        lease_s: float = LEASE_S,
        connect_timeout_s: int = 10,
    ) -> None:
        self.node = node or default_node()
        self.lease_s = lease_s
        self.where = redact_url(url)
        self._url = url
        self._timeout = connect_timeout_s
        self._secret = str(conninfo_to_dict(url).get("password") or "")
        self._lock = threading.RLock()
        self._closed = False
        self._db = self._connect()
        try:
            with self._tx() as db:
                migrate(db, self.where)
        except BaseException:
            self._db.close()
            raise

    def _connect(self, timeout_s: int | None = None) -> Db:
        try:
            return psycopg.connect(
                self._url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=timeout_s or self._timeout,
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot reach the PostgreSQL state store {self.where} (store.url): "
                f"{self._scrub(exc)}"
            ) from None

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc).strip().replace("\n", " ")
        return text.replace(self._secret, "***") if self._secret else text

    def _live(self) -> Db:
        if self._closed:
            raise StoreError(f"state store {self.where} is closed")
        if self._db.closed or self._db.broken:
            self._db = self._connect()  # the server restarted: a new session
        return self._db

    @property
    def schema_version(self) -> int:
        """The schema version the database records (this cds' after opening it)."""
        with self._tx() as db:
            return recorded_version(db) or 0

    @contextmanager
    def _tx(self) -> Iterator[Db]:
        with self._lock:
            try:
                db = self._live()
                with db.transaction():
                    yield db
            except psycopg.Error as exc:
                raise StoreError(f"state store error: {self._scrub(exc)}") from exc

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[Row]:
        with self._lock:
            try:
                return self._live().execute(sql, args).fetchall()
            except psycopg.Error as exc:
                raise StoreError(f"state store error: {self._scrub(exc)}") from exc

    def ping(self) -> bool:
        """True when the server answers ``SELECT 1``; False, without waiting longer than
        ``PING_TIMEOUT_S``, when another thread holds the connection that long or a
        lost connection cannot be opened again in that time. A session the server
        ended (a restart, a failover) is opened again and asked once more."""
        if not self._lock.acquire(timeout=PING_TIMEOUT_S):
            return False
        try:
            for _ in range(2):
                if self._closed:
                    return False
                if self._db.closed or self._db.broken:
                    self._db = self._connect(PING_TIMEOUT_S)
                try:
                    return self._db.execute("SELECT 1 AS one").fetchall() == [{"one": 1}]
                except psycopg.OperationalError:
                    if not (self._db.closed or self._db.broken):
                        return False  # the server answered with an error
            return False
        except (StoreError, psycopg.Error):
            return False
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()

    def queue_stats(self) -> QueueStats:
        return queue_stats_of(self, "%s")
