"""Urgent-finding notification: a FHIR R4 DiagnosticReport POSTed to a worklist.

Off unless the routing file says otherwise: a pipeline with ``notify: {target,
findings, min_score}`` names a target under ``notifications:``; when the model
reports a matching finding present, one DiagnosticReport (status
``preliminary``) is POSTed to that target's URL so the RIS/worklist can move the
study up. Nothing is sent anywhere else: no environment proxy, no redirect
followed, and the report carries the Study Instance UID, never a patient's
name, ID, birth date or accession number (the receiver maps the study UID).

The queue is in memory, on purpose: a notification lost to a stop or a crash
only loses the prioritisation; the results themselves are in the durable DICOM
outbox (``cds.delivery.worker``). Each notification is tried up to
``max_attempts`` times with an exponential backoff; the study's history gets
``notified`` or ``notify_failed`` (target name and HTTP status, never the
payload).

HL7 v2 ORU^R01 over MLLP is not built; it would be a second ``format``.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cds.delivery.fhir import fhir_diagnostic_report, urgent_findings
from cds.delivery.worker import backoff
from cds.destinations import NotificationTarget, Notify
from cds.errors import safe_message
from cds.i18n import check_lang
from cds.logging import get_logger
from cds.periodic import PeriodicWorker
from cds.store.base import StudyHistory

if TYPE_CHECKING:  # the inference stack (onnxruntime) is not needed to send
    from cds.findings import InferenceResult

__all__ = ["Notifier", "fhir_diagnostic_report", "urgent_findings"]

log = get_logger("cds.notify")

Targets = Callable[[], Mapping[str, NotificationTarget]]
#: sends ``body`` to ``target``; returns the HTTP status or raises SendError
Poster = Callable[[NotificationTarget, bytes], int]


class SendError(Exception):
    """A notification was not accepted; ``permanent``: trying again will not help."""

    def __init__(self, detail: str, *, permanent: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Send nowhere the admin did not name: a redirect is an error, not followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post_json(target: NotificationTarget, body: bytes) -> int:
    """POST ``body`` (FHIR JSON) to the target; the HTTP status, or SendError."""
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler({}),  # never an environment proxy
        _NoRedirect(),
    ]
    if target.url.startswith("https:"):
        try:
            ctx = ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)
        except OSError as exc:
            raise SendError(f"cannot read ca_file ({exc.strerror})", permanent=True) from exc
        if not target.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    headers = {k: v.get_secret_value() for k, v in target.headers.items()}
    headers["Content-Type"] = "application/fhir+json; charset=utf-8"
    headers.setdefault("Accept", "application/fhir+json")
    url = target.url  # http(s) only: NotificationTarget checks the scheme
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.build_opener(*handlers).open(req, timeout=target.timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:  # the body is not read: it may echo the payload
        status = exc.code
        exc.close()
        if 300 <= status < 400:
            raise SendError(f"HTTP {status}: redirect not followed", permanent=True) from None
        transient = status >= 500 or status in (408, 429)
        raise SendError(f"HTTP {status}", permanent=not transient) from None
    except urllib.error.URLError as exc:
        raise SendError(f"not reached ({_reason(exc.reason)})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise SendError(f"not reached ({_reason(exc)})") from None


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ssl.SSLError):
        return f"TLS: {reason.reason or type(reason).__name__}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


# --- the notifier ------------------------------------------------------------
@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    study_key: str = field(compare=False)
    target: str = field(compare=False)
    body: bytes = field(compare=False)
    findings: int = field(compare=False)
    attempts: int = field(default=0, compare=False)


class Notifier:
    """Sends urgent-finding notifications on its own thread, with retries.

    In memory by design (see the module docstring): pending notifications do not
    survive a stop; the DICOM results do.
    """

    def __init__(
        self,
        store: StudyHistory,
        targets: Targets,
        clock: Callable[[], float] = time.time,
        *,
        notify_of: Callable[[str], Notify | None],
        language: str = "en",
        max_attempts: int = 4,
        backoff_initial_s: float = 5.0,
        backoff_max_s: float = 120.0,
        max_pending: int = 1000,
        poster: Poster = post_json,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        check_lang(language)  # ValueError names the languages
        self._store = store
        self._targets = targets
        self._clock = clock
        self._notify_of = notify_of
        self._lang = language
        self._max_attempts = max_attempts
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._max_pending = max_pending
        self._post = poster
        self._queue: list[_Pending] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._worker = PeriodicWorker(
            "cds-notify", self._step, 60.0, log_event="notify.tick_failed",
            join_timeout_s=self._longest_timeout,
        )  # fmt: skip

    # --- queueing ----------------------------------------------------------
    def after_result(
        self, study_key: str, study_uid: str, pipeline: str, result: InferenceResult
    ) -> bool:
        """Queue one notification if ``pipeline`` has a ``notify`` spec and ``result``
        holds an urgent finding. True when one was queued. Never raises: a
        notification problem must not fail the study's results."""
        try:
            notify = self._notify_of(pipeline)
            if notify is None:
                return False
            found = urgent_findings(notify, result)
            if not found:
                return False
            report = fhir_diagnostic_report(study_uid, result, found, self._lang, self._clock())
            self.notify(study_key, notify.target, report, findings=len(found))
            return True
        except Exception as exc:
            log.error(
                "notify.not_queued",
                study_key=study_key,
                pipeline=pipeline,
                error_type=type(exc).__name__,
            )
            return False

    def notify(
        self, study_key: str, target: str, payload: Mapping[str, Any], *, findings: int = 1
    ) -> None:
        """Queue ``payload`` (a FHIR resource) for ``target``; sent on the thread."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        item = _Pending(self._clock(), next(self._seq), study_key, target, body, findings)
        with self._lock:
            dropped = None
            if len(self._queue) >= self._max_pending:
                dropped = max(self._queue)  # the one due last
                self._queue.remove(dropped)
                heapq.heapify(self._queue)
            heapq.heappush(self._queue, item)
        if dropped is not None:
            self._failed(dropped, "dropped: too many notifications waiting")
        self._worker.kick()

    def kick(self) -> None:
        """Try the due notifications now."""
        self._worker.kick()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    # --- sending -----------------------------------------------------------
    def _next_due(self) -> _Pending | None:
        with self._lock:
            if self._queue and self._queue[0].due <= self._clock():
                return heapq.heappop(self._queue)
        return None

    def tick(self) -> int:
        """Try every due notification once; returns how many were tried."""
        tried = 0
        while (item := self._next_due()) is not None:
            tried += 1
            self._send(item)
        return tried

    def _send(self, item: _Pending) -> None:
        item.attempts += 1
        target = self._targets().get(item.target)
        if target is None:
            why = f"target {item.target!r} is not in the routing file any more: not sent"
            self._failed(item, why)
            return
        t0 = time.perf_counter()
        try:
            status = self._post(target, item.body)
        except SendError as exc:
            if exc.permanent or item.attempts >= self._max_attempts:
                self._failed(item, exc.detail)
                return
            wait = backoff(item.attempts, *self._backoff)
            item.due = self._clock() + wait
            with self._lock:
                heapq.heappush(self._queue, item)
            log.warning(
                "notify.retry_scheduled",
                study_key=item.study_key,
                target=item.target,
                error=exc.detail,
                attempt=item.attempts,
                retry_in_s=wait,
            )
            return
        self._store.record_event(
            item.study_key,
            "notified",
            f"{item.findings} urgent finding(s) to {item.target} (HTTP {status})",
            self._clock(),
        )
        log.info(
            "notify.sent",
            study_key=item.study_key,
            target=item.target,
            status=status,
            attempt=item.attempts,
            seconds=round(time.perf_counter() - t0, 3),
        )

    def _failed(self, item: _Pending, why: str) -> None:
        self._store.record_event(
            item.study_key,
            "notify_failed",
            f"{item.findings} urgent finding(s) to {item.target} after {item.attempts} "
            f"tr{'y' if item.attempts == 1 else 'ies'}: {why} (the results are delivered as "
            "DICOM all the same)",
            self._clock(),
        )
        log.warning(
            "notify.failed",
            study_key=item.study_key,
            target=item.target,
            error=why,
            attempts=item.attempts,
        )

    # --- thread ------------------------------------------------------------
    def _step(self) -> float:
        """Send what is due (a store hiccup is logged, notifications go on); wait until
        the next is due, a minute at most."""
        try:
            self.tick()
        except Exception as exc:  # a store hiccup must not stop notifications
            log.error("notify.tick_failed", error_type=type(exc).__name__, error=safe_message(exc))
        with self._lock:
            wait = self._queue[0].due - self._clock() if self._queue else 60.0
        return min(60.0, wait)

    def _longest_timeout(self) -> float:
        try:
            longest = max((t.timeout_s for t in self._targets().values()), default=0.0)
        except Exception:  # the routing file is not this method's business
            longest = 0.0
        return longest + 5

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        """Stop the thread; what is still waiting is dropped (and logged, counted)."""
        self._worker.stop()
        left = self.pending
        if left:
            log.warning("notify.dropped_at_stop", notifications=left)

    @property
    def running(self) -> bool:
        return self._worker.running
