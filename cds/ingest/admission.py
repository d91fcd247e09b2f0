"""Per-address caps on the DICOM ports (``dicom.limits``): connections and TLS handshakes.

``dicom.max_associations`` counts for the whole node, and a connection holds one
of its slots from the TCP accept, before its A-ASSOCIATE-RQ: one address opening
idle or half-sent connections could hold every slot until
``dicom.network_timeout_s``. So each peer address also has its own count:

- connections (plain and TLS ports together, from the accept to the end of the
  association) past ``max_associations_per_address`` are *refused*: their
  A-ASSOCIATE-RQ is answered at once with A-ASSOCIATE-RJ, and they hold no slot
  of ``max_associations`` while they wait to be told (cds.ingest.server); past
  as many again waiting, more connections from the address are *dropped*
  (closed at once), so it cannot pile up threads and file descriptors either;
- TLS handshakes in progress past ``max_handshakes_per_address`` are dropped
  before any TLS byte.

Nothing is exempt unless listed in ``exempt_addresses`` (loopback is not).
Refusals are reported for the audit trail at most once per address and cap every
``REPORT_EVERY_S`` (the first one at once), with how many there were since the
last report: a flood cannot fill the trail with one fsync'd record per attempt.
No pynetdicom in here.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from cds.ingest.sources import IPNetwork, parse_ip

#: at most one refusal report per address and cap in this many seconds
REPORT_EVERY_S = 60.0
#: addresses whose report times are kept; past it, the oldest are forgotten (one of
#: them refused again is then reported again: one more record, not one per attempt)
_TRACKED_MAX = 4096


class Verdict(StrEnum):
    ADMIT = "admit"
    REFUSE = "refuse"  # over the cap: told so (A-ASSOCIATE-RJ), holding no slot
    DROP = "drop"  # over the cap and the refusals waiting: closed at once


@dataclass(frozen=True)
class Refusals:
    """What the audit trail is told about one address over one cap."""

    address: str
    cap: int
    #: connections refused since the previous report, this one included
    count: int

    def detail(self, limit: str) -> dict[str, object]:
        """For the audit record (no patient data: a setting's name and counts)."""
        return {
            "limit": f"dicom.limits.{limit}",
            "cap": self.cap,
            "refused": self.count,
            "report_every_s": REPORT_EVERY_S,
        }


class Slot:
    """One connection's place in its address's count; ``release`` may be called twice."""

    __slots__ = ("_cap", "_released", "address", "owner", "verdict")

    def __init__(self, cap: AddressCap | None, address: str, verdict: Verdict) -> None:
        self._cap = cap  # None: nothing counted (exempt, or dropped)
        self._released = False
        self.address = address
        self.verdict = verdict
        #: the thread that gives the place back when it ends (an association's)
        self.owner: threading.Thread | None = None

    @property
    def started(self) -> bool:
        """True once the owner thread runs: it gives the place back, not the caller."""
        return self.owner is not None and self.owner.ident is not None

    def release(self) -> None:
        if self._cap is not None:
            self._cap._release(self)


class AddressCap:
    """How many connections (or handshakes) each peer address holds, against one cap.

    ``waiting``: how many connections over the cap may wait for their refusal
    (0: every one over the cap is dropped). Thread-safe.
    """

    def __init__(
        self,
        cap: int,
        *,
        waiting: int = 0,
        exempt: Iterable[str] = (),
        report_every_s: float = REPORT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cap = cap
        self.max_waiting = waiting
        self._exempt: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(a) for a in exempt)
        self._report_every_s = report_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._refusing: dict[str, int] = {}
        self._reports: dict[str, tuple[float, int]] = {}  # address -> (last report, since)

    def admit(self, address: str) -> Slot:
        """Count one more connection from ``address``; the verdict says what to do with it."""
        ip = parse_ip(address)
        key = _key(address)
        if ip is not None and any(ip.version == n.version and ip in n for n in self._exempt):
            return Slot(None, key, Verdict.ADMIT)
        with self._lock:
            if self._held.get(key, 0) < self.cap:
                self._held[key] = self._held.get(key, 0) + 1
                return Slot(self, key, Verdict.ADMIT)
            if self._refusing.get(key, 0) < self.max_waiting:
                self._refusing[key] = self._refusing.get(key, 0) + 1
                return Slot(self, key, Verdict.REFUSE)
        return Slot(None, key, Verdict.DROP)

    def held(self, address: str) -> int:
        """Connections from ``address`` counted against the cap now."""
        with self._lock:
            return self._held.get(_key(address), 0)

    def waiting(self, address: str) -> int:
        """Connections from ``address`` over the cap, not yet told so and closed."""
        with self._lock:
            return self._refusing.get(_key(address), 0)

    def refused(self, address: str) -> Refusals | None:
        """Note that a connection from ``address`` was refused or dropped; the report
        to audit, if one is due (the first, then one per ``report_every_s`` at most)."""
        key = _key(address)
        now = self._clock()
        with self._lock:
            last, since = self._reports.get(key, (None, 0))
            if last is not None and now - last < self._report_every_s:
                self._reports[key] = (last, since + 1)
                return None
            if len(self._reports) >= _TRACKED_MAX:
                self._forget_before(now - self._report_every_s)
            self._reports.pop(key, None)  # re-inserted: the dict stays in report order
            self._reports[key] = (now, 0)
        return Refusals(key, self.cap, since + 1)

    def _forget_before(self, when: float) -> None:
        for key in [k for k, (last, _) in self._reports.items() if last < when]:
            del self._reports[key]
        while len(self._reports) >= _TRACKED_MAX:  # all recent: the oldest reported go
            del self._reports[next(iter(self._reports))]

    def _release(self, slot: Slot) -> None:
        counts = self._held if slot.verdict is Verdict.ADMIT else self._refusing
        with self._lock:
            if slot._released:
                return
            slot._released = True
            left = counts.get(slot.address, 0) - 1
            if left > 0:
                counts[slot.address] = left
            else:
                counts.pop(slot.address, None)


def _key(address: str) -> str:
    """One key per peer: the IP as Python writes it (IPv4-mapped IPv6 as IPv4)."""
    ip = parse_ip(address)
    return str(ip) if ip is not None else address
