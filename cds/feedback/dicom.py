"""DICOM-native feedback: what the PACS sends back about our results.

When a study completes, its instances that cds did not make and that reference
one of our result objects are read as feedback on that result's findings:

- a Key Object Selection Document whose title is an IOCM rejection reason
  (113001 Rejected for Quality Reasons, 113037 Patient Safety, 113038 Incorrect
  Modality Worklist Entry, 113039 Data Retention Policy Expired) rejects every
  finding of the result it references;
- an SR (a radiologist's edited copy of ours, e.g. what OHIF saves after the
  radiologist moved, resized or deleted our boxes) judges each of our findings,
  matched to its measurement groups by tracking UID, else by image, label and
  outline (``cds.feedback.edited``): kept unchanged → accept; kept with another
  code or another outline → correct (with the new code and box, in source
  pixels); left out → reject. An SR whose groups match none of ours corrects
  every finding, as does any other object (e.g. an edited SEG) that references ours.

An SR that names none of our objects (OHIF saving as a new series) is read too
when it is a copy of one of our SRs: a group keeps one of our tracking UIDs, or
our label on our image.

Who: ``AE:<calling AE title>``, source ``dicom``. Each incoming object is read
once (a ``dicom_feedback`` line in the study history remembers it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from cds.audit import AuditTrail
from cds.domain import FeedbackAction, FindingRecord, ImageBox, ResultObject
from cds.feedback.edited import Group, Verdict, derived_from, judge, read_groups
from cds.feedback.service import CorrectedLabel, give_feedback
from cds.logging import get_logger
from cds.store.base import FeedbackStore, Outbox, StudyStore

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


class DicomFeedbackStore(StudyStore, Outbox, FeedbackStore, Protocol):
    """What reading feedback from DICOM uses of the state store: a study's history (which
    objects were read already), our result objects, their findings, the feedback."""


def _referenced(ds: Dataset) -> Iterator[str]:
    """Every Referenced SOP Instance UID anywhere in ``ds``."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _referenced(item)
        elif elem.keyword == "ReferencedSOPInstanceUID" and elem.value:
            yield str(elem.value)


def _run_of(store: DicomFeedbackStore, ref: ResultObject) -> list[FindingRecord]:
    """The findings of the run that made ``ref`` (its SR's, or its own)."""
    run = {
        r.sop_uid
        for r in store.list_results(ref.study_key)
        if (r.job_kind, r.source_series_uid, r.inputs_seed, r.model_version)
        == (ref.job_kind, ref.source_series_uid, ref.inputs_seed, ref.model_version)
    }
    return [f for f in store.list_findings(ref.study_key) if f.result_sop_uid in run]


def read_feedback(
    store: DicomFeedbackStore,
    study_key: str,
    files: Sequence[Path],
    calling_ae: str,
    *,
    audit: AuditTrail | None = None,
    results_root: Path | None = None,
) -> int:
    """Record the feedback carried by ``files`` (instances of one study); returns how
    many feedback records were appended (each also in ``audit`` when given). Never
    raises for a bad file (it is skipped). ``results_root``: where our result objects
    are (``ResultObject.path`` is relative to it): an edited SR is matched to our SR's
    groups read there; without it, only by tracking UID."""
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
        if not refs and ds.get("Modality") == "SR" and results_root is not None:
            refs = _copied_from(ds, ours.values(), results_root)
        if not refs:
            continue
        added += _judge(store, ds, refs, f"AE:{calling_ae}", audit=audit, results_root=results_root)
        store.record_event(
            study_key,
            _SEEN,
            f"{sop} {ds.get('Modality', '?')} from {calling_ae} references "
            f"{len(refs)} result object(s)",
        )
    return added


