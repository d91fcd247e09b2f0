"""FastDUL: pynetdicom's DICOM Upper Layer reactor, waiting in poll() instead of sleeping,
reading whole PDUs with recv_into and handing P-DATA straight to DIMSE.

Part of ``cds.ingest.fastpath``; its docstring says what is replaced and why.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

if TYPE_CHECKING:
    pass

# the logger of the code replaced here, so its messages keep their name
_DUL_LOG = logging.getLogger("pynetdicom.dul")

#: a PDU announcing up to this many bytes is read into one buffer of that size;
#: a longer one is read as it arrives, so a lying length cannot allocate 4 GiB
_PREALLOC_MAX = 4 * 2**20
#: PDUs other than P-DATA-TF (A-ASSOCIATE-RQ and the like) announcing more are
#: refused: 128 presentation contexts of 50 transfer syntaxes each and a 64 KiB
#: user identity come to under 0.5 MiB
MAX_CONTROL_PDU = 2**20
#: A-ABORT source 2 (service provider), reason 6 (invalid PDU parameter value)
_ABORT_INVALID_PARAMETER = (0x02, 0x06)
#: upper bound of the blocking wait, so timers are still checked
_DUL_WAIT_MAX_S = 0.5
_PDU_HEADER = struct.Struct(">BBL")
_PDV_HEADER = struct.Struct(">LB")
#: events the P-DATA shortcut does not trigger; it is taken only if none is bound
_SKIPPED_EVENTS = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_FSM_TRANSITION)

_T = TypeVar("_T")


class PduTooLarge(Exception):
    """A PDU header announced more than we accept (``dicom.max_pdu_bytes``)."""

    def __init__(self, pdu_type: int, length: int, limit: int) -> None:
        super().__init__(f"PDU type 0x{pdu_type:02X} announces {length} bytes, limit {limit}")
        self.pdu_type = pdu_type
        self.length = length
        self.limit = limit


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
        #: set when a PDU over the limit was refused (the association is aborted)
        self.refused_pdu: PduTooLarge | None = None
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
            except PduTooLarge as exc:
                self._refuse_pdu(exc)
                return
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

    def _refuse_pdu(self, exc: PduTooLarge) -> None:
        refuse_pdu(self, exc)

    def _pdu_limit(self, pdu_type: int) -> int | None:
        return pdu_limit(self.assoc, pdu_type)

    # --- reading PDUs -------------------------------------------------------
    def _read_pdu_data(self) -> None:
        """Replaces ``_read_pdu_data``: recv_into one buffer; P-DATA shortcut in Sta6."""
        pdu = self._read_whole_pdu()
        if pdu is None:
            return
        if pdu[0] == 0x04 and self._p_data_shortcut_allowed():
            self._receive_p_data(pdu)
            return
        queue_decoded(self, pdu)

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
            limit = self._pdu_limit(pdu_type)
            if limit is not None and pdu_length > limit:
                raise PduTooLarge(pdu_type, pdu_length, limit)
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


def queue_decoded(dul: DULServiceProvider, raw: bytearray) -> None:
    """Decode a whole PDU and queue it with its event, as pynetdicom's
    ``_read_pdu_data`` ends (Evt19 and the same log lines when it does not decode)."""
    try:
        pdu, event = dul._decode_pdu(raw)
    except Exception as exc:
        _DUL_LOG.error("Unable to decode the received PDU data")
        _DUL_LOG.exception(exc)
        dul.event_queue.put("Evt19")
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(pdu)


# --- the PDU bound, shared with pynetdicom's stock DUL (bound_stock_dul) ----------------
def pdu_limit(assoc: Association, pdu_type: int) -> int | None:
    """The most bytes a PDU of this type may announce, None = no limit."""
    if pdu_type != 0x04:
        return MAX_CONTROL_PDU
    # the Maximum Length we announced bounds the P-DATA-TF variable field (PS3.8 D.1)
    limit = assoc.acceptor.maximum_length if assoc.is_acceptor else None
    return limit or None


def refuse_pdu(dul: DULServiceProvider, exc: PduTooLarge) -> None:
    """A-ABORT the association and drop the connection without reading the PDU.

    Its body is never read (nothing is allocated for it); the state machine is
    bypassed as for any DUL exception, since what follows on the wire is the
    refused PDU's body, not a PDU. EVT_ABORTED tells the listener (audit).
    """
    _DUL_LOG.warning(str(exc) + ", aborting association")
    dul.refused_pdu = exc  # type: ignore[attr-defined]
    sock = cast(AssociationSocket, dul.socket)
    abort_pdu = A_ABORT_RQ()
    abort_pdu.source, abort_pdu.reason_diagnostic = _ABORT_INVALID_PARAMETER
    with contextlib.suppress(Exception):
        sock.send(abort_pdu.encode())
    assoc = dul.assoc
    assoc.is_aborted = True
    assoc.is_established = False
    assoc._kill = True
    dul._kill_thread = True
    with contextlib.suppress(Exception):
        sock.close()
    evt.trigger(assoc, evt.EVT_ABORTED, {})


def bound_stock_dul(dul: DULServiceProvider) -> None:
    """Give pynetdicom's own DUL (``dicom.fast_receive: false``) the same PDU bound.

    Its ``_read_pdu_data`` reads whatever length a header announces; this
    replaces it, on this instance only, by the same steps with the bound checked
    between header and body.
    """
    dul.refused_pdu = None  # type: ignore[attr-defined]

    def read_pdu_data() -> None:
        """Replaces ``DULServiceProvider._read_pdu_data`` (same steps and log lines)."""
        sock = cast(AssociationSocket, dul.socket)
        try:
            header = sock.recv(6)
            if len(header) < 6:
                dul.event_queue.put("Evt17")
                return
            pdu_type, _, pdu_length = _PDU_HEADER.unpack(header)
            if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
                _DUL_LOG.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
                dul.event_queue.put("Evt19")
                return
            limit = pdu_limit(dul.assoc, pdu_type)
            if limit is not None and pdu_length > limit:
                refuse_pdu(dul, PduTooLarge(pdu_type, pdu_length, limit))
                return
            body = sock.recv(pdu_length)
        except (OSError, TimeoutError) as exc:
            _DUL_LOG.error("Connection closed before the entire PDU was received")
            _DUL_LOG.exception(exc)
            dul.event_queue.put("Evt17")
            return
        if len(body) != pdu_length:
            _DUL_LOG.error(
                f"The received PDU is shorter than expected ({6 + len(body)} of "
                f"{6 + pdu_length} bytes received)"
            )
            dul.event_queue.put("Evt17")
            return
        queue_decoded(dul, bytearray(header) + body)

    dul._read_pdu_data = read_pdu_data  # type: ignore[method-assign]


def _recv_exactly(sock: socket.socket, view: memoryview) -> int:
    """recv_into ``view`` until full or the peer closes; return the bytes read."""
    got, size = 0, len(view)
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            break
        got += n
    return got
