"""The receive hot path, adapted from pynetdicom 3.0.x internals.

pynetdicom spends most of a synchronous sender's time waiting, not working
(see /work/shared/perf/pynetdicom-receive.md): its association thread and its
DUL thread each poll with a 1 ms sleep, and a C-STORE sender pays both on
every instance. This module owns that loop, through small subclasses that
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

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
import time
from copy import deepcopy
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pynetdicom
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.transport import AssociationServer, AssociationSocket, RequestHandler

if TYPE_CHECKING:
    from pynetdicom.dimse_primitives import DimseServiceType
    from pynetdicom.presentation import PresentationContext

PYNETDICOM_SERIES = "3.0."

# the loggers of the code replaced here, so its messages keep their names
_DUL_LOG = logging.getLogger("pynetdicom.dul")
_ASSOC_LOG = logging.getLogger("pynetdicom.association")
_SERVICE_LOG = logging.getLogger("pynetdicom.service_class")

#: a PDU announcing up to this many bytes is read into one buffer of that size;
#: a longer one is read as it arrives, so a lying length cannot allocate 4 GiB
_PREALLOC_MAX = 4 * 2**20
#: upper bounds of the blocking waits, so timers are still checked
_DUL_WAIT_MAX_S = 0.5
_ASSOC_WAIT_MAX_S = 0.1
_PDU_HEADER = struct.Struct(">BBL")
_PDV_HEADER = struct.Struct(">LB")
#: events the P-DATA shortcut does not trigger; it is taken only if none is bound
_SKIPPED_EVENTS = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_FSM_TRANSITION)
_STANDARD_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)

_T = TypeVar("_T")


def _silent(event: Any, handler: Any) -> bool:
    """True for a pynetdicom standard logging handler whose output would be dropped.

    They log at INFO and DEBUG only, and cost time even when the logger drops
    it (one copies every received data set to see whether it is empty).
    """
    return (event, handler) in _STANDARD_LOG_HANDLERS and not logging.getLogger(
        "pynetdicom"
    ).isEnabledFor(logging.INFO)


class _RingingQueue(queue.Queue[_T]):
    """A queue that calls ``ring`` after every put, to wake its reader."""

    def __init__(self, ring: Any) -> None:
        super().__init__()
        self._ring = ring

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._ring()


class FastDUL(DULServiceProvider):
    """The DUL provider, waiting in poll() instead of polling every 1 ms."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        # Rung by other threads: a byte on _wake_w makes _wake_r readable.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_lock = threading.Lock()
        self._wake_closed = False
        self._ident: int | None = None
        self._poller: tuple[int, select.poll] | None = None
        self._header = bytearray(6)
        # Local primitives and events put by other threads must wake the reactor.
        self.to_provider_queue = _RingingQueue(self._wake)
        self.event_queue = _RingingQueue(self._wake_if_other_thread)
        bell: threading.Event = getattr(assoc, "_bell", threading.Event())
        self.to_user_queue = _RingingQueue(bell.set)
        self._assoc_bell = bell

    # --- waking -----------------------------------------------------------
    def _wake(self) -> None:
        with self._wake_lock:  # never write to a closed (and maybe reused) descriptor
            if not self._wake_closed:
                with contextlib.suppress(OSError):  # full: the reactor is awake anyway
                    self._wake_w.send(b"\0")

    def _wake_if_other_thread(self) -> None:
        if threading.get_ident() != self._ident:
            self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def stop_dul(self) -> bool:
        """Replaces ``stop_dul``: wake the reactor and join it, not sleep-poll."""
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._wake()
            if self.is_alive() and threading.current_thread() is not self:
                self.join()
            return True
        return False

    # --- the reactor --------------------------------------------------------
    def run_reactor(self) -> None:
        """Replaces ``run_reactor``: the same steps, waiting in poll() when idle."""
        self._ident = threading.get_ident()
        self._idle_timer.start()
        try:
            self._loop()
        finally:
            with self._wake_lock:
                self._wake_closed = True
                self._wake_r.close()
                self._wake_w.close()
            self._assoc_bell.set()  # the association reactor checks dul.is_alive()

    def _loop(self) -> None:
        sock = cast(AssociationSocket, self.socket)
        idle_polls = 0
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                progressed = self._process_recv_primitive()
                if not progressed and self._is_transport_event():
                    progressed = True
                    self._idle_timer.restart()
            except Exception as exc:
                # as pynetdicom: bypass the state machine and send an A-ABORT
                _DUL_LOG.error("Exception in DUL.run(), aborting association")
                _DUL_LOG.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                sock.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                if progressed:  # a P-DATA taken by the shortcut queues no event
                    idle_polls = 0
                    continue
                # Nothing to do: wait for the peer, a local primitive or a timer.
                # A socket that polls readable but yields nothing twice running
                # (odd shutdown states only) gets pynetdicom's 1 ms sleep instead.
                idle_polls = idle_polls + 1 if self._wait() else 0
                if idle_polls > 1:
                    time.sleep(self._run_loop_delay)
                continue
            idle_polls = 0
            self.state_machine.do_action(event)

    def _wait(self) -> bool:
        """Block until the socket is readable, a wake-up, or a timer is due.

        Returns True if it returned because the socket is readable.
        """
        assoc_sock = self.socket
        raw = assoc_sock.socket if assoc_sock is not None and assoc_sock._is_connected else None
        if isinstance(raw, ssl.SSLSocket) and raw.pending():
            return True  # buffered TLS data poll() cannot see (pynetdicom #528)
        fd = raw.fileno() if raw is not None else -1
        if self._poller is None or self._poller[0] != fd:
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            if fd >= 0:
                poller.register(fd, select.POLLIN)
            self._poller = (fd, poller)
        timeout = min(_DUL_WAIT_MAX_S, max(0.001, self.artim_timer.remaining))
        ready = self._poller[1].poll(timeout * 1000)
        on_socket = False
        for ready_fd, _ in ready:
            if ready_fd == fd:
                on_socket = True
            else:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:  # drained (BlockingIOError) or closed
                    pass
        return on_socket

    # --- reading PDUs -------------------------------------------------------
    def _read_pdu_data(self) -> None:
        """Replaces ``_read_pdu_data``: recv_into one buffer; P-DATA shortcut in Sta6."""
        pdu = self._read_whole_pdu()
        if pdu is None:
            return
        if pdu[0] == 0x04 and self._p_data_shortcut_allowed():
            self._receive_p_data(pdu)
            return
        try:
            decoded, event = self._decode_pdu(pdu)
            self.event_queue.put(event)
        except Exception as exc:
            _DUL_LOG.error("Unable to decode the received PDU data")
            _DUL_LOG.exception(exc)
            self.event_queue.put("Evt19")
            return
        self._recv_pdu.put(decoded)

    def _read_whole_pdu(self) -> bytearray | None:
        """One whole PDU from the socket, or None after queueing the event for
        the failure, with the same log line as pynetdicom's ``_read_pdu_data``.
        """
        raw = cast(socket.socket, cast(AssociationSocket, self.socket).socket)
        try:
            got = _recv_exactly(raw, memoryview(self._header))
            if got < 6:
                self.event_queue.put("Evt17")
                return None
            pdu_type, _, pdu_length = _PDU_HEADER.unpack(self._header)
            if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
                _DUL_LOG.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
                self.event_queue.put("Evt19")
                return None
            if pdu_length <= _PREALLOC_MAX:
                pdu = bytearray(6 + pdu_length)
                got = 6 + _recv_exactly(raw, memoryview(pdu)[6:])
            else:
                pdu = bytearray(6) + cast(AssociationSocket, self.socket).recv(pdu_length)
                got = len(pdu)
        except (OSError, TimeoutError) as exc:
            _DUL_LOG.error("Connection closed before the entire PDU was received")
            _DUL_LOG.exception(exc)
            self.event_queue.put("Evt17")
            return None
        if got != 6 + pdu_length:
            _DUL_LOG.error(
                f"The received PDU is shorter than expected ({got} of "
                f"{6 + pdu_length} bytes received)"
            )
            self.event_queue.put("Evt17")
            return None
        pdu[:6] = self._header
        return pdu

    def _p_data_shortcut_allowed(self) -> bool:
        # Sta6 + Evt10 -> DT-2 -> Sta6, and nothing queued ahead of this PDU
        if self.state_machine.current_state != "Sta6" or self.event_queue.queue:
            return False
        return not any(self.assoc.get_handlers(e) for e in _SKIPPED_EVENTS)

    def _receive_p_data(self, pdu: bytearray) -> None:
        """What DT-2 does with a P-DATA-TF PDU, without the PDU objects."""
        view = memoryview(pdu)
        items: list[tuple[int, Any]] = []
        offset, end = 6, len(pdu)
        while offset < end:
            if end - offset < 6:
                break
            item_length, context_id = _PDV_HEADER.unpack_from(pdu, offset)
            if item_length < 2 or offset + 4 + item_length > end:
                break
            # (context ID, message control header + fragment), as P_DATA_TF decodes it
            items.append((context_id, view[offset + 5 : offset + 4 + item_length]))
            offset += 4 + item_length
        if offset != end:  # what P_DATA_TF.decode refuses (or would crash DT-2 on)
            _DUL_LOG.error("Unable to decode the received PDU data")
            self.event_queue.put("Evt19")
            return
        primitive = P_DATA()
        primitive._presentation_data_value_list = items  # memoryviews: no copy
        self.assoc.dimse.receive_primitive(primitive)


