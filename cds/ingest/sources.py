"""Who may associate: per-source rules (``dicom.sources``) checked at A-ASSOCIATE-RQ.

A rule binds a calling AE title to the addresses it may call from and, under
TLS, to the Common Name of its client certificate. When ``dicom.sources`` is
not empty, an association is accepted only if some rule for its calling AE
title matches: the peer's address is in the rule's ``addresses`` (empty =
any), and, if the rule names ``cert_subject_cn``, the association came over
TLS with a verified client certificate of that CN (a rule that names a
certificate never matches a plain-TCP association: anyone can type an AE
title). Several rules may name the same AE title (for example one for the
plain port from one network, one for TLS from anywhere).

Anything else is rejected as PS3.8 9.3.4 says for an unknown caller:
A-ASSOCIATE-RJ result 1 (rejected-permanent), source 1 (DICOM UL
service-user), reason 3 (calling AE title not recognised).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import cast

from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE

from cds.config import SourceRule

_LOG = logging.getLogger("pynetdicom.acse")

#: A-ASSOCIATE-RJ (result, source, reason) for a caller we do not know
REJECT_UNKNOWN_CALLER = (0x01, 0x01, 0x03)
#: ... for a caller over a local limit: rejected-transient, service-provider (presentation
#: related), local limit exceeded (PS3.8 9.3.4)
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)

#: (result, source, reason) -> words, for logs and the audit trail (PS3.8 9.3.4)
_REJECT_WORDS = {
    (0x01, 0x01, 0x01): "no reason given",
    (0x01, 0x01, 0x02): "application context name not supported",
    (0x01, 0x01, 0x03): "calling AE title not recognised",
    (0x01, 0x01, 0x07): "called AE title not recognised",
    (0x02, 0x02, 0x01): "user identity not verified",
    (0x02, 0x03, 0x02): "local limit exceeded (maximum associations)",
}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def reject_words(rsd: tuple[int, int, int]) -> str:
    result = "rejected-permanent" if rsd[0] == 0x01 else "rejected-transient"
    return f"{result}: {_REJECT_WORDS.get(rsd, f'source {rsd[1]} reason {rsd[2]}')}"


@dataclass(frozen=True)
class Peer:
    """What we know of the other end before its A-ASSOCIATE-RQ is read."""

    address: str
    port: int
    tls: bool = False
    cert_cn: str | None = None
    tls_version: str | None = None


def parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's IP (an IPv4-mapped IPv6 address as IPv4), None if not an IP."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:10.0.0.1 on a dual-stack socket is 10.0.0.1
    return ip


@dataclass(frozen=True)
class _Rule:
    ae_title: str
    networks: tuple[IPNetwork, ...]
    cert_subject_cn: str | None


class SourcePolicy:
    """The ``dicom.sources`` rules, compiled; ``check`` says why a peer is refused."""

    def __init__(self, rules: list[SourceRule]) -> None:
        self._rules: dict[str, list[_Rule]] = {}
        for r in rules:
            nets = tuple(ipaddress.ip_network(a, strict=True) for a in r.addresses)
            self._rules.setdefault(r.ae_title, []).append(
                _Rule(r.ae_title, nets, r.cert_subject_cn)
            )

    @property
    def active(self) -> bool:
        return bool(self._rules)

    def check(self, calling_ae: str, peer: Peer) -> str | None:
        """None if allowed, else a stable reason code (no patient data, ever)."""
        if not self._rules:
            return None
        rules = self._rules.get(calling_ae.strip())
        if not rules:
            return "calling_ae_not_listed"
        ip = parse_ip(peer.address)
        by_address = [r for r in rules if not r.networks or (ip is not None and _in(ip, r))]
        if not by_address:
            return "address_not_allowed"
        if any(_cert_matches(r, peer) for r in by_address):
            return None
        if not peer.tls:
            return "tls_required"
        return "certificate_cn_mismatch" if peer.cert_cn else "certificate_missing"


def _cert_matches(rule: _Rule, peer: Peer) -> bool:
    if rule.cert_subject_cn is None:
        return True
    return peer.tls and peer.cert_cn is not None and peer.cert_cn == rule.cert_subject_cn


def _in(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, rule: _Rule) -> bool:
    return any(ip.version == n.version and ip in n for n in rule.networks)


class GatedACSE(ACSE):
    """pynetdicom's ACSE, checking the per-address cap and the source rules before
    anything else, and remembering the (result, source, reason) of any rejection it sends.

    ``over_cap``: the connection came from an address already holding
    ``dicom.limits.max_associations_per_address`` (cds.ingest.admission); its
    request is rejected as pynetdicom rejects one over ``max_associations``.
    """

    def __init__(
        self, assoc: Association, policy: SourcePolicy, peer: Peer, *, over_cap: bool = False
    ) -> None:
        super().__init__(assoc)
        self.policy = policy
        self.peer = peer
        self.over_cap = over_cap
        self.rejection: tuple[int, int, int] | None = None
        #: why the source rules refused the peer (None: they did not)
        self.source_reason: str | None = None

    def _negotiate_as_acceptor(self) -> None:
        rq = cast(A_ASSOCIATE, self.requestor.primitive)
        if self.over_cap:
            self._reject(rq, REJECT_LOCAL_LIMIT)
            return
        reason = self.policy.check(str(rq.calling_ae_title), self.peer)
        if reason is None:
            super()._negotiate_as_acceptor()
            return
        self.source_reason = reason
        self._reject(rq, REJECT_UNKNOWN_CALLER)

    def _reject(self, rq: A_ASSOCIATE, rsd: tuple[int, int, int]) -> None:
        # as ACSE._negotiate_as_acceptor does when it rejects
        self.requestor.ae_title = rq.calling_ae_title
        _LOG.info("Rejecting Association")
        self.send_reject(*rsd)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()

    def send_reject(self, result: int, source: int, diagnostic: int) -> None:
        self.rejection = (result, source, diagnostic)
        super().send_reject(result, source, diagnostic)
