"""DICOM over TLS (BCP 195 / PS3.15 B.9): the server context and the handshake.

pynetdicom wraps each accepted socket in ``get_request``, in the accept loop,
with the handshake done at once and no timeout: one TCP peer that connects to
the TLS port and sends nothing holds the accept loop, and every other TLS
client waits behind it. Here the accept loop only accepts; the handshake runs
in the connection's own thread, bounded by ``dicom.tls.handshake_timeout_s``,
and a peer that fails or stalls it is dropped (and audited) without touching
anyone else. After the handshake the socket gets the same read timeout as the
plain port (``dicom.network_timeout_s``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from dataclasses import dataclass

from cds.config import DicomTlsSettings
from cds.errors import ConfigError

#: BCP 195 (RFC 9325) recommended TLS 1.2 suites: AEAD with forward secrecy only.
#: TLS 1.3 suites are fixed by OpenSSL and all AEAD.
BCP195_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)

_VERIFY_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def server_context(cfg: DicomTlsSettings) -> ssl.SSLContext:
    """The TLS server context for ``dicom.tls``; ConfigError names what is wrong."""
    errors = []
    if cfg.cert_file is None or cfg.key_file is None:
        errors.append("dicom.tls: cert_file and key_file are required when enabled")
    if cfg.client_certs != "none" and cfg.ca_file is None:
        errors.append(
            f"dicom.tls.ca_file: required to verify client certificates "
            f"(client_certs: {cfg.client_certs})"
        )
    if errors:
        raise ConfigError(errors)
    assert cfg.cert_file is not None
    assert cfg.key_file is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [f"dicom.tls.cert_file/key_file: cannot load {cfg.cert_file}, {cfg.key_file} ({exc})"]
        ) from exc
    if cfg.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=cfg.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([f"dicom.tls.ca_file: cannot load {cfg.ca_file} ({exc})"]) from exc
    ctx.verify_mode = _VERIFY_MODES[cfg.client_certs]
    return ctx


@dataclass(frozen=True)
class Handshake:
    """What a finished handshake tells us about the peer."""

    version: str
    cipher: str
    cert_cn: str | None
    seconds: float


class HandshakeError(Exception):
    """The handshake failed or timed out; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def handshake(
    ctx: ssl.SSLContext, sock: socket.socket, timeout_s: float
) -> tuple[ssl.SSLSocket, Handshake]:
    """Wrap ``sock`` server side and complete the handshake within ``timeout_s``.

    Raises HandshakeError (the socket is then closed). Runs in the
    connection's thread, never in the accept loop.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    tls: ssl.SSLSocket | None = None
    try:
        sock.setblocking(False)
        tls = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        # Non-blocking, against one deadline: a per-read timeout would let a peer
        # that trickles a byte at a time stretch the handshake without end.
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                _wait(tls, deadline, write=False)
            except ssl.SSLWantWriteError:
                _wait(tls, deadline, write=True)
        tls.setblocking(True)
    except TimeoutError as exc:
        _close(tls or sock)  # wrap_socket took over the descriptor: close the wrapper
        raise HandshakeError("tls_handshake_timeout", f"no handshake in {timeout_s:g} s") from exc
    except ssl.SSLError as exc:
        _close(tls or sock)
        raise HandshakeError("tls_handshake_failed", exc.reason or type(exc).__name__) from exc
    except OSError as exc:
        _close(tls or sock)
        raise HandshakeError("tls_handshake_failed", type(exc).__name__) from exc
    cipher = tls.cipher()
    return tls, Handshake(
        version=tls.version() or "",
        cipher=cipher[0] if cipher else "",
        cert_cn=peer_cert_cn(tls),
        seconds=time.monotonic() - started,
    )


def peer_cert_cn(sock: socket.socket) -> str | None:
    """The Common Name of the peer's verified certificate, or None."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cert = sock.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for attribute in rdn:
            if attribute[0] == "commonName":
                return str(attribute[1])
    return None


def _wait(sock: socket.socket, deadline: float, *, write: bool) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    if not poller.poll(remaining * 1000):
        raise TimeoutError


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
