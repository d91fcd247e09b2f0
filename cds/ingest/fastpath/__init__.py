"""The receive hot path, adapted from pynetdicom 3.0.x internals.

pynetdicom spends most of a synchronous sender's time waiting, not working
(see /work/shared/perf/pynetdicom-receive.md): its association thread and its
DUL thread each poll with a 1 ms sleep, and a C-STORE sender pays both on
every instance. This package owns that loop, through small subclasses that
``install()`` puts into one association server:

- ``FastAssociation._run_reactor`` blocks on a doorbell (a ``threading.Event``
  rung whenever a DIMSE message or an ACSE primitive is queued for it, the DUL
  stops, or the association is killed) instead of sleeping 1 ms per loop;
- ``FastDUL.run_reactor`` waits in ``poll()`` on the socket plus a wake-up
  socket pair (rung when a local primitive is queued) instead of sleeping;
- ``FastDUL._read_pdu_data`` reads a whole PDU with ``recv_into`` a buffer of
  its announced length (not 4 KiB ``recv`` calls), and hands a P-DATA-TF
  received while established (Sta6) straight to the DIMSE provider, skipping
  the PDU object, the event queue and the state machine, whose DT-2 action
  does exactly that and stays in Sta6;
- ``FastDUL._read_whole_pdu`` refuses, with an A-ABORT and before reading
  its body, a P-DATA-TF announcing more than the Maximum Length we
  negotiated (``dicom.max_pdu_bytes``) or any other PDU over 1 MiB;
- ``FastAssociation._serve_c_store`` encodes the C-STORE response command set
  directly instead of through pydicom.

Everything else (negotiation, release, abort, timeouts, other DIMSE services,
malformed PDUs) runs pynetdicom's own code. A shortcut is taken only where it
is exactly equivalent: the P-DATA shortcut only if no handler is bound to the
per-PDU events it skips, the direct response only for an ``int`` status or a
``Dataset`` of Status and an ASCII Error Comment and no EVT_DIMSE_SENT
handler. pynetdicom's standard logging handlers, which log at INFO and below
only, are not bound while the ``pynetdicom`` logger is not enabled for INFO.

Pinned to pynetdicom 3.0.x (``install`` refuses another series); each
override names the method it replaces.
"""

from __future__ import annotations

import socket
from copy import deepcopy
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.transport import AssociationServer, AssociationSocket, RequestHandler

from cds.ingest.fastpath.association import FastAssociation, _silent, encode_c_store_rsp
from cds.ingest.fastpath.dul import MAX_CONTROL_PDU, FastDUL, PduTooLarge, bound_stock_dul
from cds.netdicom import check_pynetdicom

__all__ = [
    "MAX_CONTROL_PDU",
    "FastAssociation",
    "FastDUL",
    "FastRequestHandler",
    "PduTooLarge",
    "bound_stock_dul",
    "encode_c_store_rsp",
    "install",
]


class FastRequestHandler(RequestHandler):
    """pynetdicom's request handler, creating a ``FastAssociation``."""

    def _create_association(self) -> Association:
        """Replaces ``RequestHandler._create_association`` (same steps, other class)."""
        assoc = FastAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        timestamp = datetime.strftime(datetime.now(), "%Y%m%d%H%M%S")
        assoc.name = f"AcceptorThread@{timestamp}"
        sock = AssociationSocket(assoc, client_socket=cast(socket.socket, self.request))
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in self.server._handlers[event]:
                    handler = cast(Any, handler)
                    if not _silent(event, handler[0]):  # the one change
                        assoc.bind(event, handler[0], handler[1])
        # and a hook: the server may gate the association (cds.ingest.scp: source rules)
        prepare = getattr(self.server, "prepare_association", None)
        if prepare is not None:
            prepare(assoc, self.request, self.client_address)
        return assoc


def install(server: AssociationServer) -> None:
    """Make ``server`` create fast-path associations for the connections it accepts."""
    check_pynetdicom("cds.ingest.fastpath")
    server.RequestHandlerClass = FastRequestHandler