def _recv_exactly(sock: socket.socket, view: memoryview) -> int:
    """recv_into ``view`` until full or the peer closes; return the bytes read."""
    got, size = 0, len(view)
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            break
        got += n
    return got


class FastAssociation(Association):
    """An acceptor association whose reactor blocks instead of polling."""

    def __init__(self, ae: Any, mode: str) -> None:
        # Rung when the reactor has something to look at; see _run_reactor.
        self._bell = threading.Event()
        super().__init__(ae, mode)
        self.dul = FastDUL(self)
        self.dimse.msg_queue = _RingingQueue(self._bell.set)
        # the timeout setters configure the DUL's timers: apply them to the new one
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout

    def _bind_defaults(self) -> None:
        """Replaces ``_bind_defaults``: skip logging handlers that would log nothing."""
        for event in evt._INTERVENTION_EVENTS:
            self.bind(event, evt.get_default_handler(event))
        if _config.LOG_HANDLER_LEVEL == "standard":
            for event, handler in _STANDARD_LOG_HANDLERS:
                if not _silent(event, handler):
                    self.bind(event, handler)

    def kill(self) -> None:
        self._bell.set()
        super().kill()

    def _run_reactor(self) -> None:
        """Replaces ``_run_reactor``: the same checks, waiting on the bell when idle."""
        self._is_paused = False
        while not self._kill:
            # Clear before looking, so that anything queued from now on rings again.
            self._bell.clear()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                _ASSOC_LOG.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                _ASSOC_LOG.info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                _ASSOC_LOG.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return

            if not msg:
                idle = cast(FastDUL, self.dul)._idle_timer.remaining
                self._bell.wait(min(_ASSOC_WAIT_MAX_S, max(0.001, idle)))

    def _serve_request(self, msg: DimseServiceType, context_id: int) -> None:
        """Serve a C-STORE for the Storage Service directly; everything else as stock."""
        context = self._accepted_cx.get(context_id)
        if (
            not isinstance(msg, C_STORE)
            or self._sent_release
            or not msg.is_valid_request
            or context is None
            or _service_class_of(self, msg) is not StorageServiceClass
        ):
            super()._serve_request(msg, context_id)
            return
        # as Association._serve_request around ServiceClass.SCP
        try:
            self.dimse.cancel_req = {}
            self._is_paused = True
            self._serve_c_store(msg, context)
            self._is_paused = False
            self.dimse.cancel_req = {}
        except Exception as exc:
            _ASSOC_LOG.exception(exc)
            self.abort()

    def _serve_c_store(self, req: C_STORE, context: PresentationContext) -> None:
        """Replaces ``StorageServiceClass.SCP`` for one C-STORE request."""
        cx_id = cast(int, context.context_id)
        # as service_class.attempt: abort() does not block inside the handler
        self.abort = self._abort_nonblocking  # type: ignore[method-assign]
        try:
            status: Any = evt.trigger(
                self, evt.EVT_C_STORE, {"request": req, "context": context.as_tuple}
            )
        except Exception as exc:
            _SERVICE_LOG.error("Exception in handler bound to 'evt.EVT_C_STORE'")
            _SERVICE_LOG.exception(exc)
            self._send_c_store_rsp(req, cx_id, 0xC211)
            return
        finally:
            self.abort = self._abort_blocking  # type: ignore[method-assign]
            _discard_chunked_file(req)
        if self.is_established:
            self._send_c_store_rsp(req, cx_id, status)

    def _send_c_store_rsp(self, req: C_STORE, cx_id: int, status: Any) -> None:
        encoded = None
        if not self.get_handlers(evt.EVT_DIMSE_SENT):
            encoded = encode_c_store_rsp(req, status)
        if encoded is None:  # anything unusual: pynetdicom's own path
            rsp = C_STORE()
            rsp.MessageID = req.MessageID
            rsp.MessageIDBeingRespondedTo = req.MessageID
            rsp.AffectedSOPInstanceUID = req.AffectedSOPInstanceUID
            rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
            rsp = StorageServiceClass(self).validate_status(status, rsp)
            self.dimse.send_msg(rsp, cx_id)
            return
        if not StorageServiceClass(self).is_valid_status(_status_code(status)):
            _SERVICE_LOG.warning(
                f"Unknown status value returned by callback - 0x{_status_code(status):04X}"
            )
        primitive = P_DATA()
        # message control header 0x03: command, last fragment
        primitive.presentation_data_value_list = [[cx_id, b"\x03" + encoded]]  # type: ignore[list-item]
        self.dul.send_pdu(primitive)


