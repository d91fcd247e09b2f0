"""Issue 7 (audit, retention): each delivery batch is audited per destination and study
(delivered, retry scheduled, dead letter); retention purges only old studies whose
results are all delivered, keeps their history, and audits each purge."""

from __future__ import annotations

import zlib
from pathlib import Path

from cds.audit import AuditEvent, AuditOutcome, AuditTrail
from cds.audit.trail import read_records
from cds.audit.verify import verify
from cds.config import RetentionSettings
from cds.delivery.scu import Outcome
from cds.domain import DeliveryState, StudyState
from cds.ingest.spool import Spool
from cds.retention import DAY_S, Retention
from cds.store.sqlite import SqliteStore

from ..delivery.test_worker import Clock, Pacs, queue, worker


def _sent(path: Path) -> list[tuple[AuditOutcome, str | None, dict[str, object]]]:
    return [
        (r.outcome, r.where, dict(r.detail))
        for r in read_records(path)
        if r.event is AuditEvent.INSTANCES_SENT
    ]


def test_delivered_batch_is_audited_with_its_destination(
    tmp_path: Path, ct: list[Path], pacs: Pacs
) -> None:
    store = SqliteStore(tmp_path / "state.db")
    root = tmp_path / "results"
    queue(store, root, ct)
    trail = AuditTrail(tmp_path / "audit")
    w = worker(store, root, {"pacs": pacs.dest()}, Clock())
    w._audit = trail  # the Node passes it as audit=
    w.tick()
    ((outcome, where, detail),) = _sent(tmp_path / "audit")
    assert outcome is AuditOutcome.SUCCESS
    assert where == f"127.0.0.1:{pacs.port}"
    assert detail["destination"] == "pacs"
    assert detail["objects"] == 3
    assert detail["state"] == "delivered"
    (rec,) = list(read_records(tmp_path / "audit"))
    assert rec.study_key == "k1"
    assert rec.who == "system"


def test_retries_and_the_dead_letter_are_audited(tmp_path: Path, ct: list[Path]) -> None:
    store = SqliteStore(tmp_path / "state.db")
    root = tmp_path / "results"
    queue(store, root, ct[:2])
    clock = Clock()
    trail = AuditTrail(tmp_path / "audit")
    down = Pacs()
    down.close()  # nobody listens there

    def refuse(files: list[Path], *_: object) -> list[Outcome]:
        return [Outcome(False, "association rejected")] * len(files)

    from cds.config import DeliverySettings
    from cds.delivery.worker import DeliveryWorker

    w = DeliveryWorker(
        store,
        DeliverySettings(backoff_initial_s=10, backoff_max_s=25, max_attempts=2, timeout_s=5),
        root,
        lambda: {"pacs": down.dest()},
        "CDS",
        sender=refuse,
        clock=clock,
        audit=trail,
    )
    w.tick()
    clock.now += 100
    w.tick()
    sent = _sent(tmp_path / "audit")
    assert [(o, d["state"]) for o, _, d in sent] == [
        (AuditOutcome.MINOR_FAILURE, "retry scheduled"),
        (AuditOutcome.SERIOUS_FAILURE, "dead letter"),
    ]
    assert all(d["error"] == "association rejected" for _, _, d in sent)
    assert {d.state for d in store.list_deliveries()} == {DeliveryState.DEAD}
    assert verify(tmp_path / "audit").ok


# --- retention -------------------------------------------------------------------
def _study(store: SqliteStore, spool: Spool, key: str, at: float, state: StudyState) -> Path:
    """A one-instance study received at ``at`` with a spooled file, in ``state``."""
    from pydicom.uid import CTImageStorage

    from cds.domain import InstanceRecord

    rel = f"studies/{key}/s/{key}.dcm"
    (spool.root / rel).parent.mkdir(parents=True, exist_ok=True)
    (spool.root / rel).write_bytes(b"\0" * 132)
    store.record_instance(
        InstanceRecord(
            f"1.2.{zlib.crc32(key.encode())}",
            f"1.2.{zlib.crc32(key.encode())}.1",
            f"1.2.{zlib.crc32(key.encode())}.1.1",
            CTImageStorage,
            "1.2.840.10008.1.2.1",
            "CT",
            1,
            key,
            rel,
            132,
            "0" * 64,
            "TEST",
            at,
            1.0,
        )
    )
    store.set_study_state(key, state)
    return spool.root / rel


