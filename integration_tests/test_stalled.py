"""Issue 9: a peer that sends half an A-ASSOCIATE-RQ and stalls must not hold an
association slot: the node drops it after ``dicom.network_timeout_s``."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from integration_tests.conftest import CdsNode, wait_for
from integration_tests.support import require_dcmtk, run_tool

pytestmark = pytest.mark.integration

NETWORK_TIMEOUT_S = 2
ONE_SLOT: dict[str, Any] = {
    "dicom": {"network_timeout_s": NETWORK_TIMEOUT_S, "max_associations": 1}
}


def stall(node: CdsNode) -> socket.socket:
    """Connect and send an A-ASSOCIATE-RQ header claiming 16 KiB, then 10 bytes of it."""
    s = socket.create_connection(("127.0.0.1", node.dicom_port), timeout=5)
    s.sendall(b"\x01\x00" + struct.pack(">I", 16384) + b"\x00\x01\x00\x00CDS   ")
    return s


def echo_ok(node: CdsNode) -> bool:
    r = run_tool(
        [require_dcmtk("echoscu"), "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port)],
        timeout=30,
    )
    return r.returncode == 0


def closed_by_peer(s: socket.socket, timeout: float) -> float:
    """Seconds until the node closes ``s`` (EOF or reset); fails after ``timeout``."""
    start = time.monotonic()
    s.settimeout(timeout)
    try:
        data = s.recv(1)
        assert data == b"", f"node sent {data!r} to a half-sent A-ASSOCIATE-RQ"
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"stalled socket still open after {timeout}s")
    return time.monotonic() - start


def test_i2_r9_stalled_socket_is_closed_by_the_node(
    node_factory: Callable[..., CdsNode],
) -> None:
    """issue 2, req. 9: the node closes a socket stalled mid-PDU after network_timeout_s."""
    node = node_factory(ONE_SLOT)
    s = stall(node)
    try:
        waited = closed_by_peer(s, NETWORK_TIMEOUT_S + 8)
    finally:
        s.close()
    assert NETWORK_TIMEOUT_S - 0.5 <= waited <= NETWORK_TIMEOUT_S + 3, waited
    assert node.running
    assert node.health().status_code == 200


def test_i2_r9_stalled_peer_frees_the_slot_after_network_timeout(
    node_factory: Callable[..., CdsNode],
) -> None:
    """issue 2, req. 9: with max_associations 1, a normal echoscu succeeds again soon after
    network_timeout_s, while the stalled peer is still connected on its side."""
    node = node_factory(ONE_SLOT)
    s = stall(node)
    try:
        time.sleep(0.3)
        assert not echo_ok(node), "precondition: the stalled peer holds the only slot"
        wait_for(
            lambda: echo_ok(node),
            NETWORK_TIMEOUT_S + 4,
            0.25,
            "echoscu to succeed after the network timeout",
        )
    finally:
        s.close()
