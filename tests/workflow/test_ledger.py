"""issue 25, item 5: the claimed-workitem ledger (table ``workitems``, schema 12) in
both stores: a claim, its progress and its end, found again by a store opened anew
(a restarted node), never showing the Transaction UID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cds.store import SqliteStore, StateStore
from cds.store.workitems import WorkitemLedger


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    opened: list[StateStore] = []

    def open_store() -> StateStore:
        if request.param == "sqlite":
            s: StateStore = SqliteStore(tmp_path / "state.db", node="node-a")
        else:
            from cds.store.postgres import PostgresStore

            s = PostgresStore(request.getfixturevalue("postgres_url"), node="node-a")
        opened.append(s)
        return s

    yield open_store
    for s in opened:
        s.close()


def test_a_claim_survives_a_reopen_and_ends_once(opener) -> None:  # type: ignore[no-untyped-def]
    store = opener()
    ledger = WorkitemLedger(store)
    ledger.record_claim("1.2.3", transaction_uid="9.8.7", performer="node-a",
                        study_uid="1.2.4", series_uids=("1.2.5",), study_key="k1")  # fmt: skip
    ledger.record_claim("1.2.6", transaction_uid="9.8.6", performer="node-b",
                        study_uid="1.2.4", series_uids=(), study_key="k1")  # fmt: skip
    ledger.set_progress("1.2.3", 40.0)
    again = WorkitemLedger(opener())  # a restarted node
    [mine] = again.open_claims("node-a")
    assert (mine.workitem_uid, mine.transaction_uid, mine.progress) == ("1.2.3", "9.8.7", 40.0)
    assert mine.series_uids == ("1.2.5",)
    assert "transaction_uid" not in mine.as_dict()
    again.finish("1.2.3", "canceled", reason="timeout")
    assert again.open_claims("node-a") == []
    assert again.counts() == {"in_progress": 1, "completed": 0, "canceled": 1, "lost": 0}
    assert [w.state for w in again.list("canceled")] == ["canceled"]
    again.forget("1.2.6")
    assert again.get("1.2.6") is None
    with pytest.raises(ValueError, match="not a final workitem state"):
        again.finish("1.2.3", "in_progress")
