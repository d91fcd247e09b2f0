"""issue 7, access: per-source rules (dicom.sources), real sockets on 127.0.0.1/127.0.0.2.

An unknown calling AE title, a known one from an address not allowed for it,
or (under TLS) with a client certificate of another Common Name is rejected
with A-ASSOCIATE-RJ rejected-permanent / DICOM UL service-user / calling AE
title not recognised (PS3.8 9.3.4), and each decision is in the audit trail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from cds.audit import AuditEvent, AuditOutcome
from cds.config import SourceRule
from cds.errors import ConfigError
from cds.ingest.sources import Peer, SourcePolicy
from cds.orchestrator import Node
from cds.requestor import PauseSafeAE

from ..conftest import load_settings, make_settings
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

RULES = [
    {"ae_title": "PACS", "addresses": ["127.0.0.1/32"]},
    {"ae_title": "MODALITY", "addresses": ["127.0.0.2", "10.0.0.0/8"]},
    {"ae_title": "ANYWHERE"},
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def associate(node: Node, calling: str, source: str = "127.0.0.1") -> Association:
    ae = PauseSafeAE(ae_title=calling)
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    host, port = node.listener.address
    return ae.associate(host, port, ae_title="CDS", bind_address=(source, 0))


def assert_unknown_caller(assoc: Association) -> None:
    """The PS3.8 9.3.4 triple, as the requestor received it."""
    assert assoc.is_rejected
    assert not assoc.is_established
    rj = assoc.acceptor.primitive
    assert rj is not None
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)
    assert rj.result_str == "Rejected Permanent"
    assert rj.source_str == "Service User"
    assert rj.reason_str == "Calling AE title not recognised"


@pytest.fixture
def ruled(tmp_path: Path) -> Any:
    node, audit = start_node(make_settings(tmp_path / "home", dicom={"sources": RULES}))
    try:
        yield node, audit
    finally:
        node.stop()


def rejection(audit: SpyAudit) -> Any:
    (rec,) = audit.wait_for(AuditEvent.ASSOCIATION_REJECTED)
    assert rec.outcome is AuditOutcome.MINOR_FAILURE
    assert rec.detail["result"] == 1
    assert rec.detail["source"] == 1
    assert rec.detail["diagnostic"] == 3
    assert rec.detail["reason"] == "rejected-permanent: calling AE title not recognised"
    return rec


def test_an_unknown_calling_ae_title_is_rejected(ruled: Any) -> None:
    node, audit = ruled
    assert_unknown_caller(associate(node, "STRANGER"))
    rec = rejection(audit)
    assert rec.who == "AE:STRANGER"
    assert rec.where == "127.0.0.1"
    assert rec.detail["source_rule"] == "calling_ae_not_listed"
    assert rec.detail["called_ae"] == "CDS"
    assert rec.detail["tls"] is False
    assert not audit.of(AuditEvent.ASSOCIATION_ACCEPTED)


def test_a_known_ae_title_from_a_wrong_address_is_rejected(ruled: Any) -> None:
    node, audit = ruled
    assert_unknown_caller(associate(node, "PACS", source="127.0.0.2"))
    rec = rejection(audit)
    assert (rec.who, rec.where) == ("AE:PACS", "127.0.0.2")
    assert rec.detail["source_rule"] == "address_not_allowed"


def test_allowed_sources_are_accepted_and_audited(ruled: Any) -> None:
    node, audit = ruled
    for calling, source in (
        ("PACS", "127.0.0.1"),
        ("MODALITY", "127.0.0.2"),
        ("ANYWHERE", "127.0.0.2"),
    ):
        assoc = associate(node, calling, source)
        assert assoc.is_established, (calling, source)
        assert assoc.send_c_store(ct()).Status == 0x0000
        assoc.release()
    accepted = audit.wait_for(AuditEvent.ASSOCIATION_ACCEPTED, 3)
    assert [(r.who, r.where) for r in accepted] == [
        ("AE:PACS", "127.0.0.1"),
        ("AE:MODALITY", "127.0.0.2"),
        ("AE:ANYWHERE", "127.0.0.2"),
    ]
    assert all(r.detail["tls"] is False for r in accepted)
    received = audit.wait_for(AuditEvent.INSTANCES_RECEIVED, 3)
    assert len(received) == 3
    assert all(r.detail["instances"] == 1 and r.study_key for r in received)
    assert len(stored_files(node)) == 3
    assert not audit.of(AuditEvent.ASSOCIATION_REJECTED)


def test_instances_received_is_recorded_once_per_study(ruled: Any) -> None:
    node, audit = ruled
    assoc = associate(node, "PACS")
    a, b = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    first = ct(study=a)
    for ds in (first, ct(study=a), ct(study=b), first):  # the last one: a duplicate
        assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    records = audit.wait_for(AuditEvent.INSTANCES_RECEIVED, 2)
    counts = sorted((r.detail["instances"], r.detail["duplicates"]) for r in records)
    assert counts == [(1, 0), (2, 1)]
    assert len({r.study_key for r in records}) == 2
    for r in records:
        assert a not in repr(r)
        assert b not in repr(r)


def test_allowed_calling_ae_titles_still_apply(tmp_path: Path) -> None:
    node, audit = start_node(
        make_settings(tmp_path / "home", dicom={"allowed_calling_ae_titles": ["PACS"]})
    )
    try:
        assert_unknown_caller(associate(node, "OTHER"))
        rec = rejection(audit)
        assert "source_rule" not in rec.detail
        ok = associate(node, "PACS")
        assert ok.is_established
        ok.release()
    finally:
        node.stop()


def test_under_tls_the_certificate_cn_must_match(tmp_path: Path, pki: Pki) -> None:
    rules = [{"ae_title": "PACS", "cert_subject_cn": "PACS-1"}]
    node, audit = start_node(tls_settings(tmp_path / "home", pki, sources=rules))
    try:
        # a valid certificate of our CA, but CN=PACS-2
        other = tls_associate(node, client_context(pki, pki.other_cert, pki.other_key), "PACS")
        assert_unknown_caller(other)
        rec = rejection(audit)
        assert rec.detail["source_rule"] == "certificate_cn_mismatch"
        assert rec.detail["cert_cn"] == "PACS-2"
        assert rec.detail["tls"] is True
        # the same AE title on the plain port: a rule that names a certificate needs TLS
        plain = associate(node, "PACS")
        assert_unknown_caller(plain)
        rejected = audit.wait_for(AuditEvent.ASSOCIATION_REJECTED, 2)
        assert rejected[1].detail["source_rule"] == "tls_required"
        # the right certificate
        good = tls_associate(node, client_context(pki, pki.client_cert, pki.client_key), "PACS")
        assert good.is_established
        assert good.send_c_echo().Status == 0x0000
        good.release()
        (accepted,) = audit.wait_for(AuditEvent.ASSOCIATION_ACCEPTED)
        assert accepted.detail["cert_cn"] == "PACS-1"
    finally:
        node.stop()


# --- the rules themselves --------------------------------------------------------------
def test_policy_decisions() -> None:
    policy = SourcePolicy(
        [
            SourceRule(ae_title="PACS", addresses=["10.1.0.0/16", "2001:db8::/32"]),
            SourceRule(ae_title="PACS", addresses=[], cert_subject_cn="pacs.example"),
        ]
    )
    assert policy.check("PACS", Peer("10.1.2.3", 1)) is None
    assert policy.check("PACS  ", Peer("10.1.2.3", 1)) is None  # AE titles are space padded
    assert policy.check("PACS", Peer("::ffff:10.1.2.3", 1)) is None  # dual-stack socket
    assert policy.check("PACS", Peer("2001:db8::5", 1)) is None
    assert policy.check("pacs", Peer("10.1.2.3", 1)) == "calling_ae_not_listed"
    assert policy.check("PACS", Peer("10.2.0.1", 1)) == "tls_required"
    assert policy.check("PACS", Peer("10.2.0.1", 1, tls=True)) == "certificate_missing"
    assert policy.check("PACS", Peer("10.2.0.1", 1, tls=True, cert_cn="x")) == (
        "certificate_cn_mismatch"
    )
    assert policy.check("PACS", Peer("10.2.0.1", 1, tls=True, cert_cn="pacs.example")) is None
    assert SourcePolicy([]).check("ANY", Peer("10.2.0.1", 1)) is None


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("10.0.0.300", "is not an IP address or CIDR network"),
        ("10.1.2.3/24", "host bits set"),
        ("pacs.example.org", "is not an IP address or CIDR network"),
    ],
)
def test_bad_addresses_are_refused_at_load_with_their_path(
    tmp_path: Path, address: str, message: str
) -> None:
    cfg = tmp_path / "cds.yaml"
    cfg.write_text(f"dicom:\n  sources:\n    - ae_title: PACS\n      addresses: ['{address}']\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    (error,) = info.value.errors
    assert error.startswith("dicom.sources.0.addresses: ")
    assert message in error
