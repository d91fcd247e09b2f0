"""Every English text cds shows people, by part (``cds.i18n.fr`` has the same keys).

Parts: ``advisory`` (what every result object says: ``cds.i18n.advisory``), ``review``
(the review and sign-in pages), ``observatory`` (the dashboard), ``refusal`` (the HTML
401/403 page), ``summary`` (a job's summary: its 'inferred' event, process.json) and
``fhir`` (the urgent-finding DiagnosticReport). ``{name}`` fields are filled in by the
caller, with the same names in both languages.
"""

from __future__ import annotations

from typing import Final

TEXTS: Final[dict[str, dict[str, str]]] = {
    "advisory": {
        "series_prefix": "AI ADVISORY - ",
        "banner": "AI - advisory, to be reviewed by a radiologist",
        "content_label": "AI_ADVISORY",
        "produced_by": "Produced by model {name} {version} (SHA-256 {sha256})",
        "superseded_series": "withdrawn, superseded by {name} {version}",
        "superseded": (
            "These AI results are withdrawn: they were superseded by a newer run of "
            "model {name} version {version} (SHA-256 {sha256}). Do not use them."
        ),
        "ai": "AI",
        "below_threshold": "below threshold",
        "region_image": (
            "The box is the whole image: this result is about the image as a whole, "
            "not about a place in it."
        ),
        "region_mask": (
            "The box bounds the finding on the image where its area is largest; "
            "the finding may extend to other images."
        ),
        "region_segment": " The finding itself is segment {segment} of the SEG.",
    },
    "review": {
        "banner": "AI suggestions - advisory, to be reviewed by a radiologist",
        "title_list": "Studies with AI findings to review",
        "title_study": "AI findings of study {key}",
        "no_studies": "No study with AI findings on this node yet.",
        "study_key": "Study key",
        "modalities": "Modalities",
        "received": "Last received",
        "models": "Models",
        "findings": "Findings",
        "to_review": "Not reviewed",
        "open": "Review",
        "back": "All studies",
        "result": "Result",
        "model": "Model",
        "version": "Version",
        "pipeline": "Pipeline",
        "made": "Made",
        "superseded": "superseded by a newer run",
        "not_all_made": "Not every result object could be made",
        "job_state_partial": "partial: the other objects were made",
        "job_state_failed": "failed: nothing was made",
        "result_uid": "Result SOP Instance UID",
        "label": "Finding",
        "present": "present",
        "absent": "absent",
        "present_normal": "present: the normal state, not a finding",
        "no_decision": "a score, no decision",
        "score": "Score",
        "basis": "Basis: what the model looked at",
        "source_series": "Source series",
        "source_image": "Source image",
        "segment": "Segment {n} of the segmentation",
        "measurements": "Measurements",
        "no_preview": "No preview for this finding",
        "image_alt": "Source image with the finding drawn on it",
        "verdict": "Verdict",
        "not_reviewed": "not reviewed yet",
        "history": "Feedback history",
        "who": "Your login name",
        "reason": "Reason (free text)",
        "corrected_label": "Corrected label",
        "no_change": "(label unchanged)",
        "accept": "Accept",
        "reject": "Reject",
        "correct": "Correct",
        "accepted": "accepted",
        "rejected": "rejected",
        "corrected": "corrected",
        "by": "by {who}, {when} ({source})",
        "recorded": "Recorded: {action} on {label}, by {who}.",
        "refused": "Feedback refused",
        "not_found": "Not found",
        "back_to_study": "Back to the study",
        "who_missing": "Say who you are: fill in your login name.",
        "correct_missing": "A correction needs a corrected label, a reason, or both.",
        "bad_action": "Choose Accept, Reject or Correct.",
        "bad_label": "The corrected label is not one of this model's labels.",
        "no_study": "No study with key {key} on this node.",
        "no_finding": "No finding {uid} in study {key}.",
        "too_large": "The form is too large.",
        "other_lang": "Français",
        "auth_note": "Authentication is off on this node (loopback only): the login name you "
        "give is recorded as given.",
        "tracking_uid": "Tracking UID",
        "login_title": "Sign in",
        "token_label": "Your access token",
        "token_help": "Paste the token your administrator gave you (or your identity provider's "
        "access token). It is checked, then forgotten: the browser keeps a signed session "
        "cookie, not the token.",
        "sign_in": "Sign in",
        "signed_in_as": "Signed in as {name} ({role})",
        "sign_out": "Sign out",
        "login_refused": "This token is not accepted.",
        "auth_off": "Authentication is off on this node (loopback only): no sign-in needed.",
        "csrf_refused": "This form has expired or did not come from this node's page: "
        "reload the page and try again.",
    },
    "observatory": {
        "title": "Observatory - AI models on this node",
        "intro": (
            "How each model version is followed by the radiologists. Every AI result is "
            "advisory; these figures count what was recorded on this node."
        ),
        "since": "Since",
        "until": "Until",
        "bucket": "Period",
        "day": "day",
        "week": "week",
        "month": "month",
        "all": "whole range",
        "show": "Show",
        "summary": "Summary per model version",
        "model": "Model",
        "version": "Version",
        "period": "Period",
        "studies": "Studies",
        "findings": "Findings",
        "positive": "Positive",
        "reviewed": "Reviewed",
        "accept": "Accepted",
        "correct": "Corrected",
        "reject": "Rejected",
        "to_feedback": "Median time to feedback",
        "ttr": "Time to result p50 / p90 / p99",
        "run": "Job run time p50 / p90 / p99",
        "verdicts": "Verdicts per {bucket}",
        "scores": "Score distribution",
        "periods": "Per {bucket}",
        "none": "No results or findings in this period.",
        "other": "Français",
        "notes": (
            "Positive: share of findings present. Reviewed: share of findings with feedback. "
            "Accepted / corrected / rejected: latest verdict, over reviewed findings. Time to "
            "result: from the study's completion to its first result."
        ),
    },
    "refusal": {
        "title_401": "Sign-in required",
        "title_403": "Access denied",
        "sign_in": "Sign in",
        "review": "Review",
    },
    "summary": {
        "run": "{model} {version} sha256 {sha} on {provider}: {images} images in {seconds} s; ",
        "present": "{name} present ({score})",
        "absent": "{name} absent ({score})",
        "normal": "; normal state, not a finding",
        "informational": "{name}: score {score}, no decision",
    },
    "fhir": {
        "title": "AI suggestion: urgent finding",
        "found": "Suggested urgent finding(s): {items}.",
        "score": "score {score}",
    },
}
