"""Urgent-finding notification: a FHIR R4 DiagnosticReport POSTed to a worklist, or an
HL7 v2.5.1 ORU^R01 sent over MLLP to a RIS (``cds.delivery.hl7v2``).

Off unless the routing file says otherwise: a pipeline with ``notify: {target,
findings, min_score}`` names a target under ``notifications:`` (``format: fhir-r4``
with a ``url``, the default, or ``format: hl7v2`` with ``host`` and ``port``); when the
model reports a matching finding present, one message is written to the notification
outbox (``cds.store.notifications``), committed before anything is sent, and sent by
this module's worker thread. Nothing is sent anywhere else: no environment proxy, no
redirect followed, and the message carries the Study Instance UID, never a patient's
name, ID, birth date or accession number (the receiver maps the study UID).

The outbox gives notifications the guarantees of result delivery
(``cds.delivery.worker``): each is tried up to ``max_attempts`` times with an
exponential backoff (``delivery.max_attempts``, ``backoff_initial_s``,
``backoff_max_s``), then dead until an admin retries it (``cds notifications retry``,
``POST /api/notifications/{id}/retry``); a stop or a kill -9 loses none. Its id is
deterministic (``notification_id``) and travels in the message (FHIR's report
``identifier`` is derived from the same study, model and findings; HL7's MSH-10 is the
id itself), so a message sent again after a kill between the answer and its record is
one the receiver recognises. The study's history gets ``notified`` or
``notify_failed`` (target name and HTTP status or ACK code, never the payload).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cds.delivery.fhir import _conclusion, entered_in_error, fhir_diagnostic_report, urgent_findings
from cds.delivery.hl7v2 import CONTROL_ID_LENGTH, Hl7Error, oru_r01, send_mllp, withdrawn_oru
from cds.delivery.worker import backoff
from cds.destinations import FhirTarget, Hl7v2Target, Notify, SomeNotificationTarget
from cds.errors import safe_message
from cds.i18n import check_lang
from cds.logging import get_logger
from cds.periodic import PeriodicWorker
from cds.store.base import StudyHistory
from cds.store.notifications import Notification, NotificationOutbox

if TYPE_CHECKING:  # the inference stack (onnxruntime) is not needed to send
    from cds.findings import Finding, InferenceResult

__all__ = [
    "Notifier",
    "fhir_diagnostic_report",
    "notification_id",
    "retraction_id",
    "urgent_findings",
    "withdrawal",
]

log = get_logger("cds.notify")

Targets = Callable[[], Mapping[str, SomeNotificationTarget]]
#: sends a message to a target; returns what it answered ("HTTP 201", "ACK AA") or
#: raises SendError
Sender = Callable[[Any, str], str]
_ID_NS = uuid.UUID("0c2f6b1e-1f0e-4d5e-9a51-6d7c0b9e4a21")  # namespace of notification ids


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


def post_json(target: FhirTarget, body: bytes) -> int:
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


def send_fhir(target: FhirTarget, body: str) -> str:
    """POST a FHIR resource; ``"HTTP <status>"`` or SendError."""
    return f"HTTP {post_json(target, body.encode('utf-8'))}"


def send_hl7v2(target: Hl7v2Target, body: str) -> str:
    """Send an ORU over MLLP; ``"ACK AA"`` or SendError (AE, AR, no ACK: tried again)."""
    try:
        return send_mllp(target, body)
    except Hl7Error as exc:
        raise SendError(exc.detail) from None


#: how each ``format`` is sent
SENDERS: dict[str, Sender] = {"fhir-r4": send_fhir, "hl7v2": send_hl7v2}


def notification_id(study_uid: str, sha256: str, findings: Sequence[Finding], target: str) -> str:
    """The deterministic id of one notification: the study, the model (its SHA-256), the
    finding codes and the target. 20 hex characters (80 bits), so that it is HL7's
    MSH-10 control ID as it is (an ST of at most 20 characters)."""
    codes = ",".join(sorted(f"{f.label.code.scheme}:{f.label.code.value}" for f in findings))
    key = f"{study_uid}|{sha256}|{codes}|{target}"
    return uuid.uuid5(_ID_NS, key).hex[:CONTROL_ID_LENGTH]


def retraction_id(notification_id: str) -> str:
    """The deterministic id of the message that withdraws notification ``notification_id``
    (``cds results retract``): a second retraction queues the same row, sent once."""
    return uuid.uuid5(_ID_NS, f"{notification_id}|retract").hex[:CONTROL_ID_LENGTH]


def withdrawal(item: Notification, control_id: str, now: float) -> str:
    """The message that withdraws ``item``: its ORU with result status W (OBR-25, OBX-11)
    under a new control ID, or its FHIR report with status ``entered-in-error``."""
    if item.format == "hl7v2":
        return withdrawn_oru(item.body, control_id, now)
    return entered_in_error(item.body)


# --- the notifier ------------------------------------------------------------
class Notifier:
    """Writes urgent-finding notifications to the outbox and sends them on its own
    thread, with retries, a dead letter and a lease per try (several nodes, one store)."""

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
        senders: Mapping[str, Sender] | None = None,
        idle_s: float = 60.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        check_lang(language)  # ValueError names the languages
        self._store = store
        self.outbox = NotificationOutbox(store)
        self._targets = targets
        self._clock = clock
        self._notify_of = notify_of
        self._lang = language
        self._max_attempts = max_attempts
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._senders = dict(SENDERS if senders is None else senders)
        # how long it sleeps with nothing due: what the CLI queues (``cds results
        # retract``, ``cds notifications retry``) is sent within that
        self._idle_s = idle_s
        self._worker = PeriodicWorker(
            "cds-notify", self._step, 60.0, log_event="notify.tick_failed",
            join_timeout_s=self._longest_timeout,
        )  # fmt: skip

    # --- queueing ----------------------------------------------------------
    def after_result(
        self, study_key: str, study_uid: str, pipeline: str, result: InferenceResult
    ) -> bool:
        """Write one notification to the outbox if ``pipeline`` has a ``notify`` spec and
        ``result`` holds an urgent finding. True when one is waiting to be sent. Never
        raises: a notification problem must not fail the study's results."""
        try:
            notify = self._notify_of(pipeline)
            if notify is None:
                return False
            found = urgent_findings(notify, result)
            if not found:
                return False
            target = self._targets().get(notify.target)
            if target is None:
                log.error("notify.unknown_target", study_key=study_key, target=notify.target)
                return False
            nid = notification_id(study_uid, result.record.sha256, found, notify.target)
            body = self._message(nid, target, study_uid, result, found)
            _row, queued = self.outbox.queue(
                nid, study_key, notify.target,
                fmt=target.format, findings=len(found), body=body, now=self._clock(),
            )  # fmt: skip
            if queued:
                log.info("notify.queued", study_key=study_key, target=notify.target)
                self._worker.kick()
            return queued
        except Exception as exc:
            log.error(
                "notify.not_queued",
                study_key=study_key,
                pipeline=pipeline,
                error_type=type(exc).__name__,
            )
            return False

    def _message(
        self,
        nid: str,
        target: SomeNotificationTarget,
        study_uid: str,
        result: InferenceResult,
        found: list[Finding],
    ) -> str:
        now = self._clock()
        if isinstance(target, Hl7v2Target):
            text = _conclusion(result, found, check_lang(self._lang))
            return oru_r01(
                nid, study_uid, result, found, target=target, conclusion=text, issued=now
            )
        priority = str(getattr(target, "priority", "stat"))  # a FHIR target has none yet
        report = fhir_diagnostic_report(
            study_uid, result, found, self._lang, now, priority=priority
        )
        return json.dumps(report, ensure_ascii=False, separators=(",", ":"))

    def kick(self) -> None:
        """Try the due notifications now (an admin retried one)."""
        self._worker.kick()

    @property
    def pending(self) -> int:
        """Notifications waiting to be sent (in the store: they survive a stop)."""
        return self.outbox.counts()["pending"]

    # --- sending -----------------------------------------------------------
    def tick(self) -> int:
        """Try every due notification once; returns how many were tried."""
        due = self.outbox.claim(self._clock())
        for item in due:
            self._send(item)
        return len(due)

    def _send(self, item: Notification) -> None:
        target = self._targets().get(item.target)
        if target is None:
            why = f"target {item.target!r} is not in the routing file any more: not sent"
            self._record(item, None, SendError(why, permanent=True))
            return
        if target.format != item.format:
            why = f"target {item.target!r} is {target.format} now, not {item.format}: not sent"
            self._record(item, None, SendError(why, permanent=True))
            return
        send = self._senders[item.format]
        t0 = time.perf_counter()
        try:
            answer = send(target, item.body)
        except SendError as exc:
            self._record(item, None, exc)
            return
        self._record(item, answer, None, seconds=time.perf_counter() - t0)
        # it answers: whatever waits for it (backing off since an outage) goes now
        if self.outbox.due_now(item.target, self._clock()):
            self._worker.kick()

    def _record(
        self,
        item: Notification,
        answer: str | None,
        error: SendError | None,
        *,
        seconds: float = 0.0,
    ) -> None:
        now = self._clock()
        tries = item.attempts + 1
        if error is None:
            self.outbox.attempted(item.notification_id, ok=True, now=now)
            what = f"{item.findings} urgent finding(s)" if item.findings else "retraction"
            self._store.record_event(
                item.study_key, "notified", f"{what} to {item.target} ({answer})", now
            )
            log.info(
                "notify.sent",
                study_key=item.study_key,
                target=item.target,
                answer=answer,
                attempt=tries,
                seconds=round(seconds, 3),
            )
            return
        retry_at = None
        if not error.permanent and tries < self._max_attempts:
            retry_at = now + backoff(tries, *self._backoff)
        after = self.outbox.attempted(
            item.notification_id, ok=False, error=error.detail, retry_at=retry_at, now=now
        )
        if after.state == "pending":
            log.warning(
                "notify.retry_scheduled",
                study_key=item.study_key,
                target=item.target,
                error=error.detail,
                attempt=tries,
                retry_in_s=round(retry_at - now, 3) if retry_at is not None else None,
            )
            return
        self._store.record_event(
            item.study_key,
            "notify_failed",
            f"{item.findings} urgent finding(s) to {item.target} after {tries} "
            f"tr{'y' if tries == 1 else 'ies'}: {error.detail} (dead: cds notifications "
            "retry; the results are delivered as DICOM all the same)",
            now,
        )
        log.warning(
            "notify.failed",
            study_key=item.study_key,
            target=item.target,
            error=error.detail,
            attempts=tries,
        )

    # --- thread ------------------------------------------------------------
    def _step(self) -> float:
        """Send what is due (a store hiccup is logged, notifications go on); wait until
        the next is due, ``idle_s`` at most."""
        try:
            self.tick()
            due = self.outbox.next_due()
        except Exception as exc:  # a store hiccup must not stop notifications
            log.error("notify.tick_failed", error_type=type(exc).__name__, error=safe_message(exc))
            return 5.0
        idle = self._idle_s
        return idle if due is None else max(0.0, min(idle, due - self._clock()))

    def _longest_timeout(self) -> float:
        try:
            longest = max((t.timeout_s for t in self._targets().values()), default=0.0)
        except Exception:  # the routing file is not this method's business
            longest = 0.0
        return longest + 5

    def start(self) -> None:
        """Start the thread; what this node had taken to send when it last stopped (or
        was killed) is due again now."""
        released = self.outbox.release(self._clock())
        if released:
            log.info("notify.released", notifications=released)
        self._worker.start()

    def stop(self) -> None:
        """Stop the thread; what is still waiting stays in the outbox (sent at the next
        start)."""
        self._worker.stop()
        try:
            left = self.pending
        except Exception:  # the store may be closing: nothing to say then
            return
        if left:
            log.info("notify.pending_at_stop", notifications=left)

    @property
    def running(self) -> bool:
        return self._worker.running