def test_retention_purges_only_old_delivered_studies_and_audits_it(
    tmp_path: Path, ct: list[Path]
) -> None:
    store = SqliteStore(tmp_path / "state.db")
    spool = Spool(tmp_path / "spool", 0)
    spool.open()
    now = 100 * DAY_S
    old = now - 3 * DAY_S
    files = {
        "old-done": _study(store, spool, "old-done", old, StudyState.DONE),
        "old-failed": _study(store, spool, "old-failed", old, StudyState.FAILED),
        "new-done": _study(store, spool, "new-done", now - 0.5 * DAY_S, StudyState.DONE),
        "old-processing": _study(store, spool, "old-processing", old, StudyState.PROCESSING),
    }
    # old, done, but one result still waiting for the PACS (k1 is the study of queue())
    files["k1"] = _study(store, spool, "k1", old, StudyState.DONE)
    queue(store, tmp_path / "results", ct[:1], now=old)
    trail = AuditTrail(tmp_path / "audit")
    r = Retention(store, spool, RetentionSettings(spool_days=2), trail, clock=lambda: now)

    purged = r.run_once()

    assert sorted(p.study_key for p in purged) == ["old-done", "old-failed"]
    assert {k for k, f in files.items() if not f.exists()} == {"old-done", "old-failed"}
    for key in ("old-done", "old-failed"):
        detail = store.get_study(key)
        assert detail is not None
        assert detail.summary.state is StudyState.PURGED
        assert any(e.kind == "purged" and "retention" in e.detail for e in detail.events)
    recs = [x for x in read_records(tmp_path / "audit") if x.event is AuditEvent.PURGE]
    assert sorted(x.study_key or "" for x in recs) == ["old-done", "old-failed"]
    assert {x.who for x in recs} == {"system"}
    assert {x.detail["reason"] for x in recs} == {"retention"}
    assert {x.detail["files_removed"] for x in recs} == {1}

    # the result is delivered: the study's images go at the next pass, once
    (d,) = store.list_deliveries(study_key="k1")
    store.delivery_attempted(d.delivery_id, ok=True, error=None, retry_at=None, now=now)
    assert [p.study_key for p in r.run_once()] == ["k1"]
    assert r.run_once() == []
    assert verify(tmp_path / "audit").ok


def test_retention_is_off_without_spool_days(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    spool = Spool(tmp_path / "spool", 0)
    spool.open()
    f = _study(store, spool, "old", 0.0, StudyState.DONE)
    r = Retention(store, spool, RetentionSettings(), AuditTrail(tmp_path / "audit"))
    assert not r.enabled
    r.start()  # starts nothing
    assert r.run_once() == []
    r.stop()
    assert f.exists()


def test_a_refused_purge_is_audited_and_deletes_nothing(tmp_path: Path) -> None:
    import pytest

    from cds.admin import purge_study
    from cds.errors import AdminError

    store = SqliteStore(tmp_path / "state.db")
    spool = Spool(tmp_path / "spool", 0)
    spool.open()
    f = _study(store, spool, "busy", 0.0, StudyState.PROCESSING)
    trail = AuditTrail(tmp_path / "audit")
    with pytest.raises(AdminError):
        purge_study(store, spool, "busy", audit=trail, who="user:anna")
    assert f.exists()
    (rec,) = read_records(tmp_path / "audit")
    assert rec.event is AuditEvent.PURGE
    assert rec.outcome is AuditOutcome.MINOR_FAILURE
    assert rec.who == "user:anna"
    assert rec.detail["refused"] == "study processing"
