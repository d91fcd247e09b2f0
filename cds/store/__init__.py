"""The state store: studies, series, instances, jobs and study history.

Stages talk to the role of the store they use (``base``: ``InstanceStore``,
``StudyStore``, ``JobStore``, ``Outbox``, ``FeedbackStore``, ``ObservatoryStore``;
``StateStore`` is all of them); ``open_store`` picks the implementation from the
settings (SQLite today; PostgreSQL can be added behind the same protocols without
touching a stage).
"""

from __future__ import annotations

from cds.config import Settings
from cds.store.base import StateStore
from cds.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "StateStore", "open_store"]


def open_store(settings: Settings) -> StateStore:
    if settings.store.backend == "sqlite":
        return SqliteStore(settings.sqlite_path)
    raise ValueError(f"store.backend: unknown backend {settings.store.backend!r}")
