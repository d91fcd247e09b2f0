"""Recording feedback: one function for every way in (review page, REST API, DICOM).

Feedback is appended and never blocks the radiologist's work: a record that
cannot be matched to a finding is refused with a reason (a Refusal: not found, invalid), the
result itself is never changed.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from cds.audit import AuditEvent, AuditTrail
from cds.domain import Feedback, FeedbackAction, FindingRecord, ImageBox
from cds.errors import FeedbackError, Refusal
from cds.store.base import FeedbackStore

NOT_FOUND = Refusal.NOT_FOUND
INVALID = Refusal.INVALID
MAX_REASON = 2000
MAX_WHO = 64


@dataclass(frozen=True, slots=True)
class CorrectedLabel:
    scheme: str
    value: str
    meaning: str


def give_feedback(
    store: FeedbackStore,
    *,
    result_sop_uid: str,
    tracking_uid: str,
    action: FeedbackAction,
    who: str,
    source: str,
    reason: str = "",
    corrected: CorrectedLabel | None = None,
    corrected_box: ImageBox | None = None,
    now: float | None = None,
    audit: AuditTrail | None = None,
) -> Feedback:
    """Append one feedback record on a finding of a result; returns it. A correction
    says what the radiologist put instead: another label, another outline
    (``corrected_box``, in source pixels), a reason, or several of these.

    Recorded in ``audit`` (``feedback_given``) when given: who, the action, the
    model, version and hash, the finding's tracking UID (no reason text: it is
    free text and may name the patient)."""
    finding = store.get_finding(tracking_uid)
    if finding is None or finding.result_sop_uid != result_sop_uid:
        raise FeedbackError(
            NOT_FOUND,
            f"no finding {tracking_uid!r} in result {result_sop_uid!r} on this node",
        )
    who = who.strip()
    if not who:
        raise FeedbackError(INVALID, "who: say who gives the feedback (user name or AE title)")
    if len(who) > MAX_WHO or len(reason) > MAX_REASON:
        raise FeedbackError(
            INVALID, f"who is at most {MAX_WHO} characters and reason at most {MAX_REASON}"
        )
    if (
        action is FeedbackAction.CORRECT
        and corrected is None
        and corrected_box is None
        and not reason.strip()
    ):
        raise FeedbackError(
            INVALID, "a correction needs the corrected label or outline, a reason, or both"
        )
    if action is not FeedbackAction.CORRECT and (
        corrected is not None or corrected_box is not None
    ):
        what = "corrected_label" if corrected is not None else "corrected_box"
        raise FeedbackError(INVALID, f"{what} is only for action 'correct', not {action.value!r}")
    fb = store.add_feedback(
        _record(
            finding,
            action,
            who=who,
            source=source,
            reason=reason,
            corrected=corrected,
            corrected_box=corrected_box,
            now=now,
        )
    )
    if audit is not None:
        audit.record(
            AuditEvent.FEEDBACK_GIVEN,
            who=who if who.startswith(("AE:", "user:")) else f"user:{who}",
            study_key=fb.study_key,
            detail={"action": fb.action.value, "source": source, "model": fb.model,
                    "version": fb.version, "sha256": fb.sha256,
                    "tracking_uid": fb.tracking_uid, "feedback_id": fb.feedback_id},
        )  # fmt: skip
    return fb


def _record(
    finding: FindingRecord,
    action: FeedbackAction,
    *,
    who: str,
    source: str,
    reason: str,
    corrected: CorrectedLabel | None,
    corrected_box: ImageBox | None,
    now: float | None,
) -> Feedback:
    return Feedback(
        feedback_id=uuid.uuid4().hex,
        tracking_uid=finding.tracking_uid,
        result_sop_uid=finding.result_sop_uid,
        study_key=finding.study_key,
        action=action,
        reason=reason.strip(),
        corrected_scheme=corrected.scheme if corrected else None,
        corrected_value=corrected.value if corrected else None,
        corrected_meaning=corrected.meaning if corrected else None,
        who=who,
        source=source,
        at=time.time() if now is None else now,
        model=finding.model,
        version=finding.version,
        sha256=finding.sha256,
        corrected_box=corrected_box,
    )
