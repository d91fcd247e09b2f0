"""issue 2: a study is complete after its quiet time; the consumer runs once."""

from __future__ import annotations

from pathlib import Path

from cds.domain import StudyState
from cds.ingest.assembler import Assembler
from cds.store.sqlite import SqliteStore

from ..store.test_sqlite import rec


def test_tick_completes_due_studies_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    now = [1000.0]
    completed: list[str] = []
    asm = Assembler(store, completed.append, clock=lambda: now[0])
    store.record_instance(rec(1, received_at=1000.0, quiet_time_s=5.0))
    store.record_instance(
        rec(
            1,
            study_uid="9.9",
            study_key="k2",
            series_uid="9.9.1",
            sop_uid="9.9.1.1",
            received_at=1000.0,
            quiet_time_s=60.0,
        )
    )
    now[0] = 1004.9
    assert asm.tick() == []
    now[0] = 1005.0
    assert asm.tick() == ["k1"]
    assert asm.tick() == []
    assert completed == ["k1"]
    states = {s.study_key: s.state for s in store.list_studies()}
    assert states == {"k1": StudyState.COMPLETE, "k2": StudyState.RECEIVING}


def test_failing_consumer_does_not_stop_assembly(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")

    def boom(key: str) -> None:
        raise RuntimeError("consumer bug")

    asm = Assembler(store, boom, clock=lambda: 10_000.0)
    store.record_instance(rec(1))
    assert asm.tick() == ["k1"]
