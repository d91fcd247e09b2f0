"""DICOM-native feedback: what the PACS sends back about our results.

When a study completes, its instances that cds did not make and that reference
one of our result objects are read as feedback on that result's findings:

- a Key Object Selection Document whose title is an IOCM rejection reason
  (113001 Rejected for Quality Reasons, 113037 Patient Safety, 113038 Incorrect
  Modality Worklist Entry, 113039 Data Retention Policy Expired) rejects every
  finding of the result it references;
- an SR (a radiologist's edited copy of ours) judges each of our findings: kept
  with the same finding code → accept; kept with another code → correct (with
  that code as the corrected label); left out → reject. An edited SR that keeps
  none of our tracking UIDs corrects every finding, as does any other object
  (e.g. an edited SEG) that references ours.

Who: ``AE:<calling AE title>``, source ``dicom``. Each incoming object is read
once (a ``dicom_feedback`` line in the study history remembers it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from cds.audit import AuditTrail
from cds.domain import FeedbackAction, FindingRecord, ResultObject
from cds.feedback.findings import groups
from cds.feedback.service import CorrectedLabel, give_feedback
from cds.logging import get_logger
from cds.store.base import StateStore

log = get_logger("cds.feedback")

REJECTION_TITLES = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
#: modalities of objects that may carry feedback on our results
FEEDBACK_MODALITIES = {"KO", "SR", "SEG", "PR"}
_SEEN = "dicom_feedback"


def _referenced(ds: Dataset) -> Iterator[str]:
    """Every Referenced SOP Instance UID anywhere in ``ds``."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _referenced(item)
        elif elem.keyword == "ReferencedSOPInstanceUID" and elem.value:
            yield str(elem.value)


def _run_of(store: StateStore, ref: ResultObject) -> list[FindingRecord]:
    """The findings of the run that made ``ref`` (its SR's, or its own)."""
    run = {
        r.sop_uid
        for r in store.list_results(ref.study_key)
        if (r.job_kind, r.source_series_uid, r.inputs_seed, r.model_version)
        == (ref.job_kind, ref.source_series_uid, ref.inputs_seed, ref.model_version)
    }
    return [f for f in store.list_findings(ref.study_key) if f.result_sop_uid in run]


def read_feedback(
    store: StateStore,
    study_key: str,
    files: Sequence[Path],
    calling_ae: str,
    *,
    audit: AuditTrail | None = None,
) -> int:
    """Record the feedback carried by ``files`` (instances of one study); returns how
    many feedback records were appended (each also in ``audit`` when given). Never
    raises for a bad file (it is skipped)."""
    detail = store.get_study(study_key)
    if detail is None:
        return 0
    seen = {e.detail.split()[0] for e in detail.events if e.kind == _SEEN and e.detail}
    ours = {r.sop_uid: r for r in store.list_results(study_key)}
    if not ours:
        return 0
    added = 0
    for f in files:
        try:
            ds = dcmread(f, stop_before_pixels=True)
        except (OSError, ValueError) as exc:
            log.warning("feedback.unreadable", study_key=study_key, error_type=type(exc).__name__)
            continue
        sop = str(ds.get("SOPInstanceUID", ""))
        if not sop or sop in ours or sop in seen:
            continue  # our own object coming back, or already read
        refs = [ours[u] for u in dict.fromkeys(_referenced(ds)) if u in ours]
        if not refs:
            continue
        added += _judge(store, ds, refs, f"AE:{calling_ae}", audit)
        store.record_event(
            study_key,
            _SEEN,
            f"{sop} {ds.get('Modality', '?')} from {calling_ae} references "
            f"{len(refs)} result object(s)",
        )
    return added


def _judge(
    store: StateStore,
    ds: Dataset,
    refs: list[ResultObject],
    who: str,
    audit: AuditTrail | None = None,
) -> int:
    modality = str(ds.get("Modality", ""))
    sop = str(ds.SOPInstanceUID)
    findings: dict[str, FindingRecord] = {}
    for ref in refs:
        for f in _run_of(store, ref):
            findings[f.tracking_uid] = f
    title = ds.get("ConceptNameCodeSequence")
    code = str(title[0].CodeValue) if title else ""
    verdicts: list[tuple[FindingRecord, FeedbackAction, CorrectedLabel | None, str]] = []
    if modality == "KO" and code in REJECTION_TITLES:
        why = f"IOCM rejection note {sop} ({code} {REJECTION_TITLES[code]})"
        verdicts = [(f, FeedbackAction.REJECT, None, why) for f in findings.values()]
    elif modality == "KO":
        return 0  # a key-object selection that is not a rejection says nothing of ours
    elif modality == "SR" and (kept := {uid: c for uid, c in groups(ds) if uid in findings}):
        why = f"edited SR {sop}"
        for uid, f in findings.items():
            if uid not in kept:
                verdicts.append((f, FeedbackAction.REJECT, None, f"{why}: finding left out"))
            elif kept[uid] in (None, (f.label_scheme, f.label_value)):
                verdicts.append((f, FeedbackAction.ACCEPT, None, f"{why}: finding kept"))
            else:
                scheme, value = kept[uid] or ("", "")
                new = CorrectedLabel(scheme, value, _meaning(ds, uid) or value)
                verdicts.append((f, FeedbackAction.CORRECT, new, f"{why}: finding changed"))
    else:
        why = f"{modality or 'an object'} {sop} made from this result"
        verdicts = [(f, FeedbackAction.CORRECT, None, why) for f in findings.values()]
    for f, action, label, why in verdicts:
        give_feedback(
            store,
            result_sop_uid=f.result_sop_uid,
            tracking_uid=f.tracking_uid,
            action=action,
            who=who[:64],
            source="dicom",
            reason=why,
            corrected=label,
            audit=audit,
        )
    return len(verdicts)


def _meaning(sr: Dataset, tracking_uid: str) -> str | None:
    """The code meaning of the finding in the group holding ``tracking_uid``."""
    stack = list(sr.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        children = item.get("ContentSequence", [])
        if any(c.get("ValueType") == "UIDREF" and str(c.get("UID", "")) == tracking_uid
               for c in children):  # fmt: skip
            for c in children:
                name = c.get("ConceptNameCodeSequence")
                if c.get("ValueType") == "CODE" and name and name[0].CodeValue == "121071":
                    return str(c.ConceptCodeSequence[0].CodeMeaning)[:64]
        stack.extend(children)
    return None
