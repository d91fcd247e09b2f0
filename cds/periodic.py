"""One background-thread shape for the node's periodic work.

The assembler, retention, the routing watcher, the delivery outbox, the notifier and
the audit syslog forwarder each run a step again and again on a daemon thread. A
``PeriodicWorker`` is that thread, once:

- ``step()`` runs, then the worker waits. The step returns how long (seconds), or
  ``None`` for ``interval_s``; ``Backoff(s)`` is a wait that ``kick()`` does not cut
  short (a peer that is down is not retried at every new record).
- ``kick()`` ends a wait early: new work arrived.
- A step that raises is logged (``<log_event>``, its error type and a message that
  never quotes a data value: ``cds.errors.safe_message``) and the worker waits
  ``interval_s``; it never dies of it.
- ``wait_first``: wait ``interval_s`` before the first step (the caller ran one itself).
- ``stop()`` ends the wait, and joins the thread for at most ``join_timeout_s`` (a step
  in a network call finishes first); ``start()`` after ``stop()`` starts a new thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from cds.errors import safe_message
from cds.logging import get_logger

log = get_logger("cds.periodic")


@dataclass(frozen=True)
class Backoff:
    """A wait of ``seconds`` that a kick does not cut short (only ``stop`` does)."""

    seconds: float


Step = Callable[[], "float | Backoff | None"]


class PeriodicWorker:
    def __init__(
        self,
        name: str,
        step: Step,
        interval_s: float,
        *,
        log_event: str,
        wait_first: bool = False,
        join_timeout_s: Callable[[], float] | float = 5.0,
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval_s
        self._log_event = log_event
        self._wait_first = wait_first
        self._join_timeout = join_timeout_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def kick(self) -> None:
        """End the current wait (unless it is a ``Backoff``): there is work now."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called: a long step may end early."""
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _wait(self, wait: float | Backoff | None) -> None:
        if isinstance(wait, Backoff):
            self._stop.wait(max(0.0, wait.seconds))
            return
        self._wake.wait(self._interval if wait is None else max(0.0, wait))
        self._wake.clear()

    def _run(self) -> None:
        if self._wait_first:
            self._wait(None)
        while not self._stop.is_set():
            try:
                wait = self._step()
            except Exception as exc:  # the worker outlives one bad step
                log.error(self._log_event, error_type=type(exc).__name__, error=safe_message(exc))
                wait = None
            if self._stop.is_set():
                return
            self._wait(wait)

    def start(self) -> None:
        self._stop.clear()
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            timeout = self._join_timeout() if callable(self._join_timeout) else self._join_timeout
            self._thread.join(timeout=timeout)
            self._thread = None
