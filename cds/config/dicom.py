"""The ``dicom`` section: listener, TLS, who may associate, and ingest limits."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from cds.config.types import AETitle, Port, Seconds, _Section


class DicomTlsSettings(_Section):
    """DICOM over TLS (BCP 195) on a port of its own, beside the plain listener."""

    enabled: bool = False
    port: Port = 2762
    cert_file: Path | None = Field(None, description="our certificate (PEM)")
    key_file: Path | None = Field(None, description="its private key (PEM)")
    ca_file: Path | None = Field(
        None, description="CA bundle (PEM) that client certificates must chain to"
    )
    client_certs: Literal["none", "optional", "required"] = Field(
        "optional", description="whether peers must present a certificate"
    )
    handshake_timeout_s: Seconds = Field(
        10.0,
        description="a TLS handshake not done in this time is dropped (it runs off the "
        "accept loop, so a silent peer delays nobody else)",
    )


def _check_networks(values: list[str]) -> list[str]:
    """IP addresses or CIDR networks, each checked (the message names the bad one)."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            hint = " (host bits set: name the network, e.g. 10.1.2.0/24)"
            plain = "has host bits set" in str(exc)
            raise ValueError(
                f"{value!r} is not an IP address or CIDR network{hint if plain else ''}"
            ) from exc
    return values


class SourceRule(_Section):
    """Who may send: a calling AE title bound to addresses (and a certificate under TLS)."""

    ae_title: AETitle
    addresses: list[str] = Field(
        default_factory=list,
        description="IP addresses or networks (CIDR) this AE title may call from; "
        "empty = any address",
    )
    cert_subject_cn: str | None = Field(
        None,
        description="the Common Name the peer's certificate must carry; a rule that "
        "names one only admits associations over TLS",
    )

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, values: list[str]) -> list[str]:
        return _check_networks(values)

    @field_validator("cert_subject_cn")
    @classmethod
    def _check_cn(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave it out to not check certificates)")
        return value


class IngestLimits(_Section):
    """Bounds on what one peer address may hold (cds.ingest.admission) and on what one
    instance may cost us before it is refused and quarantined (cds.ingest.receiver;
    hostile refusals are kept in <spool>/quarantine)."""

    max_associations_per_address: int = Field(
        8,
        ge=1,
        le=1000,
        description="connections one peer address may hold on the DICOM ports at once (both "
        "together, counted from the TCP accept, so idle and half-sent ones count): more get "
        "A-ASSOCIATE-RJ rejected-transient / service-provider / local limit exceeded, and "
        "past as many again waiting for that answer, are closed at once. Keep it below "
        "max_associations, or one address can still take every slot",
    )
    max_handshakes_per_address: int = Field(
        8,
        ge=1,
        le=1000,
        description="TLS handshakes one peer address may have in progress at once on the TLS "
        "port: more connections are closed at once, before any TLS byte",
    )
    exempt_addresses: list[str] = Field(
        default_factory=list,
        description="IP addresses or networks (CIDR) the two per-address caps do not apply "
        "to (e.g. a TLS proxy or NAT gateway in front of many senders); empty = none, "
        "loopback included",
    )

    @field_validator("exempt_addresses")
    @classmethod
    def _check_exempt(cls, values: list[str]) -> list[str]:
        return _check_networks(values)

    max_dataset_mb: int = Field(
        4096,
        ge=1,
        description="largest data set accepted (MiB, as received): 0xA700 past it, not quarantined",
    )
    max_inflated_mb: int = Field(
        1024,
        ge=1,
        description="a deflated data set that inflates past this is refused (decompression "
        "bomb): 0xA700, quarantined; inflation stops at the cap",
    )
    max_sequence_depth: int = Field(
        32,
        ge=1,
        le=128,
        description="deepest nesting of sequences accepted: 0xC212 past it, quarantined "
        "(checked by a scan that does not recurse). At most 128: every later read "
        "(pydicom, recursive) must get through what passed, and fails near 200",
    )
    max_quarantine_mb: int = Field(
        1024,
        ge=0,
        description="bytes kept in <spool>/quarantine at most (MiB); past it, or below the "
        "spool watermark, only the sidecar of a refused data set is written",
    )


class DicomSettings(_Section):
    """The DICOM listener (C-ECHO, C-STORE SCP)."""

    ae_title: AETitle = "CDS"
    host: str = "0.0.0.0"
    port: Port = 11112
    reuse_port: bool = Field(
        False,
        description="let several nodes of one PostgreSQL store listen on the same port (and "
        "TLS port) at once (SO_REUSEPORT): the kernel gives each connection (one "
        "association) to one of them, and one node can be restarted while the others answer. "
        "Every node sharing the port sets it and runs as the same user; needs "
        "store.backend postgresql",
    )
    max_pdu_bytes: int = Field(262_144, ge=0, description="largest PDU we accept; 0 = unlimited")
    max_associations: int = Field(16, ge=1, le=1000)
    acse_timeout_s: Seconds = 30.0
    dimse_timeout_s: Seconds = 60.0
    network_timeout_s: Seconds = Field(
        60.0,
        description="idle association timeout; also the read timeout of every accepted "
        "socket, so a half-sent PDU cannot hold a slot",
    )
    require_called_ae_title: bool = Field(
        True, description="reject associations whose Called AE Title is not ours"
    )
    fast_receive: bool = Field(
        True,
        description="use cds' receive path (cds.ingest.fastpath) instead of pynetdicom's stock "
        "polling loops; turn off to fall back to stock pynetdicom if a peer misbehaves",
    )
    allowed_calling_ae_titles: list[AETitle] = Field(
        default_factory=list,
        description="if not empty, only these Calling AE Titles may associate",
    )
    sources: list[SourceRule] = Field(
        default_factory=list,
        description="if not empty, only these AE titles, from these addresses, may associate",
    )
    tls: DicomTlsSettings = DicomTlsSettings()
    limits: IngestLimits = IngestLimits()

    @field_validator("reuse_port")
    @classmethod
    def _check_reuse_port(cls, value: bool) -> bool:
        if value and not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("this platform has no SO_REUSEPORT: give each node its own port")
        return value
