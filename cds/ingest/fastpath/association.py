"""FastAssociation: the association reactor blocking on a doorbell, and the
C-STORE response encoded directly.

Part of ``cds.ingest.fastpath``; its docstring says what is replaced and why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

if TYPE_CHECKING:
    from pynetdicom.dimse_primitives import DimseServiceType
    from pynetdicom.presentation import PresentationContext
from cds.ingest.fastpath.dul import FastDUL, _RingingQueue

# the loggers of the code replaced here, so its messages keep their names
_ASSOC_LOG = logging.getLogger("pynetdicom.association")
_SERVICE_LOG = logging.getLogger("pynetdicom.service_class")

#: upper bound of the blocking wait, so timers are still checked
_ASSOC_WAIT_MAX_S = 0.1
_STANDARD_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


def _silent(event: Any, handler: Any) -> bool:
    """True for a pynetdicom standard logging handler whose output would be dropped.

    They log at INFO and DEBUG only, and cost time even when the logger drops
    it (one copies every received data set to see whether it is empty).
    """
    return (event, handler) in _STANDARD_LOG_HANDLERS and not logging.getLogger(
        "pynetdicom"
    ).isEnabledFor(logging.INFO)


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
