"""UPS workitems in the DICOM JSON model (PS3.18 F.2): what the performer reads of a
workitem, and the data sets it sends (PS3.4 Annex CC, PS3.3 C.30).

Built with pydicom's ``Dataset`` (the VRs come from its dictionary) and written with
``to_json_dict``; read with ``Dataset.from_json``. A workitem that cannot be read is
a ``ValueError`` naming the attribute at fault, never quoting a value of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from cds import __version__

#: UPS Push SOP Class (a workitem's SOP Class UID)
UPS_PUSH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"
#: the well-known UID that names every workitem in a global subscription (PS3.4 CC.3.2)
GLOBAL_SUBSCRIPTION_UID = "1.2.840.10008.5.1.4.34.5"

SCHEDULED = "SCHEDULED"
IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
CANCELED = "CANCELED"
STATES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED)

#: CID 9300 Procedure Discontinuation Reasons (DCM)
REASON_UNSPECIFIED = ("110513", "Discontinued for unspecified reason")
REASON_EQUIPMENT = ("110501", "Equipment failure")

#: what every data set we send says of itself: advisory results, never a diagnosis
ADVISORY = "cds advisory AI analysis: results are suggestions for the radiologist"

# tags of the attributes read here, as the DICOM JSON model keys them
_SOP_INSTANCE_UID = "00080018"
_STATE = "00741000"
_INPUT_SEQUENCE = "00404021"
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"


@dataclass(frozen=True, slots=True)
class Workitem:
    """What the performer needs of a workitem (nothing of the patient)."""

    uid: str
    state: str
    study_uid: str | None  # the Input Information Sequence's study (None: none named)
    series_uids: tuple[str, ...]  # its series, in order (empty: the whole study)
    scheduled_code: tuple[tuple[str, str, str], ...] = ()  # Scheduled Workitem Code Seq.


def _values(obj: Mapping[str, Any], tag: str) -> list[Any]:
    element = obj.get(tag)
    if element is None:
        return []
    if not isinstance(element, Mapping):
        raise ValueError(f"attribute ({tag[:4]},{tag[4:]}) is not a DICOM JSON element")
    value = element.get("Value", [])
    if not isinstance(value, list):
        raise ValueError(f"attribute ({tag[:4]},{tag[4:]}) has no Value list")
    return value


def _uid(obj: Mapping[str, Any], tag: str) -> str | None:
    values = _values(obj, tag)
    if not values:
        return None
    v = values[0]
    if not isinstance(v, str) or not v or len(v) > 64 or not all(c in "0123456789." for c in v):
        raise ValueError(f"attribute ({tag[:4]},{tag[4:]}) is not a valid UID")
    return v


def read_workitem(obj: object) -> Workitem:
    """A workitem from its DICOM JSON (a search match or a retrieve answer)."""
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    if not isinstance(obj, Mapping):
        raise ValueError("a workitem is not a DICOM JSON object")
    uid = _uid(obj, _SOP_INSTANCE_UID)
    if uid is None:
        raise ValueError("SOP Instance UID (0008,0018) missing from the workitem")
    states = _values(obj, _STATE)
    state = states[0] if states else None
    if state not in STATES:
        raise ValueError("Procedure Step State (0074,1000) missing or not a UPS state")
    study: str | None = None
    series: list[str] = []
    for item in _values(obj, _INPUT_SEQUENCE):
        if not isinstance(item, Mapping):
            raise ValueError("Input Information Sequence (0040,4021) holds a non-item")
        item_study = _uid(item, _STUDY_UID)
        if item_study is None:
            continue
        if study is not None and item_study != study:
            raise ValueError("Input Information Sequence (0040,4021) names several studies")
        study = item_study
        item_series = _uid(item, _SERIES_UID)
        if item_series is not None and item_series not in series:
            series.append(item_series)
    codes = []
    for item in _values(obj, "00404018"):
        if isinstance(item, Mapping):
            parts = [_values(item, t) for t in ("00080100", "00080102", "00080104")]
            codes.append(tuple(str(p[0]) if p else "" for p in parts))
    return Workitem(uid, state, study, tuple(series), tuple(codes))  # type: ignore[arg-type]


def now_dt(at: float | None = None) -> str:
    """A DT value (PS3.5) in UTC, with its offset."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y%m%d%H%M%S.%f") + "+0000"


def new_transaction_uid() -> str:
    return str(generate_uid())


def state_change(state: str, transaction_uid: str) -> list[dict[str, Any]]:
    """The body of a Change Workitem State request (PS3.18 11.7)."""
    ds = Dataset()
    ds.ProcedureStepState = state
    ds.TransactionUID = transaction_uid
    return [ds.to_json_dict()]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _progress_item(percent: float, description: str) -> Dataset:
    item = Dataset()
    item.ProcedureStepProgress = f"{max(0.0, min(100.0, percent)):.0f}"
    item.ProcedureStepProgressDescription = f"{description} ({ADVISORY})"[:1024]
    return item


