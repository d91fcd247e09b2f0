"""issue 14, hardening: one address's idle connections (plain port) or silent TLS
handshakes (TLS port) exhaust only that address's cap (``dicom.limits``); DCMTK from
the capped address is refused, another address is still served, and the refusal is in
the node's audit trail.

The node (``cds serve``) listens on 127.0.0.1; the second address is 127.0.0.2 (all
of 127.0.0.0/8 is loopback on Linux). DCMTK cannot choose its source address, so it
always calls from 127.0.0.1; pynetdicom and the idle sockets bind 127.0.0.2.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from cds.audit import AuditEvent, AuditRecord
from cds.audit.trail import read_records
from cds.requestor import PauseSafeAE
from integration_tests.conftest import CdsNode, wait_for
from integration_tests.support import require_dcmtk, run_tool, spooled_files, write_ct_series
from integration_tests.test_dicom_tls import echo, pki, tls_args, tls_node

pytestmark = pytest.mark.integration

OTHER = "127.0.0.2"
__all__ = ["pki"]  # the module's PKI fixture, shared with test_dicom_tls


@contextmanager
def idle_peers(port: int, source: str, count: int) -> Iterator[None]:
    """``count`` TCP connections from ``source`` that never send a byte."""
    with ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(
                socket.create_connection(
                    ("127.0.0.1", port), timeout=10, source_address=(source, 0)
                )
            )
        # accepted in the order they connected: before any later connection
        yield


def audit_records(node: CdsNode, event: AuditEvent) -> list[AuditRecord]:
    return [r for r in read_records(node.home / "audit") if r.event is event]


def pynetdicom_echo(node: CdsNode, source: str) -> bool:
    ae = PauseSafeAE(ae_title="OTHER")
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", node.dicom_port, ae_title=node.ae_title, bind_address=(source, 0)
    )
    if not assoc.is_established:
        return False
    ok = assoc.send_c_echo().Status == 0x0000
    assoc.release()
    return bool(ok)


def test_i14_idle_sockets_cap_their_address_dcmtk_refused_local_limit(
    node_factory: Callable[..., CdsNode],
) -> None:
    """issue 14: 2 idle sockets from 127.0.0.1 hold its cap of 2: DCMTK echoscu gets
    A-ASSOCIATE-RJ rejected-transient / service-provider / local limit exceeded;
    127.0.0.2 still associates; the refusal is audited once; the cap frees when the
    idle sockets go."""
    node = node_factory({"dicom": {"limits": {"max_associations_per_address": 2}}})
    with idle_peers(node.dicom_port, "127.0.0.1", 2):
        refused = echo(node.dicom_port, "-aet", "MODALITY")
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stdout, refused.stdout
        assert "Rejected Transient" in refused.stdout
        assert "Local Limit Exceeded" in refused.stdout
        assert "Received Echo Response" not in refused.stdout
        assert pynetdicom_echo(node, OTHER)
        again = echo(node.dicom_port, "-aet", "MODALITY")
        assert "Local Limit Exceeded" in again.stdout
    (record,) = wait_for(
        lambda: audit_records(node, AuditEvent.ASSOCIATION_REJECTED), 5, what="the audit record"
    )
    assert (record.who, record.where) == ("AE:MODALITY", "127.0.0.1")
    assert (record.detail["result"], record.detail["source"], record.detail["diagnostic"]) == (
        2,
        3,
        2,
    )
    assert record.detail["limit"] == "dicom.limits.max_associations_per_address"
    assert record.detail["cap"] == 2
    # the idle sockets are gone: the address gets associations again
    wait_for(lambda: echo(node.dicom_port).returncode == 0, 10, 0.2, "echoscu after the idle go")
    assert len(audit_records(node, AuditEvent.ASSOCIATION_REJECTED)) == 1  # not one per try
    assert node.running
    assert not node.log_problems()


def test_i14_silent_tls_handshakes_cap_their_address_only(
    node_factory: Callable[..., CdsNode], pki: Path
) -> None:
    """issue 14: 2 silent peers on the TLS port from 127.0.0.2 hold its handshake cap:
    its next connection is closed at once (before the 5 s handshake timeout), audited;
    DCMTK echoscu over TLS from 127.0.0.1 still succeeds."""
    node, port = tls_node(node_factory, pki, limits={"max_handshakes_per_address": 2})
    with idle_peers(port, OTHER, 2):
        started = time.monotonic()
        with socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=(OTHER, 0)
        ) as third:
            try:
                closed = third.recv(1) == b""
            except ConnectionResetError:
                closed = True
        assert closed
        assert time.monotonic() - started < 2.0  # at once, not at the handshake timeout
        r = echo(port, "-aet", "PACS", *tls_args(pki))
        assert r.returncode == 0, r.stdout
        assert "Received Echo Response (Success)" in r.stdout
    alerts = [
        r
        for r in audit_records(node, AuditEvent.SECURITY_ALERT)
        if r.detail.get("alert") == "address_limit"
    ]
    assert len(alerts) == 1
    assert alerts[0].where == OTHER
    assert alerts[0].detail["limit"] == "dicom.limits.max_handshakes_per_address"
    assert alerts[0].detail["tls"] is True
    assert not node.log_problems()


def test_i14_storescu_from_a_capped_address_is_refused_not_lost(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """issue 14: a refused storescu stores nothing and says so (non-zero exit); it
    succeeds once the address's idle connection is gone."""
    node = node_factory({"dicom": {"limits": {"max_associations_per_address": 1}}})
    ((path, sop_uid),) = write_ct_series(tmp_path / "ct", 1)
    storescu = require_dcmtk("storescu")
    args = [storescu, "-v", "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port), str(path)]
    with idle_peers(node.dicom_port, "127.0.0.1", 1):
        r = run_tool(args)
        assert r.returncode != 0
        assert "Local Limit Exceeded" in r.stdout, r.stdout
        assert not spooled_files(node.home, sop_uid)
    wait_for(lambda: run_tool(args).returncode == 0, 10, 0.2, "storescu after the idle one goes")
    assert len(spooled_files(node.home, sop_uid)) == 1
