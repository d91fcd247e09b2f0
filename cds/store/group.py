"""Group commit of the receiver's instance rows (issue 19, item 5).

Each association's thread spools its instance durably (the file's fsync stays per
instance), then records its row, and answers Success only once that row is committed.
Concurrent associations each paid a transaction of their own, one after another on
the store's one connection. ``GroupCommit`` makes them one: the first thread to come
while no commit runs becomes the leader and commits its row and every row that queued
meanwhile in one transaction (``InstanceStore.record_instances``); the others wait
for that commit, or lead the next. A lone sender's thread leads every time, at the
cost of a lock; nothing waits for a batch to fill.

Each caller gets its own row's result, or its own row's StoreError: a batch whose one
transaction fails is recorded one row at a time by the store, so that a row it cannot
record fails only its own C-STORE (0xA700, sent again).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cds.domain import InstanceRecord, RecordResult
from cds.errors import StoreError
from cds.store.base import InstanceStore


@dataclass(slots=True)
class _Row:
    rec: InstanceRecord
    result: RecordResult | BaseException | None = None


@dataclass(slots=True)
class GroupStats:
    commits: int = 0  # transactions
    rows: int = 0  # rows recorded by them
    largest: int = 0  # the most rows in one


class GroupCommit:
    """Records instance rows through ``store``, rows that come together in one
    transaction (see the module)."""

    def __init__(self, store: InstanceStore) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._queued: list[_Row] = []
        self._leading = False
        self.stats = GroupStats()

    def record(self, rec: InstanceRecord) -> RecordResult:
        """``rec``'s row, committed; raises the StoreError that row met."""
        row = _Row(rec)
        with self._cond:
            self._queued.append(row)
            while self._leading and row.result is None:
                self._cond.wait()
            if row.result is None:  # not taken by a leader: this thread leads
                self._leading = True
                batch, self._queued = self._queued, []
            else:
                batch = []
        if batch:
            self._commit(batch)
        if isinstance(row.result, BaseException):
            raise row.result
        assert row.result is not None
        return row.result

    def _commit(self, batch: list[_Row]) -> None:
        results: list[RecordResult | StoreError] | BaseException
        try:
            results = self._store.record_instances([r.rec for r in batch])
            if len(results) != len(batch):
                results = RuntimeError("the store returned a result per row it was not given")
        except BaseException as exc:  # an error of the store's own (a bug): each caller's
            results = exc
        with self._cond:
            for i, r in enumerate(batch):
                r.result = results if isinstance(results, BaseException) else results[i]
            self.stats.commits += 1
            self.stats.rows += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            self._leading = False
            self._cond.notify_all()
