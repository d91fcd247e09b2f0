"""PauseSafeAE (cds/requestor.py): a sender's response is never
taken by its own association's reactor (issue 14, the load test's lost response).

The race needs the reactor thread to be descheduled just after ``set()`` woke it.
``_Stall`` makes that happen on purpose: it holds the reactor thread right after
the checkpoint lets it through, until the next DIMSE message is queued, and keeps
the sender from taking that message until the reactor has decided what to do (a
legal schedule, and the one a loaded machine produced). No sleeps: every step is
an event.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from cds.requestor import PauseSafeAE, PauseSafeAssociation

CT = "1.2.840.10008.5.1.4.1.1.2"
#: bounds every wait of the choreography, so that a broken one fails, not hangs
STEP_S = 10.0
UNEXPECTED = "Received unexpected C-STORE service message"


class _Stall:
    """Holds an association's reactor once, between its checkpoint and its next step."""

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc
        self.armed = threading.Event()
        self.stalled = threading.Event()  # the reactor passed the checkpoint and is held
        self.arrived = threading.Event()  # a DIMSE message was queued
        self.decided = threading.Event()  # the held reactor looked at the queue or paused
        self.reactor_took: list[object] = []
        stall = self

        class Checkpoint(threading.Event):
            def wait(self, timeout: float | None = None) -> bool:
                if stall._on_reactor() and stall.stalled.is_set():
                    stall.decided.set()  # waiting again: it left the queue alone
                passed = super().wait(timeout)
                held = stall._on_reactor() and stall.armed.is_set()
                if passed and held and not stall.stalled.is_set():
                    stall.stalled.set()
                    stall.arrived.wait(STEP_S)
                return passed

        class Messages(queue.Queue[Any]):
            def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
                super().put(item, block, timeout)
                stall.arrived.set()

            def get(self, block: bool = True, timeout: float | None = None) -> Any:
                if not stall._on_reactor():  # the sender: only after the reactor's move
                    stall.decided.wait(STEP_S)
                    return super().get(block, timeout)
                try:
                    item = super().get(block, timeout)
                except queue.Empty:
                    stall._looked(None)
                    raise
                stall._looked(item)
                return item

        checkpoint = Checkpoint()
        checkpoint.set()
        assoc._reactor_checkpoint = checkpoint
        assoc.dimse.msg_queue = Messages()

    def _on_reactor(self) -> bool:
        return threading.current_thread() is self.assoc

    def _looked(self, item: object) -> None:
        """The reactor's get_msg() after the stall: note what it took."""
        if self.stalled.is_set() and not self.decided.is_set():
            if item is not None:
                self.reactor_took.append(item)
            self.decided.set()


@pytest.fixture
def scp() -> Iterator[ThreadedAssociationServer]:
    ae = AE(ae_title="STORESCP")
    ae.add_supported_context(CT, ExplicitVRLittleEndian)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0x0000)]
    )
    assert isinstance(server, ThreadedAssociationServer)
    yield server
    server.shutdown()


@pytest.fixture
def scp_port(scp: ThreadedAssociationServer) -> int:
    return int(scp.server_address[1])


def _ct() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _associate_stalled(ae: AE, port: int, dimse_timeout: float) -> tuple[Association, _Stall]:
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    ae.dimse_timeout = dimse_timeout
    stalls: list[_Stall] = []
    # EVT_CONN_OPEN comes before the association's reactor thread starts
    handler = (evt.EVT_CONN_OPEN, lambda e: stalls.append(_Stall(e.assoc)))
    assoc = ae.associate("127.0.0.1", port, ae_title="STORESCP", evt_handlers=[handler])
    assert assoc.is_established
    assert len(stalls) == 1
    stall = stalls[0]
    stall.armed.set()
    assert stall.stalled.wait(STEP_S), "the reactor never passed its checkpoint"
    return assoc, stall


def test_the_stock_requestor_loses_the_response_to_its_own_reactor(
    scp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The cause, reproduced: what the load harness's senders did (pynetdicom's AE).

    If this starts passing with the response kept, pynetdicom fixed the race and
    PauseSafeAE may go."""
    assoc, stall = _associate_stalled(AE(ae_title="STOCK"), scp_port, dimse_timeout=1)
    assert type(assoc) is Association
    with caplog.at_level(logging.WARNING, logger="pynetdicom"):
        status = assoc.send_c_store(_ct())
        assoc.join(STEP_S)  # the reactor has logged what it did with the response
    assert not assoc.is_alive()
    assert "Status" not in status  # no response within the DIMSE timeout
    assert len(stall.reactor_took) == 1  # the reactor had taken it
    assert UNEXPECTED in caplog.text
    assert assoc.is_aborted


def test_the_pause_safe_requestor_keeps_its_response(
    scp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The same schedule through PauseSafeAE: the reactor stands aside, the sender
    gets its Success, and the association goes on and releases normally."""
    assoc, stall = _associate_stalled(PauseSafeAE(ae_title="SAFE"), scp_port, STEP_S)
    assert isinstance(assoc, PauseSafeAssociation)
    with caplog.at_level(logging.WARNING, logger="pynetdicom"):
        first = assoc.send_c_store(_ct())
        assert first.Status == 0x0000
        assert stall.decided.is_set()  # the held reactor made its move first
        assert stall.reactor_took == []
        assert assoc.send_c_store(_ct()).Status == 0x0000  # the reactor runs on
        assoc.release()
        assoc.join(STEP_S)
    assert not assoc.is_alive()
    assert assoc.is_released
    assert UNEXPECTED not in caplog.text


def test_the_pause_safe_requestor_still_hears_the_peers_abort(
    scp: ThreadedAssociationServer, scp_port: int
) -> None:
    """The reactor keeps its other duties: the peer's A-ABORT ends the association."""
    ae = PauseSafeAE(ae_title="SAFE")
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    aborted = threading.Event()
    assoc = ae.associate(
        "127.0.0.1",
        scp_port,
        ae_title="STORESCP",
        evt_handlers=[(evt.EVT_ABORTED, lambda e: aborted.set())],
    )
    assert assoc.is_established
    assert isinstance(assoc, PauseSafeAssociation)
    assert assoc.send_c_store(_ct()).Status == 0x0000
    (server_side,) = scp.active_associations
    server_side.abort()
    assoc.join(STEP_S)  # the reactor saw the A-ABORT and ended
    assert not assoc.is_alive()
    assert aborted.is_set()
    assert assoc.is_aborted
    assert not assoc.is_established


def test_pause_safe_ae_refuses_another_pynetdicom_series(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynetdicom

    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    with pytest.raises(RuntimeError, match=r"pynetdicom 3\.0\.4 internals, found 3\.1\.0"):
        PauseSafeAE()
