"""The findings of a result, as the radiologist reviews them.

A finding is keyed by the Tracking Unique Identifier of its measurement group
in the SR (what a viewer or RIS sends back with its feedback), and by the SR's
SOP Instance UID. A pipeline that makes no SR still gets findings, keyed by
UIDs derived from its first object, so that every result can be reviewed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from pydicom.dataset import Dataset

from cds.domain import FindingRecord
from cds.feedback.edited import read_groups
from cds.findings import Finding, InferenceResult

_COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
_NAMESPACE = uuid.UUID("6f1c2f38-5a3e-4d52-9a55-0c8a4f1d2b90")


def groups(sr: Dataset) -> list[tuple[str, tuple[str, str] | None]]:
    """(Tracking Unique Identifier, finding code) of each measurement group, in document order.

    A detection reports one group per box, so a result may have more groups than
    labels: each is a finding the radiologist can accept or reject on its own.
    """
    return [(g.tracking_uid, g.code) for g in read_groups(sr) if g.tracking_uid]


def tracking_uids(sr: Dataset) -> list[str]:
    """Tracking Unique Identifiers of an SR's measurement groups, in document order."""
    return [uid for uid, _ in groups(sr)]


def findings_of(
    result: InferenceResult,
    objects: Sequence[Dataset],
    *,
    study_key: str,
    job_kind: str,
    now: float | None = None,
) -> list[FindingRecord]:
    """One record per finding: per SR measurement group when an SR was made, else per label."""
    if not objects or not result.findings:
        return []
    sr = next((o for o in objects if str(o.SOPClassUID) == _COMPREHENSIVE_3D_SR), None)
    by_code: dict[tuple[str, str], Finding] = {
        (f.label.code.scheme, f.label.code.value): f for f in result.findings
    }
    if sr is not None and (found := groups(sr)):
        anchor = sr
        pairs = [(uid, by_code.get(code) if code else None) for uid, code in found]
        if len(result.findings) == 1:  # a group without a finding code is that label's
            pairs = [(uid, f or result.findings[0]) for uid, f in pairs]
        keyed = [(uid, f) for uid, f in pairs if f is not None]
    else:
        anchor = objects[0]
        base = str(anchor.SOPInstanceUID)
        keyed = [
            (f"2.25.{uuid.uuid5(_NAMESPACE, f'{base}/{i}').int}", f)
            for i, f in enumerate(result.findings)
        ]
    rec = result.record
    at = time.time() if now is None else now
    return [
        FindingRecord(
            tracking_uid=uid,
            result_sop_uid=str(anchor.SOPInstanceUID),
            study_key=study_key,
            job_kind=job_kind,
            model=rec.model,
            version=rec.version,
            sha256=rec.sha256,
            label_scheme=f.label.code.scheme,
            label_value=f.label.code.value,
            label_meaning=f.label.code.meaning,
            display_en=f.label.display.en,
            display_fr=f.label.display.fr,
            present=f.present,
            score=float(f.score),
            created_at=at,
        )
        for uid, f in keyed
    ]
