"""The DICOM listener: pynetdicom wiring for C-ECHO and C-STORE.

The C-STORE handler does little: it hands the raw data set bytes to the
``Receiver`` (durable spool + store) and maps its outcome to a DIMSE status
with an Error Comment. Pixels are never decoded here.

Network hardening that pynetdicom does not do by itself:
- every accepted socket gets TCP_NODELAY and a read timeout
  (``dicom.network_timeout_s``), so a peer that sends half a PDU and stalls
  is dropped instead of holding an association slot forever;
- any storage SOP Class (standard, private or unknown) is accepted in the
  transfer syntax the sender proposes first, so the data set is spooled
  byte for byte as sent (pynetdicom's ``UNRESTRICTED_STORAGE_SERVICE``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from cds.audit import AuditTrail, NullAuditTrail
from cds.config import Settings
from cds.errors import IngestError
from cds.ingest import fastpath
from cds.ingest.instance import STATUS_PROCESSING_FAILURE, safe_message
from cds.ingest.receiver import Receiver
from cds.logging import get_logger

log = get_logger("cds.ingest")

ALL_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
]


class _HardenedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with options set on every accepted socket."""

    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(self.ae.network_timeout)
        return client, address


@dataclass
class _AssocStats:
    calling_ae: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    bytes: int = 0
    study_keys: set[str] = field(default_factory=set)


def _called_ae_title(assoc: Any) -> str:
    """The AE title the peer called (not ours), from its A-ASSOCIATE-RQ."""
    primitive = assoc.requestor.primitive
    return str(primitive.called_ae_title).strip() if primitive is not None else ""


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    # Error Comment is LO: at most 64 characters
    ds.ErrorComment = comment[:64]
    return ds


class DicomListener:
    """Runs the association server in background threads."""

    def __init__(
        self, settings: Settings, receiver: Receiver, audit: AuditTrail | None = None
    ) -> None:
        self._settings = settings
        self._receiver = receiver
        self.audit = audit if audit is not None else NullAuditTrail()
        self._server: _HardenedServer | None = None
        self._thread: threading.Thread | None = None
        self._stats: dict[int, _AssocStats] = {}
        self._stats_lock = threading.Lock()
        #: called with the study keys an association stored into, when it ends
        self.on_association_end: Callable[[list[str]], None] | None = None
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        cfg = self._settings.dicom
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        ae = AE(ae_title=cfg.ae_title)
        ae.maximum_associations = cfg.max_associations
        ae.maximum_pdu_size = cfg.max_pdu_bytes
        ae.acse_timeout = cfg.acse_timeout_s
        ae.dimse_timeout = cfg.dimse_timeout_s
        ae.network_timeout = cfg.network_timeout_s
        ae.require_called_aet = cfg.require_called_ae_title
        ae.require_calling_aet = list(cfg.allowed_calling_ae_titles)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        return ae

    @property
    def listening(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("listener not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def active_associations(self) -> int:
        return len(self.ae.active_associations)

    def start(self) -> None:
        cfg = self._settings.dicom
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
        ]
        server = self.ae.make_server(
            (cfg.host, cfg.port), evt_handlers=handlers, server_class=_HardenedServer
        )
        assert isinstance(server, _HardenedServer)
        if cfg.fast_receive:
            fastpath.install(server)  # the receive hot path (cds/ingest/fastpath/)
        self._server = server
        self.ae._servers.append(server)  # as AE.start_server does; shutdown() removes it
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="cds-dicom-accept",
            daemon=True,
        )
        self._thread.start()
        host, port = self.address
        log.info("ingest.listener_started", ae_title=cfg.ae_title, host=host, port=port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # also closes the socket
            for assoc in list(self.ae.active_associations):
                assoc.abort()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        log.info("ingest.listener_stopped")

    # --- event handlers (run in association threads) ----------------------
    def _on_accepted(self, event: Any) -> None:
        a = event.assoc
        stats = _AssocStats(
            calling_ae=str(a.requestor.ae_title).strip(),
            peer=f"{a.requestor.address}:{a.requestor.port}",
        )
        with self._stats_lock:
            self._stats[id(a)] = stats
        log.info("ingest.association_accepted", calling_ae=stats.calling_ae, peer=stats.peer)

    def _on_rejected(self, event: Any) -> None:
        a = event.assoc
        log.warning(
            "ingest.association_rejected",
            calling_ae=str(a.requestor.ae_title).strip(),
            called_ae=_called_ae_title(a),
            peer=f"{a.requestor.address}:{a.requestor.port}",
        )

    def _on_conn_close(self, event: Any) -> None:
        a = event.assoc
        if a.is_acceptor and a.requestor.primitive is None:
            # The peer went away (or stalled and hit the socket timeout) before its
            # A-ASSOCIATE-RQ was complete. pynetdicom's acceptor thread would go on
            # waiting for that request for acse_timeout_s, holding an association
            # slot: wake it now (None reads as "no request"), so it ends at once.
            a.dul.to_user_queue.put(None)

    def _on_closed(self, event: Any) -> None:
        with self._stats_lock:
            stats = self._stats.pop(id(event.assoc), None)
        if stats is None:
            return
        if stats.study_keys and self.on_association_end is not None:
            try:
                self.on_association_end(sorted(stats.study_keys))
            except Exception as exc:  # a consumer's bug must not break the association
                log.error("ingest.association_end_hook_failed", error_type=type(exc).__name__)
        log.info(
            "ingest.association_closed",
            how="released" if event.event is evt.EVT_RELEASED else "aborted",
            calling_ae=stats.calling_ae,
            peer=stats.peer,
            stored=stats.stored,
            duplicates=stats.duplicates,
            failed=stats.failed,
            bytes=stats.bytes,
            seconds=round(time.monotonic() - stats.started, 3),
        )

    def _on_store(self, event: Any) -> Dataset | int:
        req = event.request
        stats = self._stats.get(id(event.assoc))
        calling_ae = str(event.assoc.requestor.ae_title)
        try:
            data = req.DataSet.getvalue()
            result = self._receiver.receive(
                sop_class_uid=str(req.AffectedSOPClassUID),
                sop_uid=str(req.AffectedSOPInstanceUID),
                transfer_syntax_uid=str(event.context.transfer_syntax),
                dataset=data,
                calling_ae=calling_ae,
            )
        except IngestError as exc:
            if stats:
                stats.failed += 1
            log.warning(
                "ingest.instance_refused",
                status=f"0x{exc.status:04X}",
                reason=str(exc),
                calling_ae=calling_ae.strip(),
            )
            return _status(exc.status, str(exc))
        except Exception as exc:
            if stats:
                stats.failed += 1
            log.error(
                "ingest.handler_failed",
                error_type=type(exc).__name__,
                reason=safe_message(exc),
                calling_ae=calling_ae.strip(),
            )
            return _status(STATUS_PROCESSING_FAILURE, f"internal error: {type(exc).__name__}")
        if stats:
            stats.bytes += len(data)
            stats.study_keys.add(result.study_key)
            if result.outcome.value == "duplicate":
                stats.duplicates += 1
            else:
                stats.stored += 1
        return 0x0000
