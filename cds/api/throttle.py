"""Failed logins counted per client address and presented credential, so that one
client's flood locks out nobody else (issue 14).

The throttle never decides whether a credential is let in: :mod:`cds.api.auth` checks
every credential first (a SHA-256 compare, or an OIDC signature) and lets a valid one
in whatever this says. It decides how a refusal is answered and recorded: up to a
limit, 401 and a record in the audit trail; reaching it, one security alert; past it,
429 and nothing written (no record, no fsync, no log line per attempt of a flood).
Two limits, each over ``window_s``:

- ``limit`` failures of one credential from one address: a client retrying a wrong or
  revoked token (a misconfigured script) is told to stop, and only that credential;
- ``address_limit`` failures of any credentials from one address: someone trying many
  tokens from it.

A credential is named by a keyed hash (a random key per process), never kept itself.
Why this is enough against guessing is in docs/security.md ("Failed logins").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

ANY = ""  # the fingerprint slot of an address's count over all credentials


@dataclass(frozen=True, slots=True)
class Failures:
    """Failures in the window after counting one: of this credential from this
    address, and of any credential from this address."""

    credential: int
    address: int

    def reached(self, throttle: FailureThrottle) -> bool:
        """This failure is the one that reaches a limit (the time for one alert)."""
        return self.credential == throttle.limit or self.address == throttle.address_limit

    def past(self, throttle: FailureThrottle) -> bool:
        """Past a limit: answer 429 and write nothing."""
        return self.credential > throttle.limit or self.address > throttle.address_limit


class FailureThrottle:
    MAX_KEYS = 20_000  # bounded memory: the key that failed least recently is forgotten

    def __init__(
        self,
        limit: int = 20,
        window_s: float = 60.0,
        address_limit: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.address_limit = address_limit
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def fingerprint(self, credential: str) -> str:
        """Names a presented credential without keeping it (keyed: not reversible offline)."""
        return hmac.new(self._key, credential.encode(), hashlib.sha256).hexdigest()[:24]

    def _recent(self, key: tuple[str, str], now: float) -> int:
        times = self._failures.get(key)
        if times is None:
            return 0
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return len(times)

    def failed(self, address: str, fingerprint: str) -> Failures:
        """Count one failure. At most one more than the limit is kept per key: enough to
        know it is past, without a list that grows with a flood."""
        now = self._clock()
        with self._lock:
            counts = []
            keys = (((address, fingerprint), self.limit), ((address, ANY), self.address_limit))
            for key, cap in keys:
                self._recent(key, now)
                times = self._failures.pop(key, None)
                if times is None:
                    while len(self._failures) >= self.MAX_KEYS:
                        self._failures.pop(next(iter(self._failures)))
                    times = deque(maxlen=cap + 1)
                self._failures[key] = times  # last in order: the least recent goes first
                times.append(now)
                counts.append(len(times))
            return Failures(counts[0], counts[1])
