"""The DICOM association servers: what happens between a TCP accept and the association.

pynetdicom's threaded server, with, for every accepted connection:
- TCP_NODELAY and a read timeout (``dicom.network_timeout_s``);
- a place in its address's count (cds.ingest.admission), taken in the accept
  loop and given back when its association's thread ends. A connection over
  ``dicom.limits.max_associations_per_address`` is refused (its GatedACSE answers
  A-ASSOCIATE-RJ local limit exceeded) and, while it waits for that answer, is not
  counted against ``dicom.max_associations`` (``NodeAE``); one past the refusals
  allowed to wait is closed at once;
- on the TLS port, first a place in its address's count of handshakes in
  progress (``max_handshakes_per_address``; over it, closed at once), then the
  handshake in the connection's own thread within ``handshake_timeout_s``
  (cds/ingest/tls.py), then the same as on the plain port;
- the source rules (cds/ingest/sources.py) checked in the A-ASSOCIATE-RQ.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from cds.errors import ConfigError
from cds.ingest import fastpath
from cds.ingest.admission import AddressCap, Slot, Verdict
from cds.ingest.sources import GatedACSE, Peer, SourcePolicy
from cds.ingest.tls import HandshakeError, handshake, peer_cert_cn
from cds.logging import get_logger

log = get_logger("cds.ingest")

#: pynetdicom's DIMSE/PDU logging handlers: at DEBUG they dump whole requests
STANDARD_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)

#: called with the cap, the address and whether on the TLS port, when a connection is
#: closed at once for its address's cap
OnDropped = Callable[[AddressCap, str, bool], None]


def _over_cap(assoc: Association) -> bool:
    acse = assoc.acse
    return isinstance(acse, GatedACSE) and acse.over_cap


class NodeAE(AE):
    """pynetdicom's AE, not counting a connection refused for its address's cap
    toward ``max_associations`` while it waits to be told so."""

    @property
    def active_associations(self) -> list[Association]:
        return [a for a in super().active_associations if not _over_cap(a)]

    def every_association(self) -> list[Association]:
        """Every association thread, refused ones included (to abort them all at stop)."""
        return list(super().active_associations)


class HardenedServer(ThreadedAssociationServer):
    """The plain port. ``configure`` must be called before it serves.

    ``reuse_port`` (``dicom.reuse_port``, passed through ``AE.make_server``) sets
    SO_REUSEPORT on the listening socket before it is bound: several nodes of one
    PostgreSQL store then listen on one port and the kernel gives each connection to
    one of them. Without it a port already listened on cannot be bound (pynetdicom's
    SO_REUSEADDR does not allow that on Linux).
    """

    daemon_threads = True
    tls = False
    sources: SourcePolicy
    associations: AddressCap
    on_dropped: OnDropped

    def __init__(self, *args: Any, reuse_port: bool = False, **kwargs: Any) -> None:
        self.reuse_port = reuse_port
        super().__init__(*args, **kwargs)  # binds (server_bind) and listens

    def server_bind(self) -> None:
        # pynetdicom's server_bind sets SO_REUSEADDR only (not socketserver's
        # allow_reuse_port); dicom.reuse_port is refused where SO_REUSEPORT is missing
        if self.reuse_port:  # the socket exists: socketserver made it before binding
            sock = cast(socket.socket, self.socket)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def configure(
        self, *, sources: SourcePolicy, associations: AddressCap, on_dropped: OnDropped
    ) -> None:
        self.sources = sources
        self.associations = associations
        self.on_dropped = on_dropped
        self._slots_lock = threading.Lock()
        self._slots: dict[Any, Slot] = {}  # connection socket -> its place in the count
        self._handshakes: dict[Any, Slot] = {}  # the TLS port's, during the handshake

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(self.ae.network_timeout)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """In the accept loop: False closes the connection at once."""
        return self._admit(request, client_address)

    def _admit(self, sock: Any, client_address: Any) -> bool:
        address = str(client_address[0])
        slot = self.associations.admit(address)
        if slot.verdict is Verdict.DROP:
            self.on_dropped(self.associations, address, self.tls)
            return False
        with self._slots_lock:
            self._slots[sock] = slot
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread: socketserver closes it, we give its place back
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            # The association's thread gives the place back when it ends (see
            # prepare_association); if it never started, the place is given back here.
            with self._slots_lock:
                slot = self._slots.pop(request, None)
            if slot is not None and not slot.started:
                slot.release()

    def _release(self, request: Any) -> None:
        with self._slots_lock:
            slots = [d.pop(request, None) for d in (self._slots, self._handshakes)]
        for slot in slots:
            if slot is not None:
                slot.release()

    def prepare_association(self, assoc: Association, sock: Any, address: Any) -> None:
        """Called by the request handler once the association exists, before it runs."""
        tls_version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        peer = Peer(
            address=str(address[0]),
            port=int(address[1]),
            tls=self.tls,
            cert_cn=peer_cert_cn(sock),
            tls_version=tls_version,
        )
        with self._slots_lock:
            slot = self._slots.get(sock)
        over_cap = slot is not None and slot.verdict is Verdict.REFUSE
        assoc.acse = GatedACSE(assoc, self.sources, peer, over_cap=over_cap)
        if slot is not None:
            _release_when_done(assoc, slot)
        if not isinstance(assoc.dul, fastpath.FastDUL):  # fast_receive: false
            fastpath.bound_stock_dul(assoc.dul)
        for event, handler in STANDARD_LOG_HANDLERS:  # they print requests at DEBUG
            assoc.unbind(event, handler)


def listen_error(
    field: str, address: tuple[str, int], exc: OSError, reuse_port: bool
) -> ConfigError:
    """A port the node cannot listen on, named by its setting; when it is in use, what
    may hold it and how several nodes share one."""
    host, port = address
    why = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE and reuse_port:
        why += "; a process that did not set SO_REUSEPORT, or another user's, holds it"
    elif exc.errno == errno.EADDRINUSE:
        why += (
            "; nodes of one PostgreSQL store may share one port, each with dicom.reuse_port: true"
        )
    return ConfigError([f"{field}: cannot listen on {host}:{port} ({why})"])


def _release_when_done(assoc: Association, slot: Slot) -> None:
    """Give ``slot`` back when the association's thread ends, however it ends."""
    run = assoc.run

    def run_then_release() -> None:
        try:
            run()
        finally:
            slot.release()

    assoc.run = run_then_release  # type: ignore[method-assign]
    slot.owner = assoc


