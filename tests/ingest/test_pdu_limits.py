"""issue 7, access: a PDU larger than the negotiated maximum is refused with an A-ABORT.

The node announces ``dicom.max_pdu_bytes`` as its Maximum Length; a peer whose
P-DATA-TF header announces more is aborted at once, before its body is read
(nothing is allocated for it), the refusal is a SECURITY_ALERT in the audit
trail, and the node goes on serving everyone else. A-ASSOCIATE-RQ and other
control PDUs are bounded too (1 MiB). Both receive loops (cds' fast path and
pynetdicom's stock one, ``dicom.fast_receive: false``). Real sockets on 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from cds.audit import AuditEvent, AuditOutcome
from cds.ingest.fastpath import MAX_CONTROL_PDU
from cds.orchestrator import Node
from cds.requestor import PauseSafeAE

from ..conftest import make_settings
from .test_dicom_tls import (
    Pki,
    SpyAudit,
    client_context,
    make_pki,
    start_node,
    tls_associate,
    tls_settings,
)
from .test_scp import CT, ct, stored_files

MAX_PDU = 16_384


@pytest.fixture(params=[True, False], ids=["fast_receive", "stock_pynetdicom"])
def limited(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Node, SpyAudit]]:
    dicom = {"max_pdu_bytes": MAX_PDU, "fast_receive": request.param}
    node, audit = start_node(make_settings(tmp_path / "home", dicom=dicom))
    try:
        yield node, audit
    finally:
        node.stop()


def associate(node: Node) -> Association:
    ae = PauseSafeAE(ae_title="TESTSCU")
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate(*node.listener.address, ae_title="CDS")
    assert assoc.is_established
    return assoc


def wait_aborted(assoc: Association, timeout: float = 3.0) -> float:
    started = time.monotonic()
    while not assoc.is_aborted and time.monotonic() - started < timeout:
        time.sleep(0.005)
    assert assoc.is_aborted, "the node did not abort the association"
    return time.monotonic() - started


def p_data_header(length: int) -> bytes:
    return struct.pack(">BBL", 0x04, 0, length)


@pytest.mark.parametrize("announced", [MAX_PDU + 1, 0xFFFFFFFF])
def test_a_p_data_over_the_negotiated_maximum_is_aborted(
    limited: tuple[Node, SpyAudit], announced: int
) -> None:
    node, audit = limited
    assoc = associate(node)
    assert assoc.acceptor.maximum_length == MAX_PDU  # what the node announced
    sock = assoc.dul.socket
    assert sock is not None
    sock.send(p_data_header(announced) + b"\x00" * 64)  # the header and a little body
    elapsed = wait_aborted(assoc)
    assert elapsed < 1.0
    (alert,) = audit.wait_for(AuditEvent.SECURITY_ALERT)
    assert alert.outcome is AuditOutcome.SERIOUS_FAILURE
    assert alert.who == "AE:TESTSCU"
    assert alert.where == "127.0.0.1"
    assert alert.detail["alert"] == "pdu_too_large"
    assert (alert.detail["announced_bytes"], alert.detail["limit_bytes"]) == (announced, MAX_PDU)
    # the node goes on serving others, and forgot the aborted association
    other = associate(node)
    assert other.send_c_store(ct()).Status == 0x0000
    other.release()
    assert len(stored_files(node)) == 1
    deadline = time.monotonic() + 3
    while node.listener.active_associations() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.listener.active_associations() == 0


def test_pdus_up_to_the_maximum_are_received(limited: tuple[Node, SpyAudit]) -> None:
    node, audit = limited
    assoc = associate(node)
    ds = ct()
    ds.PixelData = b"\x01\x00" * 40_000  # 80 KB: several PDUs of exactly the maximum
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert len(stored_files(node)) == 1
    assert not audit.of(AuditEvent.SECURITY_ALERT)


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = b""
    while len(header) < 6:
        chunk = sock.recv(6 - len(header))
        if not chunk:
            return -1, b""
        header += chunk
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, sock.recv(length)


def test_an_oversized_associate_request_is_aborted(limited: tuple[Node, SpyAudit]) -> None:
    node, audit = limited
    with socket.create_connection(node.listener.address, timeout=5) as raw:
        started = time.monotonic()
        raw.sendall(struct.pack(">BBL", 0x01, 0, 100 * 2**20) + b"\x00\x01\x00\x00")
        pdu_type, body = _read_pdu(raw)
        assert pdu_type == 0x07  # A-ABORT
        assert body[2:4] == b"\x02\x06"  # service provider, invalid PDU parameter value
        assert raw.recv(1) == b""  # and the connection is closed
        assert time.monotonic() - started < 1.0
    (alert,) = audit.wait_for(AuditEvent.SECURITY_ALERT)
    assert alert.who == "peer"
    assert (alert.detail["announced_bytes"], alert.detail["limit_bytes"]) == (
        100 * 2**20,
        MAX_CONTROL_PDU,
    )


def test_the_bound_holds_over_tls(tmp_path: Path) -> None:
    pki: Pki = make_pki(tmp_path / "pki")
    node, audit = start_node(tls_settings(tmp_path / "home", pki, max_pdu_bytes=MAX_PDU))
    try:
        ctx = client_context(pki, pki.client_cert, pki.client_key)
        assoc = tls_associate(node, ctx)
        assert assoc.is_established
        ds = ct()
        ds.PixelData = b"\x01\x00" * 40_000
        assert assoc.send_c_store(ds).Status == 0x0000  # the fast path reads TLS as well
        sock = assoc.dul.socket
        assert sock is not None
        sock.send(p_data_header(MAX_PDU + 1))
        assert wait_aborted(assoc) < 1.0
        (alert,) = audit.wait_for(AuditEvent.SECURITY_ALERT)
        assert alert.detail["tls"] is True
    finally:
        node.stop()
