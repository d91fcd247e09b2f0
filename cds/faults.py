"""Failpoints: named places where a fault-injection test can make the node die.

Off unless the environment variable ``CDS_FAILPOINTS`` names them, e.g.
``CDS_FAILPOINTS="pipeline.encoded=kill"`` or ``"delivery.sent=kill@2"`` (on the
second pass). The only action is ``kill``: SIGKILL to the node itself, the
harshest crash there is (no ``finally``, no atexit, no flush), at a precise
point of the data flow. ``integration_tests/test_kill_phases.py`` uses them to
show that no acknowledged instance is lost and every result reaches the PACS
exactly once whatever the moment of the crash.

A failpoint costs one dictionary lookup when the variable is unset.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "CDS_FAILPOINTS"

#: every failpoint in the code, and where it is
POINTS = {
    "pipeline.inferring": "a job is running, before the model runs",
    "pipeline.encoded": "result objects are on disk, not yet recorded in the outbox",
    "compute.worker": "in a worker process (executor.kind process), before the model runs",
    "delivery.sent": "the PACS acknowledged a batch, not yet recorded as delivered",
}


def _parse(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, _, action = item.partition("=")
        verb, _, nth = action.partition("@")
        if name not in POINTS or verb != "kill":
            raise ValueError(
                f"{ENV}: unknown failpoint or action {item!r} (known: {sorted(POINTS)})"
            )
        out[name] = int(nth) if nth else 1
    return out


_ARMED = _parse(os.environ.get(ENV, ""))
_hits: dict[str, int] = {}
_lock = threading.Lock()


def failpoint(name: str) -> None:
    """Die here if a test armed this failpoint (and this is the pass it asked for)."""
    if not _ARMED or name not in _ARMED:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        due = _hits[name] == _ARMED[name]
    if due:
        os.kill(os.getpid(), signal.SIGKILL)