class TlsServer(HardenedServer):
    """The TLS port: accepts in the accept loop, handshakes in the connection's thread.

    pynetdicom's ``get_request`` wraps and handshakes in the accept loop
    without a timeout; here ``ssl_context`` stays None for pynetdicom and the
    handshake runs in ``process_request_thread`` within ``handshake_timeout_s``.
    """

    tls = True
    tls_context: ssl.SSLContext
    handshake_timeout_s: float
    handshakes: AddressCap
    on_handshake_failed: Callable[[Any, HandshakeError], None]

    def verify_request(self, request: Any, client_address: Any) -> bool:
        address = str(client_address[0])
        slot = self.handshakes.admit(address)
        if slot.verdict is not Verdict.ADMIT:
            self.on_dropped(self.handshakes, address, True)
            return False
        with self._slots_lock:
            self._handshakes[request] = slot
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._slots_lock:
            slot = self._handshakes.pop(request, None)
        try:
            tls_sock, done = handshake(self.tls_context, request, self.handshake_timeout_s)
        except HandshakeError as exc:
            self.on_handshake_failed(client_address, exc)
            return
        finally:
            if slot is not None:
                slot.release()
        tls_sock.settimeout(self.ae.network_timeout)  # as the plain port: no endless read
        log.debug(
            "ingest.tls_handshake_done",
            peer=f"{client_address[0]}:{client_address[1]}",
            tls_version=done.version,
            cipher=done.cipher,
            cert_cn=done.cert_cn,
            seconds=round(done.seconds, 3),
        )
        if not self._admit(tls_sock, client_address):
            self.shutdown_request(tls_sock)
            return
        super().process_request_thread(tls_sock, client_address)


class NodeRequestHandler(RequestHandler):
    """pynetdicom's request handler, letting the server prepare each association
    (``dicom.fast_receive`` uses fastpath.FastRequestHandler, which does the same)."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        server = self.server
        assert isinstance(server, HardenedServer)
        server.prepare_association(assoc, self.request, self.client_address)
        return assoc
