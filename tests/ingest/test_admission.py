"""issue 14, hardening: per-address caps on the DICOM ports (cds.ingest.admission).

The node runs in this process on 127.0.0.1; peers connect from 127.0.0.1 and from
127.0.0.2 (all of 127.0.0.0/8 is loopback on Linux), so one address can be capped
while the other is not. Idle peers are plain TCP sockets that never send their
A-ASSOCIATE-RQ (or ClientHello); real associations are pynetdicom's.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import evt

from cds.audit import AuditEvent, AuditOutcome
from cds.config import load_settings
from cds.errors import ConfigError
from cds.ingest import admission
from cds.ingest.admission import AddressCap, Refusals, Verdict
from cds.orchestrator import Node

from ..conftest import make_settings
from ..pki import Pki, make_pki
from .test_dicom_tls import SpyAudit, client_context, start_node, tls_associate, tls_settings
from .test_fastpath import wait_for
from .test_scp import connect

OTHER = "127.0.0.2"  # a second peer address


# --- the count, alone ------------------------------------------------------------------
def test_each_address_has_its_own_count_and_gets_its_places_back() -> None:
    cap = AddressCap(2, waiting=1)
    a1, a2 = cap.admit("10.0.0.1"), cap.admit("10.0.0.1")
    assert (a1.verdict, a2.verdict) == (Verdict.ADMIT, Verdict.ADMIT)
    assert cap.admit("10.0.0.1").verdict is Verdict.REFUSE  # told so, holding no place
    assert cap.admit("::ffff:10.0.0.1").verdict is Verdict.DROP  # the same peer, dual stack
    assert cap.admit("10.0.0.2").verdict is Verdict.ADMIT  # another address: its own count
    assert (cap.held("10.0.0.1"), cap.waiting("10.0.0.1")) == (2, 1)
    a1.release()
    a1.release()  # twice (thread end and clean-up): given back once
    assert cap.held("10.0.0.1") == 1
    assert cap.admit("10.0.0.1").verdict is Verdict.ADMIT


def test_exempt_addresses_are_not_counted() -> None:
    cap = AddressCap(1, exempt=["10.1.0.0/16", "fd00::/8"])
    assert all(cap.admit("10.1.2.3").verdict is Verdict.ADMIT for _ in range(5))
    assert all(cap.admit("fd00::1").verdict is Verdict.ADMIT for _ in range(5))
    assert cap.held("10.1.2.3") == 0
    assert cap.admit("10.2.0.1").verdict is Verdict.ADMIT
    assert cap.admit("10.2.0.1").verdict is Verdict.DROP  # not exempt; no waiting allowed


def test_refusals_are_reported_once_per_window_with_their_count() -> None:
    now = [1000.0]
    cap = AddressCap(1, report_every_s=60, clock=lambda: now[0])
    assert cap.refused("10.0.0.1") == Refusals("10.0.0.1", 1, 1)  # the first: at once
    assert [cap.refused("10.0.0.1") for _ in range(3)] == [None, None, None]
    assert cap.refused("10.0.0.2") == Refusals("10.0.0.2", 1, 1)  # each address its own
    now[0] += 59.9
    assert cap.refused("10.0.0.1") is None
    now[0] += 0.1
    assert cap.refused("10.0.0.1") == Refusals("10.0.0.1", 1, 5)  # 4 unreported + this one


def test_the_report_times_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood from ever new addresses does not grow memory without end: the oldest
    address reported is forgotten (and reported again, once, if refused again)."""
    monkeypatch.setattr(admission, "_TRACKED_MAX", 2)
    cap = AddressCap(1, report_every_s=60, clock=lambda: 0.0)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert cap.refused(address) is not None
    assert cap.refused("10.0.0.3") is None  # still known: throttled
    assert cap.refused("10.0.0.1") is not None  # forgotten: reported again


# --- the node, over real sockets --------------------------------------------------------
@contextmanager
def idle_peers(port: int, source: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections from ``source`` that never say anything."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                socket.create_connection(
                    ("127.0.0.1", port), timeout=10, source_address=(source, 0)
                )
            )
            for _ in range(count)
        ]


