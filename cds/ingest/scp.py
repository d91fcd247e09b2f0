"""The DICOM listener: pynetdicom wiring for C-ECHO and C-STORE.

The C-STORE handler does little: it hands the raw data set bytes to the
``Receiver`` (durable spool + store) and maps its outcome to a DIMSE status
with an Error Comment. Pixels are never decoded here.

Network hardening that pynetdicom does not do by itself:
- every accepted socket gets TCP_NODELAY and a read timeout
  (``dicom.network_timeout_s``), so a peer that sends half a PDU and stalls
  is dropped instead of holding an association slot forever;
- one peer address holds at most ``dicom.limits.max_associations_per_address``
  connections and ``max_handshakes_per_address`` TLS handshakes in progress, so
  it cannot take every slot (cds/ingest/admission.py, cds/ingest/server.py);
- any storage SOP Class (standard, private or unknown) is accepted in the
  transfer syntax the sender proposes first, so the data set is spooled
  byte for byte as sent (pynetdicom's ``UNRESTRICTED_STORAGE_SERVICE``);
- with ``dicom.tls.enabled``, a second port speaks DICOM over TLS, its
  handshake done off the accept loop with a timeout (cds/ingest/tls.py);
- ``dicom.sources`` binds calling AE titles to addresses and certificates,
  checked before anything else in the A-ASSOCIATE-RQ (cds/ingest/sources.py);
- a PDU announcing more than ``dicom.max_pdu_bytes`` is refused with an
  A-ABORT before any of it is read (cds/ingest/fastpath/dul.py);
- pynetdicom never logs data sets or identifiers (its standard DIMSE/PDU
  handlers are not bound, request and response identifiers not logged).

Associations accepted and rejected, instances received (per association and
study), refused TLS handshakes and oversized PDUs are recorded in the audit
trail, with AE titles, addresses, certificate CNs and counts only; refusals for
an address's cap at most once a minute per address and cap, with their count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from cds.audit import AuditEvent, AuditOutcome, AuditTrail, NullAuditTrail
from cds.config import Settings
from cds.errors import IngestError, StoreError, safe_message
from cds.ingest import fastpath
from cds.ingest.admission import AddressCap
from cds.ingest.assoc import AssocStats, StudyCounts, called_ae_title, peer_of, status_dataset
from cds.ingest.instance import STATUS_PROCESSING_FAILURE
from cds.ingest.receiver import Receiver, store_unavailable
from cds.ingest.server import (
    STANDARD_LOG_HANDLERS,
    HardenedServer,
    NodeAE,
    NodeRequestHandler,
    TlsServer,
    listen_error,
)
from cds.ingest.sources import GatedACSE, SourcePolicy, reject_words
from cds.ingest.tls import HandshakeError, server_context
from cds.logging import get_logger
from cds.netdicom import check_pynetdicom

log = get_logger("cds.ingest")

ALL_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
]


class DicomListener:
    """Runs the association servers (plain, and TLS when enabled) in background threads."""

    def __init__(
        self, settings: Settings, receiver: Receiver, audit: AuditTrail | None = None
    ) -> None:
        self._settings = settings
        self._receiver = receiver
        self.audit = audit if audit is not None else NullAuditTrail()
        self.sources = SourcePolicy(list(settings.dicom.sources))
        tls_cfg = settings.dicom.tls
        # built now, so a bad certificate or key stops the node at start
        self._tls_context = server_context(tls_cfg) if tls_cfg.enabled else None
        limits = settings.dicom.limits
        exempt = limits.exempt_addresses
        #: connections per peer address (both ports), and TLS handshakes in progress
        self.associations_cap = AddressCap(
            limits.max_associations_per_address,
            waiting=limits.max_associations_per_address,
            exempt=exempt,
        )
        self.handshakes_cap = AddressCap(limits.max_handshakes_per_address, exempt=exempt)
        self._server: HardenedServer | None = None
        self._tls_server: TlsServer | None = None
        self._threads: list[threading.Thread] = []
        self._stats: dict[int, AssocStats] = {}
        self._stats_lock = threading.Lock()
        #: called with the study keys an association stored into, when it ends
        self.on_association_end: Callable[[list[str]], None] | None = None
        self.ae = self._make_ae()

    def _make_ae(self) -> NodeAE:
        check_pynetdicom("cds.ingest (server, sources, module configuration)")
        cfg = self._settings.dicom
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        # No patient data in logs: pynetdicom logs C-FIND/GET/MOVE identifiers and,
        # through its standard DIMSE/PDU handlers, whole requests at DEBUG.
        # The standard handlers are unbound from our servers and associations (not
        # through _config.LOG_HANDLER_LEVEL, which other AEs of the process share).
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        ae = NodeAE(ae_title=cfg.ae_title)
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
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    @property
    def address(self) -> tuple[str, int]:
        """The plain port's (host, port)."""
        if self._server is None:
            raise RuntimeError("listener not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """The TLS port's (host, port), None when TLS is off."""
        if self._tls_server is None:
            return None
        host, port = self._tls_server.server_address[:2]
        return str(host), int(port)

    def active_associations(self) -> int:
        return len(self.ae.active_associations)

    def start(self) -> None:
        cfg = self._settings.dicom
        self._server = self._listen(HardenedServer, "dicom.port", cfg.port, "cds-dicom-accept")
        host, port = self.address
        log.info(
            "ingest.listener_started",
            ae_title=cfg.ae_title,
            host=host,
            port=port,
            reuse_port=cfg.reuse_port,
        )
        if self._tls_context is not None:
            tls = self._listen(TlsServer, "dicom.tls.port", cfg.tls.port, "cds-dicom-tls-accept")
            assert isinstance(tls, TlsServer)
            self._tls_server = tls
            log.info(
                "ingest.tls_listener_started",
                ae_title=cfg.ae_title,
                host=host,
                port=tls.server_address[1],
                client_certs=cfg.tls.client_certs,
            )

    def _listen(
        self, server_class: type[HardenedServer], field: str, port: int, name: str
    ) -> HardenedServer:
        """``_serve``; a port it cannot listen on is a ConfigError naming ``field``."""
        cfg = self._settings.dicom
        try:
            return self._serve(server_class, port, name)
        except OSError as exc:
            if self._server is not None:  # the TLS port failed: the plain one stops too
                self.stop()
            raise listen_error(field, (cfg.host, port), exc, cfg.reuse_port) from exc

    def _serve(self, server_class: type[HardenedServer], port: int, name: str) -> HardenedServer:
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
            (cfg.host, port),
            evt_handlers=handlers,
            server_class=server_class,
            request_handler=NodeRequestHandler,
            reuse_port=cfg.reuse_port,  # SO_REUSEPORT before bind (HardenedServer)
        )
        assert isinstance(server, HardenedServer)
        server.configure(
            sources=self.sources, associations=self.associations_cap, on_dropped=self._on_dropped
        )
        for event, handler in STANDARD_LOG_HANDLERS:
            server.unbind(event, handler)
        if isinstance(server, TlsServer):
            assert self._tls_context is not None
            server.tls_context = self._tls_context
            server.handshake_timeout_s = cfg.tls.handshake_timeout_s
            server.handshakes = self.handshakes_cap
            server.on_handshake_failed = self._on_handshake_failed
        if cfg.fast_receive:
            fastpath.install(server)  # the receive hot path (cds/ingest/fastpath/)
        self.ae._servers.append(server)  # as AE.start_server does; shutdown() removes it
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=name, daemon=True
        )
        thread.start()
        self._threads.append(thread)
        return server

    def stop(self) -> None:
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        for server in servers:
            server.shutdown()  # also closes the socket
        if servers:
            for assoc in self.ae.every_association():
                assoc.abort()
        self._server = self._tls_server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        log.info("ingest.listener_stopped")

    # --- event handlers (run in association threads) ----------------------
    def _on_handshake_failed(self, address: Any, exc: HandshakeError) -> None:
        where = str(address[0])
        log.warning(
            "ingest.tls_handshake_failed",
            peer=f"{address[0]}:{address[1]}",
            reason=exc.reason,
            detail=exc.detail,
        )
        self._audit(
            AuditEvent.SECURITY_ALERT,
            who="peer",
            outcome=AuditOutcome.MINOR_FAILURE,
            where=where,
            detail={"alert": exc.reason, "error": exc.detail, "tls": True},
        )

    def _on_accepted(self, event: Any) -> None:
        a = event.assoc
        peer = peer_of(a)
        stats = AssocStats(
            calling_ae=str(a.requestor.ae_title).strip(),
            peer=f"{peer.address}:{peer.port}",
            address=peer.address,
            tls=peer.tls,
        )
        with self._stats_lock:
            self._stats[id(a)] = stats
        log.info(
            "ingest.association_accepted",
            calling_ae=stats.calling_ae,
            peer=stats.peer,
            tls=peer.tls,
            cert_cn=peer.cert_cn,
        )
        detail: dict[str, Any] = {"called_ae": called_ae_title(a), "tls": peer.tls}
        if peer.tls:
            detail["tls_version"] = peer.tls_version
        if peer.cert_cn is not None:
            detail["cert_cn"] = peer.cert_cn
        self._audit(
            AuditEvent.ASSOCIATION_ACCEPTED,
            who=f"AE:{stats.calling_ae}",
            where=peer.address,
            detail=detail,
        )

    def _on_rejected(self, event: Any) -> None:
        a = event.assoc
        peer = peer_of(a)
        calling = str(a.requestor.ae_title).strip()
        acse = a.acse
        rsd = acse.rejection if isinstance(acse, GatedACSE) else None
        source_reason = acse.source_reason if isinstance(acse, GatedACSE) else None
        reason = reject_words(rsd) if rsd is not None else "rejected"
        over_cap = isinstance(acse, GatedACSE) and acse.over_cap
        refusals = self.associations_cap.refused(peer.address) if over_cap else None
        if over_cap:
            reason = "rejected-transient: local limit exceeded (associations per address)"
            if refusals is None:  # already audited in this window: counted for the next record
                log.debug("ingest.association_rejected", peer=peer.address, reason=reason)
                return
        log.warning(
            "ingest.association_rejected",
            calling_ae=calling,
            called_ae=called_ae_title(a),
            peer=f"{peer.address}:{peer.port}",
            tls=peer.tls,
            reason=reason,
            source_rule=source_reason,
        )
        detail: dict[str, Any] = {
            "called_ae": called_ae_title(a),
            "tls": peer.tls,
            "reason": reason,
        }
        if rsd is not None:
            detail["result"], detail["source"], detail["diagnostic"] = rsd
        if source_reason is not None:
            detail["source_rule"] = source_reason
        if refusals is not None:
            detail.update(refusals.detail("max_associations_per_address"))
        if peer.cert_cn is not None:
            detail["cert_cn"] = peer.cert_cn
        self._audit(
            AuditEvent.ASSOCIATION_REJECTED,
            who=f"AE:{calling}",
            outcome=AuditOutcome.MINOR_FAILURE,
            where=peer.address,
            detail=detail,
        )

    def _on_dropped(self, cap: AddressCap, address: str, tls: bool) -> None:
        """A connection closed at once for its address's cap (in the accept loop)."""
        refusals = cap.refused(address)
        if refusals is None:  # already audited in this window: counted for the next record
            return
        limit = (
            "max_handshakes_per_address"
            if cap is self.handshakes_cap
            else "max_associations_per_address"
        )
        log.warning(
            "ingest.connection_dropped",
            peer=address,
            tls=tls,
            limit=limit,
            cap=refusals.cap,
            refused=refusals.count,
        )
        self._audit(
            AuditEvent.SECURITY_ALERT,
            who="peer",
            outcome=AuditOutcome.MINOR_FAILURE,
            where=address,
            detail={"alert": "address_limit", "tls": tls, **refusals.detail(limit)},
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
        a = event.assoc
        with self._stats_lock:
            stats = self._stats.pop(id(a), None)
        refused = getattr(a.dul, "refused_pdu", None)
        if refused is not None:
            self._on_pdu_refused(a, refused)
        if stats is None:
            return
        if stats.studies and self.on_association_end is not None:
            try:
                self.on_association_end(stats.study_keys)
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
        self._audit_received(stats)

    def _audit_received(self, stats: AssocStats) -> None:
        """INSTANCES_RECEIVED once per study the association stored into (and once,
        without a study, if it only had failures)."""
        who = f"AE:{stats.calling_ae}"
        for key in stats.study_keys:
            counts = stats.studies[key]
            self._audit(
                AuditEvent.INSTANCES_RECEIVED,
                who=who,
                where=stats.address,
                study_key=key,
                detail={
                    "instances": counts.instances,
                    "duplicates": counts.duplicates,
                    # refused instances cannot be tied to a study: the association's count
                    "failed": stats.failed,
                    "tls": stats.tls,
                },
            )
        if not stats.studies and stats.failed:
            self._audit(
                AuditEvent.INSTANCES_RECEIVED,
                who=who,
                outcome=AuditOutcome.MINOR_FAILURE,
                where=stats.address,
                detail={"instances": 0, "duplicates": 0, "failed": stats.failed, "tls": stats.tls},
            )

    def _on_pdu_refused(self, assoc: Any, refused: fastpath.PduTooLarge) -> None:
        peer = peer_of(assoc)
        calling = str(assoc.requestor.ae_title or "").strip()
        log.warning(
            "ingest.pdu_too_large",
            calling_ae=calling,
            peer=f"{peer.address}:{peer.port}",
            pdu_type=f"0x{refused.pdu_type:02X}",
            announced=refused.length,
            limit=refused.limit,
        )
        self._audit(
            AuditEvent.SECURITY_ALERT,
            who=f"AE:{calling}" if calling else "peer",
            outcome=AuditOutcome.SERIOUS_FAILURE,
            where=peer.address,
            detail={
                "alert": "pdu_too_large",
                "pdu_type": refused.pdu_type,
                "announced_bytes": refused.length,
                "limit_bytes": refused.limit,
                "tls": peer.tls,
            },
        )

    def _audit(self, event: AuditEvent, **kwargs: Any) -> None:
        """Record, never letting an audit failure break the association."""
        try:
            self.audit.record(event, **kwargs)
        except Exception as exc:
            log.error("ingest.audit_failed", audit_event=event.value, error_type=type(exc).__name__)

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
        except (IngestError, StoreError) as exc:
            # the store down (met before anything was recorded): 0xA700, never a crash
            refused = exc if isinstance(exc, IngestError) else store_unavailable(exc)
            if stats:
                stats.failed += 1
            log.warning(
                "ingest.instance_refused",
                status=f"0x{refused.status:04X}",
                reason=str(refused),
                calling_ae=calling_ae.strip(),
            )
            return status_dataset(refused.status, str(refused))
        except Exception as exc:
            if stats:
                stats.failed += 1
            log.error(
                "ingest.handler_failed",
                error_type=type(exc).__name__,
                reason=safe_message(exc),
                calling_ae=calling_ae.strip(),
            )
            return status_dataset(
                STATUS_PROCESSING_FAILURE, f"internal error: {type(exc).__name__}"
            )
        if stats:
            stats.bytes += len(data)
            counts = stats.studies.setdefault(result.study_key, StudyCounts())
            if result.outcome.value == "duplicate":
                stats.duplicates += 1
                counts.duplicates += 1
            else:
                stats.stored += 1
                counts.instances += 1
        return 0x0000