def progress_update(percent: float, description: str) -> list[dict[str, Any]]:
    """An Update Workitem body: Procedure Step Progress Information Sequence."""
    ds = Dataset()
    ds.ProcedureStepProgressInformationSequence = [_progress_item(percent, description)]
    return [ds.to_json_dict()]


@dataclass(frozen=True, slots=True)
class OutputRef:
    """One result object and where it can be retrieved from."""

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_uid: str
    retrieve_aes: tuple[str, ...] = ()  # DIMSE destinations it was delivered to
    retrieve_urls: tuple[str, ...] = ()  # DICOMweb service roots it was delivered to


def output_sequence(outputs: Iterable[OutputRef]) -> list[Dataset]:
    """Output Information Sequence items (Referenced Instances and Access Macro, PS3.3
    Table 10-3b): one item per series and retrieve location, its instances listed."""
    groups: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], list[OutputRef]] = {}
    for ref in outputs:
        key = (ref.study_uid, ref.series_uid, ref.retrieve_aes, ref.retrieve_urls)
        groups.setdefault(key, []).append(ref)
    items = []
    for (study, series, aes, urls), refs in groups.items():
        item = Dataset()
        item.TypeOfInstances = "DICOM"
        item.StudyInstanceUID = study
        item.SeriesInstanceUID = series
        sops = []
        for ref in refs:
            sop = Dataset()
            sop.ReferencedSOPClassUID = ref.sop_class_uid
            sop.ReferencedSOPInstanceUID = ref.sop_uid
            sops.append(sop)
        item.ReferencedSOPSequence = sops
        if aes:
            retrieve = Dataset()
            retrieve.RetrieveAETitle = list(aes) if len(aes) > 1 else aes[0]
            item.DICOMRetrievalSequence = [retrieve]
        if urls:
            web = []
            for url in urls:
                w = Dataset()
                w.RetrieveURL = f"{url}/studies/{study}/series/{series}"
                web.append(w)
            item.WADORSRetrievalSequence = web
        items.append(item)
    return items


def _performed(
    started_at: float,
    ended_at: float,
    performer_ae: str,
    scheduled_code: Sequence[tuple[str, str, str]],
    outputs: Iterable[OutputRef],
) -> Dataset:
    item = Dataset()
    item.PerformedStationNameCodeSequence = [_code(performer_ae, "99CDS", f"cds {__version__}")]
    item.PerformedProcedureStepStartDateTime = now_dt(started_at)
    item.PerformedProcedureStepEndDateTime = now_dt(ended_at)
    item.PerformedProcedureStepDescription = "cds advisory AI analysis"
    item.PerformedWorkitemCodeSequence = [
        _code(v, s, m) for v, s, m in scheduled_code if v and s and m
    ]
    item.OutputInformationSequence = output_sequence(outputs)
    return item


def completion_update(
    *,
    started_at: float,
    ended_at: float,
    performer_ae: str,
    scheduled_code: Sequence[tuple[str, str, str]],
    outputs: Sequence[OutputRef],
) -> list[dict[str, Any]]:
    """What COMPLETED requires (PS3.4 CC.2.5.1.1, Table CC.2.5-3): the Unified
    Procedure Step Performed Procedure Sequence (start, end, station, workitem code,
    Output Information Sequence), and the last progress (100 %)."""
    ds = Dataset()
    ds.ProcedureStepProgressInformationSequence = [
        _progress_item(100, f"done: {len(outputs)} result object(s)")
    ]
    ds.UnifiedProcedureStepPerformedProcedureSequence = [
        _performed(started_at, ended_at, performer_ae, scheduled_code, outputs)
    ]
    return [ds.to_json_dict()]


def cancellation_update(
    *,
    reason: str,
    code: tuple[str, str],
    started_at: float,
    ended_at: float,
    performer_ae: str,
    progress: float,
) -> list[dict[str, Any]]:
    """What CANCELED requires (PS3.4 CC.2.5.1.1): in the Progress Information Sequence
    the cancellation time, Reason For Cancellation and the Procedure Step
    Discontinuation Reason Code Sequence; the performed procedure's end time."""
    ds = Dataset()
    progress_item = _progress_item(progress, "canceled")
    progress_item.ProcedureStepCancellationDateTime = now_dt(ended_at)
    progress_item.ReasonForCancellation = reason[:10240]
    progress_item.ProcedureStepDiscontinuationReasonCodeSequence = [_code(code[0], "DCM", code[1])]
    ds.ProcedureStepProgressInformationSequence = [progress_item]
    ds.UnifiedProcedureStepPerformedProcedureSequence = [
        _performed(started_at, ended_at, performer_ae, (), ())
    ]
    return [ds.to_json_dict()]


def as_dataset(obj: Mapping[str, Any]) -> Dataset:
    """A DICOM JSON object as a pydicom Dataset (tests and the test server read them)."""
    return Dataset.from_json(dict(obj))