def _our_groups(ref: ResultObject, results_root: Path | None, study_key: str) -> list[Group]:
    """The measurement groups of our SR ``ref``, read from the results folder ([] when
    it is not an SR or cannot be read)."""
    if ref.modality != "SR" or results_root is None:
        return []
    try:
        return read_groups(dcmread(results_root / ref.path, stop_before_pixels=True))
    except (OSError, ValueError, InvalidDicomError) as exc:
        log.warning(
            "feedback.result_unreadable", study_key=study_key, error_type=type(exc).__name__
        )
        return []


def _copied_from(
    ds: Dataset, ours: Iterable[ResultObject], results_root: Path
) -> list[ResultObject]:
    """Our SRs that ``ds`` (an SR naming none of our objects) is a copy of."""
    theirs = read_groups(ds)
    if not theirs:
        return []
    return [
        r
        for r in ours
        if r.modality == "SR" and derived_from(_our_groups(r, results_root, r.study_key), theirs)
    ]


def _judge(
    store: DicomFeedbackStore,
    ds: Dataset,
    refs: list[ResultObject],
    who: str,
    *,
    audit: AuditTrail | None = None,
    results_root: Path | None = None,
) -> int:
    modality = str(ds.get("Modality", ""))
    sop = str(ds.SOPInstanceUID)
    findings: dict[str, FindingRecord] = {}
    for ref in refs:
        for f in _run_of(store, ref):
            findings[f.tracking_uid] = f
    title = ds.get("ConceptNameCodeSequence")
    code = str(title[0].CodeValue) if title else ""
    verdicts: list[
        tuple[FindingRecord, FeedbackAction, str, CorrectedLabel | None, ImageBox | None]
    ]
    verdicts = []
    if modality == "KO" and code in REJECTION_TITLES:
        why = f"IOCM rejection note {sop} ({code} {REJECTION_TITLES[code]})"
        verdicts = [(f, FeedbackAction.REJECT, why, None, None) for f in findings.values()]
    elif modality == "KO":
        return 0  # a key-object selection that is not a rejection says nothing of ours
    elif modality == "SR" and (said := _edited(store, ds, findings, refs, results_root)):
        for v in said:
            f = findings[v.tracking_uid]
            label = CorrectedLabel(v.code[0], v.code[1], v.meaning or v.code[1]) if v.code else None
            verdicts.append((f, v.action, v.why, label, v.box))
    else:
        why = f"{modality or 'an object'} {sop} made from this result"
        verdicts = [(f, FeedbackAction.CORRECT, why, None, None) for f in findings.values()]
    for f, action, why, label, box in verdicts:
        give_feedback(
            store,
            result_sop_uid=f.result_sop_uid,
            tracking_uid=f.tracking_uid,
            action=action,
            who=who[:64],
            source="dicom",
            reason=why,
            corrected=label,
            corrected_box=box,
            audit=audit,
        )
    return len(verdicts)


def _edited(
    store: Outbox,
    ds: Dataset,
    findings: dict[str, FindingRecord],
    refs: list[ResultObject],
    results_root: Path | None,
) -> list[Verdict]:
    """The verdict of an edited SR on each of ``findings``; [] when none of its groups
    is one of ours (it is then judged as any object made from our result)."""
    theirs = read_groups(ds)
    ours: dict[str, Group] = {}
    results = {r.sop_uid: r for r in store.list_results(refs[0].study_key)}
    for sr_uid in dict.fromkeys(f.result_sop_uid for f in findings.values()):
        if sr_uid in results:
            for g in _our_groups(results[sr_uid], results_root, refs[0].study_key):
                if g.tracking_uid in findings:
                    ours[g.tracking_uid] = g
    for uid, f in findings.items():  # not in a readable SR: matched by tracking UID only
        ours.setdefault(uid, Group(uid, (f.label_scheme, f.label_value), f.label_meaning, "", None))
    said = judge(list(ours.values()), theirs, f"edited SR {ds.SOPInstanceUID}")
    if all(v.action is FeedbackAction.REJECT for v in said):
        return []
    return said
