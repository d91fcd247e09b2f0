"""PauseSafeAE: pynetdicom's requestor, minus a race that loses DIMSE responses.

Every ``send_*`` method of a pynetdicom 3.0 association (and ``release``) pauses
the association's reactor thread, so that the reactor does not take the
response off the DIMSE queue before the sender does::

    sender                                   reactor (Association._run_reactor)
    _reactor_checkpoint.clear()              _is_paused = True
    while not _is_paused: sleep(0.1 ms)      _reactor_checkpoint.wait()
    send the request, get_msg(block=True)    _is_paused = False
    _reactor_checkpoint.set()                get_msg(block=False) -> _serve_request

``_is_paused`` stays True from the moment ``set()`` wakes the reactor until the
reactor thread runs again. When that thread is not scheduled for a while (the
GIL shared by many associations, a loaded CPU) the sender returns, starts its
next request, clears the checkpoint, reads the stale True and sends; the
reactor then wakes, takes the response (pynetdicom logs "Received unexpected
C-STORE service message" and drops it), and the sender waits out the whole
DIMSE timeout and aborts the association. Its instance was stored by the peer;
the sender counts it, and every instance after it, as failed.

``PauseSafeAssociation._run_reactor`` closes the window: after announcing that
it runs (``_is_paused = False``) the reactor looks at the checkpoint again, and
goes back to waiting if a sender cleared it in between. Either the sender reads
``_is_paused`` before that announcement, and then the reactor sees the cleared
checkpoint and never touches the queue, or after it, and then it reads False
and waits for the reactor to pause.

``AE.associate`` hard-codes its ``Association`` class; ``PauseSafeAE`` makes the
association it builds a ``PauseSafeAssociation`` before its thread starts.
Pinned to pynetdicom 3.0.x like ``cds.ingest.fastpath``. Used by every association the
node opens (``cds.delivery.scu``) and by the test harness.
"""

from __future__ import annotations

import logging
import time
from ssl import SSLContext
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

from cds.netdicom import check_pynetdicom

# the logger of the code replaced here, so its messages keep their name
_ASSOC_LOG = logging.getLogger("pynetdicom.association")


class PauseSafeAssociation(Association):
    """A requestor association whose reactor cannot take a paused sender's response."""

    def _run_reactor(self) -> None:
        """Replaces ``Association._run_reactor``: the same steps, plus the re-check."""
        self._is_paused = False
        while not self._kill:
            time.sleep(0.001)

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            if not self._reactor_checkpoint.is_set():
                # a send_*() or release() paused the reactor after wait() returned
                # and may have read the stale True: leave the queue to it
                continue

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


class PauseSafeAE(AE):
    """An ``AE`` whose ``associate()`` returns a ``PauseSafeAssociation``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_pynetdicom("cds.requestor")
        super().__init__(*args, **kwargs)

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[SSLContext, str] | None,
    ) -> AssociationSocket:
        """Extends ``AE._create_socket``, which ``associate()`` calls on the new
        association before starting its thread: the one place to change its class."""
        if type(assoc) is Association:
            assoc.__class__ = PauseSafeAssociation
        return super()._create_socket(assoc, address, tls_args)