def _service_class_of(assoc: Association, msg: C_STORE) -> type[Any]:
    """The service class ``Association._serve_request`` would pick for ``msg``."""
    class_uid = UID(str(msg.AffectedSOPClassUID or ""))
    with contextlib.suppress(KeyError):
        class_uid = assoc.acceptor.accepted_common_extended[class_uid][0]
    if _config.UNRESTRICTED_STORAGE_SERVICE:
        class_uid = UID("1.2.840.10008.5.1.4.1.1.1")
    return uid_to_service_class(class_uid)


def _discard_chunked_file(req: C_STORE) -> None:
    """As StorageServiceClass.SCP: drop the temporary file of a chunked data set."""
    if req._dataset_file:
        req._dataset_file.close()
        with contextlib.suppress(OSError):
            os.unlink(req._dataset_file.name)


def _status_code(status: Any) -> int:
    return int(status.Status) if isinstance(status, Dataset) else int(status)


# --- the C-STORE response command set ------------------------------------------
def _element(tag: int, value: bytes) -> bytes:
    """One Implicit VR Little Endian element (commands are always encoded so)."""
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


def _uid(value: Any) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def encode_c_store_rsp(req: C_STORE, status: Any) -> bytes | None:
    """The C-STORE-RSP command set, or None if ``status`` needs pynetdicom's path.

    Equivalent to pynetdicom's ``validate_status`` + ``C_STORE_RSP`` encoding
    for an ``int`` status, or a ``Dataset`` holding Status and optionally an
    ASCII Error Comment of at most 64 characters.
    """
    comment: str | None = None
    if isinstance(status, Dataset):
        keywords = {elem.keyword for elem in status}
        if keywords not in ({"Status"}, {"Status", "ErrorComment"}):
            return None
        if "ErrorComment" in keywords:
            comment = status.ErrorComment
            if not isinstance(comment, str) or len(comment) > 64 or not comment.isascii():
                return None
        status = status.Status
    if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 0xFFFF:
        return None
    try:
        sop_class = _uid(req.AffectedSOPClassUID)
        sop_instance = _uid(req.AffectedSOPInstanceUID)
    except UnicodeEncodeError:
        return None
    if req.MessageID is None:
        return None
    parts = [
        _element(0x00000002, sop_class),  # Affected SOP Class UID
        _element(0x00000100, struct.pack("<H", 0x8001)),  # Command Field: C-STORE-RSP
        _element(0x00000120, struct.pack("<H", req.MessageID)),  # Message ID Being Responded To
        _element(0x00000800, struct.pack("<H", 0x0101)),  # Command Data Set Type: none
        _element(0x00000900, struct.pack("<H", status)),  # Status
    ]
    if comment is not None:
        raw = comment.encode("ascii")
        parts.append(_element(0x00000902, raw + b" " if len(raw) % 2 else raw))
    parts.append(_element(0x00001000, sop_instance))  # Affected SOP Instance UID
    body = b"".join(parts)
    return _element(0x00000000, struct.pack("<L", len(body))) + body  # Command Group Length


# --- the server ------------------------------------------------------------------
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
        return assoc


def install(server: AssociationServer) -> None:
    """Make ``server`` create fast-path associations for the connections it accepts."""
    if not pynetdicom.__version__.startswith(PYNETDICOM_SERIES):
        raise RuntimeError(
            f"cds.ingest.fastpath adapts pynetdicom {PYNETDICOM_SERIES}x internals, "
            f"found {pynetdicom.__version__}"
        )
    server.RequestHandlerClass = FastRequestHandler
