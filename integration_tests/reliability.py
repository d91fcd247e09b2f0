"""Reliability harness shared by the soak and load tests and ``bench/load.py``:
what a process holds (threads, file descriptors, RSS) and the client behaviours
that must not leak anything in the node (health-check connects, aborted and
half-open associations, concurrent senders).

Loopback only; everything here is bounded in time and count.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from cds.requestor import PauseSafeAE

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True, slots=True)
class ProcStats:
    threads: int
    fds: int
    rss_mb: float


def proc_stats(pid: int) -> ProcStats:
    """Threads, open file descriptors and resident memory of a process (Linux /proc)."""
    threads = rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcStats(threads, fds, rss_kb / 1024)


def settle(pid: int, baseline: ProcStats, timeout: float = 10.0) -> ProcStats:
    """Wait until threads and fds come back near ``baseline`` (closing takes a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        now = proc_stats(pid)
        if (now.threads <= baseline.threads + 1 and now.fds <= baseline.fds + 1) or (
            time.monotonic() > deadline
        ):
            return now
        time.sleep(0.1)


# --- what load balancers and broken peers do ---------------------------------
def tcp_health_check(port: int) -> None:
    """Connect and close at once, as a TCP health check does."""
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def half_open(port: int) -> None:
    """Send the first bytes of an A-ASSOCIATE-RQ, then vanish."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack(">BBI", 0x01, 0x00, 200) + b"\x00\x01\x00\x00")


def _ae(calling: str = "SOAK") -> PauseSafeAE:
    # not pynetdicom's AE: with many associations in one process, its reactor can
    # take the response a send_c_store() waits for ("Received unexpected C-STORE
    # service message", then the whole DIMSE timeout); see cds.requestor
    ae = PauseSafeAE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_LE)
    # as long as the node's own DIMSE timeout: on a loaded CI machine one fsync can
    # stall for seconds, and a response that comes late is still a response
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    return ae


def echo_and_release(port: int, called: str) -> None:
    assoc = _ae().associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "association refused"
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def associate_and_abort(port: int, called: str) -> None:
    assoc = _ae().associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "association refused"
    assoc.abort()


def soak_round(port: int, called: str) -> None:
    """One of each: health check, released association, aborted one, half-open PDU."""
    tcp_health_check(port)
    echo_and_release(port, called)
    associate_and_abort(port, called)
    half_open(port)


# --- concurrent senders --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoadResult:
    instances: int
    failures: int
    seconds: float
    megabytes: float

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0


def send_concurrently(
    port: int, called: str, batches: Sequence[Sequence[Path]], calling: str = "LOAD"
) -> LoadResult:
    """One association per batch, all at once (one thread each); every instance must be
    answered. Returns the count, the failures (non-Success statuses or lost
    associations) and the wall time."""
    failures: list[int] = []
    lock = threading.Lock()
    datasets = [[dcmread(p) for p in b] for b in batches]
    size = sum(p.stat().st_size for b in batches for p in b) / 2**20
    start = threading.Barrier(len(batches) + 1)

    def run(items: list[object]) -> None:
        start.wait()
        bad = 0
        assoc = _ae(calling).associate("127.0.0.1", port, ae_title=called)
        if not assoc.is_established:
            bad = len(items)
        else:
            for n, ds in enumerate(items):
                if not assoc.is_established:  # lost (aborted): the rest is not sent
                    bad += len(items) - n
                    break
                status = assoc.send_c_store(ds)
                if not status or status.Status != 0:
                    bad += 1
            else:
                assoc.release()
        with lock:
            failures.append(bad)

    threads = [threading.Thread(target=run, args=(d,)) for d in datasets]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return LoadResult(sum(len(b) for b in batches), sum(failures), seconds, size)
