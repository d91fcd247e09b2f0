"""The state store: studies, series, instances, jobs and study history.

Stages talk to the role of the store they use (``base``: ``InstanceStore``,
``StudyStore``, ``JobStore``, ``Outbox``, ``FeedbackStore``, ``ObservatoryStore``;
``StateStore`` is all of them); ``open_store`` picks the implementation from
``store.backend``: SQLite (``sqlite``, the embedded default) or PostgreSQL
(``postgresql``, for several nodes; ``postgres``, imported only then, with psycopg
from the extra ``cds[postgres]``).
"""

from __future__ import annotations

from cds.config import Settings
from cds.errors import StoreError
from cds.store.base import StateStore
from cds.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "StateStore", "open_store"]


def open_store(settings: Settings) -> StateStore:
    """The store ``settings.store`` names. StoreError (no traceback needed, no password
    in it) when psycopg is not installed or the server cannot be reached."""
    cfg = settings.store
    if cfg.backend == "sqlite":
        return SqliteStore(
            settings.sqlite_path, node=settings.node.name, lease_s=settings.node.lease_s
        )
    if cfg.backend == "postgresql":
        if cfg.url is None:  # the settings refuse this; a direct caller may not
            raise StoreError("store.url: required when store.backend is postgresql")
        try:
            from cds.store.postgres import PostgresStore  # noqa: PLC0415 (optional extra)
        except ImportError as exc:
            raise StoreError(
                f"store.backend is postgresql but psycopg cannot be imported ({exc.name}): "
                "install the extra, pip install 'cds[postgres]'"
            ) from None
        return PostgresStore(cfg.url, node=settings.node.name, lease_s=settings.node.lease_s)
    raise ValueError(f"store.backend: unknown backend {cfg.backend!r}")