def closed_at_once(port: int, source: str, within: float = 2.0) -> bool:
    """Connect from ``source``: True if the node closes the connection within ``within`` s."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=within, source_address=(source, 0)
    ) as s:
        try:
            return s.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


@pytest.fixture(params=[True, False], ids=["fast_receive", "stock_receive"])
def capped(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Node, SpyAudit]]:
    settings = make_settings(
        tmp_path / "home",
        dicom={"limits": {"max_associations_per_address": 2}, "fast_receive": request.param},
    )
    node, audit = start_node(settings)
    try:
        yield node, audit
    finally:
        node.stop()


def test_idle_connections_exhaust_only_their_own_address_cap(
    capped: tuple[Node, SpyAudit],
) -> None:
    """Two idle sockets from 127.0.0.2 hold its cap: its next association gets
    A-ASSOCIATE-RJ rejected-transient / service-provider / local limit exceeded, audited
    once; 127.0.0.1 still gets an association; closing the idle sockets frees the cap."""
    node, audit = capped
    cap = node.listener.associations_cap
    port = node.listener.address[1]
    received: list[Any] = []
    with idle_peers(port, OTHER, 2):
        assert wait_for(lambda: cap.held(OTHER) == 2)
        refused = connect(
            node, bind=OTHER, evt_handlers=[(evt.EVT_PDU_RECV, lambda e: received.append(e.pdu))]
        )
        assert refused.is_rejected
        (rj,) = received
        assert (rj.result, rj.source, rj.reason_diagnostic) == (0x02, 0x03, 0x02)

        other = connect(node)  # from 127.0.0.1
        assert other.is_established
        assert other.send_c_echo().Status == 0x0000
        other.release()

        (record,) = audit.wait_for(AuditEvent.ASSOCIATION_REJECTED)
        assert (record.who, record.where) == ("AE:TESTSCU", OTHER)
        assert record.outcome is AuditOutcome.MINOR_FAILURE
        assert (record.detail["result"], record.detail["source"]) == (2, 3)
        assert record.detail["diagnostic"] == 2
        assert record.detail["limit"] == "dicom.limits.max_associations_per_address"
        assert (record.detail["cap"], record.detail["refused"]) == (2, 1)

        # refused again within the minute: answered the same, not audited again
        assert connect(node, bind=OTHER).is_rejected
        assert wait_for(lambda: cap.waiting(OTHER) == 0)  # its thread is done (handlers ran)
        assert len(audit.of(AuditEvent.ASSOCIATION_REJECTED)) == 1
    assert wait_for(lambda: cap.held(OTHER) == 0)
    again = connect(node, bind=OTHER)
    assert again.is_established
    again.release()


def test_refused_connections_hold_no_node_slot_and_past_them_are_closed(
    tmp_path: Path,
) -> None:
    """While they wait for their A-ASSOCIATE-RJ, connections over an address's cap do not
    count against dicom.max_associations; past as many again, they are closed at once."""
    node, audit = start_node(
        make_settings(
            tmp_path / "home",
            dicom={"max_associations": 4, "limits": {"max_associations_per_address": 2}},
        )
    )
    try:
        cap = node.listener.associations_cap
        port = node.listener.address[1]
        with idle_peers(port, OTHER, 4):  # two hold the cap, two wait to be refused
            assert wait_for(lambda: (cap.held(OTHER), cap.waiting(OTHER)) == (2, 2))
            # 2 idle + 2 here = 4 slots: the two waiting to be refused must not count
            first, second = connect(node), connect(node)
            assert first.is_established
            assert second.is_established
            for a in (first, second):
                a.release()
            assert closed_at_once(port, OTHER)
            (alert,) = audit.wait_for(AuditEvent.SECURITY_ALERT)
            assert alert.where == OTHER
            assert alert.detail["alert"] == "address_limit"
            assert alert.detail["limit"] == "dicom.limits.max_associations_per_address"
            assert alert.detail["tls"] is False
    finally:
        node.stop()


def test_an_exempt_address_is_not_capped(tmp_path: Path) -> None:
    node = Node(
        make_settings(
            tmp_path / "home",
            dicom={"limits": {"max_associations_per_address": 1, "exempt_addresses": [OTHER]}},
        )
    )
    node.start()
    try:
        port = node.listener.address[1]
        with idle_peers(port, OTHER, 2), idle_peers(port, "127.0.0.1", 1):
            assert wait_for(lambda: node.listener.associations_cap.held("127.0.0.1") == 1)
            exempt = connect(node, bind=OTHER)
            assert exempt.is_established
            exempt.release()
            assert connect(node).is_rejected  # 127.0.0.1 is not exempt
    finally:
        node.stop()


# --- TLS handshakes in progress ----------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_tls_handshakes_in_progress_are_capped_per_address(tmp_path: Path, pki: Pki) -> None:
    """Two silent peers on the TLS port from 127.0.0.2 hold its handshake cap: its next
    connection is closed at once (not after handshake_timeout_s), audited; 127.0.0.1
    still gets a TLS association; once the silent peers go, 127.0.0.2 gets one too."""
    settings = tls_settings(
        tmp_path / "home",
        pki,
        tls={"handshake_timeout_s": 30},
        limits={"max_handshakes_per_address": 2},
    )
    node, audit = start_node(settings)
    try:
        cap = node.listener.handshakes_cap
        tls = node.listener.tls_address
        assert tls is not None
        ctx = client_context(pki, pki.client_cert, pki.client_key)
        with idle_peers(tls[1], OTHER, 2):
            assert wait_for(lambda: cap.held(OTHER) == 2)
            started = time.monotonic()
            assert closed_at_once(tls[1], OTHER)
            assert time.monotonic() - started < 2.0
            assert not tls_associate(node, ctx, bind=OTHER).is_established
            assoc = tls_associate(node, ctx)  # from 127.0.0.1
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()
            (alert,) = audit.of(AuditEvent.SECURITY_ALERT)  # two refusals, one record
            assert alert.where == OTHER
            assert alert.detail["alert"] == "address_limit"
            assert alert.detail["limit"] == "dicom.limits.max_handshakes_per_address"
            assert (alert.detail["cap"], alert.detail["refused"], alert.detail["tls"]) == (
                2,
                1,
                True,
            )
        assert wait_for(lambda: cap.held(OTHER) == 0)
        assoc = tls_associate(node, ctx, bind=OTHER)
        assert assoc.is_established
        assoc.release()
    finally:
        node.stop()


def test_tls_associations_count_against_the_address_cap_too(tmp_path: Path, pki: Pki) -> None:
    """Plain and TLS connections from one address share its association cap."""
    settings = tls_settings(tmp_path / "home", pki, limits={"max_associations_per_address": 1})
    node, _ = start_node(settings)
    try:
        ctx = client_context(pki, pki.client_cert, pki.client_key)
        with idle_peers(node.listener.address[1], OTHER, 1):
            assert wait_for(lambda: node.listener.associations_cap.held(OTHER) == 1)
            assert tls_associate(node, ctx, bind=OTHER).is_rejected
            assoc = tls_associate(node, ctx)
            assert assoc.is_established
            assoc.release()
    finally:
        node.stop()


# --- settings ---------------------------------------------------------------------------
def test_the_caps_are_settings_checked_by_path(tmp_path: Path) -> None:
    limits = load_settings().dicom.limits
    assert (limits.max_associations_per_address, limits.max_handshakes_per_address) == (8, 8)
    assert limits.exempt_addresses == []  # nothing exempt by default, loopback included
    bad = tmp_path / "cds.yaml"
    bad.write_text(
        "dicom:\n  limits:\n    exempt_addresses: [10.0.0.1/8]\n"
        "    max_handshakes_per_address: 0\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    text = str(info.value)
    assert "dicom.limits.exempt_addresses" in text
    assert "host bits set" in text
    assert "dicom.limits.max_handshakes_per_address" in text
