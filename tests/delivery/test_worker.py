"""The delivery worker against a real DICOM peer on loopback (a pynetdicom Storage SCP
standing in for the PACS; the Orthanc round trip is in integration_tests/)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cds.config import DeliverySettings
from cds.delivery.worker import DeliveryWorker, backoff
from cds.destinations import Destination
from cds.domain import DeliveryState, InstanceRecord, ResultObject, ResultState
from cds.requestor import PauseSafeAE
from cds.store.sqlite import SqliteStore

from ..conftest import free_port


class Pacs:
    """A Storage SCP that records what it got and answers ``status``."""

    def __init__(self, contexts: list[Any] | None = None, port: int | None = None) -> None:
        self.received: list[str] = []
        self.calling: list[str] = []
        self.status = 0x0000
        self.port = port or free_port()
        ae = PauseSafeAE(ae_title="PACS")
        ae.supported_contexts = contexts or AllStoragePresentationContexts
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
        )

    def _store(self, event: Any) -> int:
        self.calling.append(event.assoc.requestor.ae_title)
        if self.status == 0x0000 or self.status >= 0xB000:
            self.received.append(str(event.dataset.SOPInstanceUID))
        return self.status

    def dest(self) -> Destination:
        return Destination(ae_title="PACS", host="127.0.0.1", port=self.port)

    def close(self) -> None:
        self.server.shutdown()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pacs() -> Iterator[Pacs]:
    p = Pacs()
    yield p
    p.close()


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state.db")


def queue(
    store: SqliteStore, root: Path, files: list[Path], now: float = 1000.0, priority: int = 0
) -> list[str]:
    """Put ``files`` (as result objects of study k1) in the outbox for destination ``pacs``."""
    if store.get_study("k1") is None:  # the study the results belong to, for its history
        store.record_instance(
            InstanceRecord(
                "1.2",
                "1.2.1",
                "1.2.1.1",
                CTImageStorage,
                "1.2.840.10008.1.2.1",
                "CT",
                1,
                "k1",
                "spool/x.dcm",
                1,
                "0" * 64,
                "TEST",
                now,
                1.0,
            )
        )
    rows = []
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        rel = f"k1/{ds.Modality}/{ds.SOPInstanceUID}.dcm"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / rel)
        rows.append(
            ResultObject(
                sop_uid=str(ds.SOPInstanceUID),
                study_key="k1",
                study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                modality=str(ds.Modality),
                path=rel,
                job_kind="bone:cds-ref-ct-bone",
                source_series_uid="1.2",
                model_version="1",
                inputs_seed="s",
                state=ResultState.CURRENT,
                created_at=now,
            )
        )
    store.record_results(rows, ["pacs"], now=now, priority=priority)
    return [r.sop_uid for r in rows]


def worker(
    store: SqliteStore, root: Path, dests: dict[str, Destination], clock: Clock, **cfg: Any
) -> DeliveryWorker:
    settings = DeliverySettings(
        **{"backoff_initial_s": 10, "backoff_max_s": 25, "max_attempts": 3, "timeout_s": 5, **cfg}
    )
    return DeliveryWorker(store, settings, root, lambda: dests, "CDS", clock=clock)


@pytest.fixture
def ct(corpus: Path) -> list[Path]:
    return sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]


def events(store: SqliteStore) -> list[tuple[str, str]]:
    detail = store.get_study("k1")
    return [(e.kind, e.detail) for e in detail.events] if detail else []


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 5, 60) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]


def test_delivers_every_object_over_one_association(
    tmp_path: Path, store: SqliteStore, pacs: Pacs, ct: list[Path]
) -> None:
    sops = queue(store, tmp_path, ct)
    clock = Clock()
    w = worker(store, tmp_path, {"pacs": pacs.dest()}, clock, calling_ae_title="CDSOUT")
    assert w.tick() == 3
    assert sorted(pacs.received) == sorted(sops)
    assert set(pacs.calling) == {"CDSOUT"}
    done = store.list_deliveries(study_key="k1")
    assert {d.state for d in done} == {DeliveryState.DELIVERED}
    assert all(d.attempts == 1 and d.delivered_at == clock.now for d in done)
    assert w.tick() == 0  # nothing sent twice
    assert len(pacs.received) == 3


def test_failure_status_backs_off_then_dead_letter_then_retry(
    tmp_path: Path, store: SqliteStore, pacs: Pacs, ct: list[Path]
) -> None:
    queue(store, tmp_path, ct[:1])
    clock = Clock()
    w = worker(store, tmp_path, {"pacs": pacs.dest()}, clock)
    pacs.status = 0xA700
    assert w.tick() == 1
    (d,) = store.list_deliveries()
    assert d.state is DeliveryState.PENDING
    assert d.attempts == 1
    assert d.next_attempt_at == clock.now + 10
    assert "A700" in (d.last_error or "")
    assert w.tick() == 0  # not due yet
    clock.now += 10
    assert w.tick() == 1
    (d,) = store.list_deliveries()
    assert d.next_attempt_at == clock.now + 20
    clock.now += 20
    assert w.tick() == 1
    (d,) = store.list_deliveries()
    assert (d.state, d.attempts) == (DeliveryState.DEAD, 3)
    kinds = [k for k, _ in events(store)]
    assert kinds.count("delivery_failed") == 2
    assert kinds.count("delivery_dead") == 1
    clock.now += 1000
    assert w.tick() == 0  # the dead letter waits for the admin
    pacs.status = 0x0000
    store.retry_delivery(d.delivery_id, now=clock.now)
    assert w.tick() == 1
    assert store.list_deliveries()[0].state is DeliveryState.DELIVERED
    assert len(pacs.received) == 1


def test_warning_status_counts_as_delivered(
    tmp_path: Path, store: SqliteStore, pacs: Pacs, ct: list[Path]
) -> None:
    queue(store, tmp_path, ct[:1])
    pacs.status = 0xB000
    worker(store, tmp_path, {"pacs": pacs.dest()}, Clock()).tick()
    assert store.list_deliveries()[0].state is DeliveryState.DELIVERED


def test_destination_down_is_retried_with_a_clear_reason(
    tmp_path: Path, store: SqliteStore, ct: list[Path]
) -> None:
    queue(store, tmp_path, ct[:2])
    down = Destination(ae_title="PACS", host="127.0.0.1", port=free_port())
    worker(store, tmp_path, {"pacs": down}, Clock()).tick()
    for d in store.list_deliveries():
        assert d.state is DeliveryState.PENDING
        assert d.attempts == 1
        assert f"PACS@127.0.0.1:{down.port}" in (d.last_error or "")
    (failed,) = [detail for kind, detail in events(store) if kind == "delivery_failed"]
    assert "2 object(s) to pacs" in failed
    assert "next in 10 s" in failed


def test_destination_removed_from_routing_is_not_sent(
    tmp_path: Path, store: SqliteStore, pacs: Pacs, ct: list[Path]
) -> None:
    queue(store, tmp_path, ct[:1])
    worker(store, tmp_path, {"elsewhere": pacs.dest()}, Clock()).tick()
    (d,) = store.list_deliveries()
    assert d.state is DeliveryState.DEAD
    assert "not in the routing file" in (d.last_error or "")
    assert pacs.received == []


def test_sop_class_not_accepted_and_missing_file(
    tmp_path: Path,
    store: SqliteStore,
    ct: list[Path],
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a node started earlier in this process made pynetdicom accept any storage class
    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", False)
    ct_only = Pacs(
        contexts=[c for c in AllStoragePresentationContexts if c.abstract_syntax == CTImageStorage]
    )
    try:
        mr = next((corpus / "mr").rglob("*.dcm"))
        sops = queue(store, tmp_path, [ct[0], mr, ct[1]])
        (gone,) = [d for d in store.list_deliveries() if d.sop_uid == sops[2]]
        (tmp_path / gone.path).unlink()
        worker(store, tmp_path, {"pacs": ct_only.dest()}, Clock()).tick()
        by_sop = {d.sop_uid: d for d in store.list_deliveries()}
        assert by_sop[sops[0]].state is DeliveryState.DELIVERED
        refused = by_sop[sops[1]]
        assert refused.state is DeliveryState.PENDING  # the admin may fix the PACS's config
        assert "does not accept SOP Class" in (refused.last_error or "")
        missing = by_sop[sops[2]]
        assert missing.state is DeliveryState.DEAD  # retrying cannot bring the file back
        assert "result file missing" in (missing.last_error or "")
        assert ct_only.received == [sops[0]]
    finally:
        ct_only.close()


def test_tls_destination_verified_against_its_ca(
    tmp_path: Path, store: SqliteStore, ct: list[Path]
) -> None:
    import ssl
    import subprocess

    from cds.destinations import Tls

    key, cert = tmp_path / "pacs.key", tmp_path / "pacs.crt"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {made.stderr[-200:]!r}")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    received: list[str] = []
    port = free_port()
    ae = PauseSafeAE(ae_title="PACS")
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        ssl_context=server_ctx,
        evt_handlers=[
            (evt.EVT_C_STORE, lambda e: received.append(str(e.dataset.SOPInstanceUID)) or 0)
        ],
    )
    try:
        sops = queue(store, tmp_path, ct[:1])
        trusted = Destination(
            ae_title="PACS", host="127.0.0.1", port=port, tls=Tls(enabled=True, ca_file=cert)
        )
        untrusted = Destination(ae_title="PACS", host="127.0.0.1", port=port, tls=Tls(enabled=True))
        worker(store, tmp_path, {"pacs": untrusted}, Clock()).tick()
        assert received == []  # an unknown certificate: nothing sent
        (d,) = store.list_deliveries()
        assert d.state is DeliveryState.PENDING
        store.retry_delivery(d.delivery_id, now=1000)
        worker(store, tmp_path, {"pacs": trusted}, Clock()).tick()
        assert received == sops
    finally:
        server.shutdown()


def test_after_an_outage_the_backlog_drains_at_once_highest_priority_first(
    tmp_path: Path, store: SqliteStore, ct: list[Path]
) -> None:
    """issue 8: results wait while the PACS is down, each on its own backoff. The first
    one that gets through brings the others forward: they go at once, the routing
    rule's priority first, not when their timers happen to expire."""
    clock = Clock()
    port = free_port()
    dests = {"pacs": Destination(ae_title="PACS", host="127.0.0.1", port=port)}
    w = worker(store, tmp_path, dests, clock)
    (low1,) = queue(store, tmp_path, ct[:1], now=1000.0, priority=0)
    w.tick()  # down: low1 next at 1010
    clock.now = 1001.0
    (low2,) = queue(store, tmp_path, ct[1:2], now=1001.0, priority=0)
    w.tick()  # down: low2 next at 1011
    clock.now = 1005.0
    (high,) = queue(store, tmp_path, ct[2:3], now=1005.0, priority=10)
    w.tick()  # down: high next at 1015
    assert {d.attempts for d in store.list_deliveries()} == {1}
    pacs = Pacs(port=port)  # the PACS is back
    try:
        clock.now = 1010.0
        assert w.tick() == 1  # only low1 is due ... and gets through
        assert [d.sop_uid for d in store.due_deliveries(clock.now)] == [high, low2]
        assert w.tick() == 2
        assert pacs.received == [low1, high, low2]
        assert {d.state for d in store.list_deliveries()} == {DeliveryState.DELIVERED}
        assert {d.priority for d in store.list_deliveries() if d.sop_uid == high} == {10}
    finally:
        pacs.close()
