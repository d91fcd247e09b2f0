"""Withdraw a result everywhere in one action (``cds results retract``,
``POST /api/results/{uid}/retract``, the review page's Retract button).

A result is what one run of a model made for one input series: the objects
``current`` together (SR, SEG, GSPS, SC); the operator names any of them by its SOP
Instance UID. Retracting it:

1. writes an IHE IOCM rejection note (``build_rejection_kos``, title 113001) that
   references every object of the result, and queues it in the DICOM delivery outbox
   to every destination that was sent (or was to be sent) one of them: the path a
   supersession's note takes (``record_results``). Its UIDs are seeded by the result,
   so the same retraction is the same note, delivered once per destination;
2. queues in the notification outbox, for every urgent-finding notification of that
   study and model (its body names the model's SHA-256) that was sent or is waiting,
   the message that withdraws it: the ORU with result status W (OBR-25, OBX-11) to an
   HL7 v2 target, the DiagnosticReport with status ``entered-in-error`` to a FHIR one,
   under an id derived from the notification's (``retraction_id``);
3. commits the retraction (``RetractionLog.retract``): the objects become
   ``retracted``, their deliveries not yet sent are cancelled, the reason and who are
   stored, the study's history gets ``retracted``; and records it in the audit trail
   (the reason's length there, its text stays in the store).

Steps 1 and 2 are idempotent and come before the commit: a retraction killed half-way
is done again by the next ``retract``, which queues the same rows (sent once); after
the commit a second one is refused (``Refusal.CONFLICT``). The operator's reason is
never logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from cds.audit import AuditEvent, AuditTrail
from cds.delivery.notify import retraction_id, withdrawal
from cds.domain import DeliveryState, ResultObject, ResultState
from cds.errors import AdminError, EncodingError, Refusal
from cds.i18n import advisory, check_lang, text
from cds.logging import get_logger
from cds.results.encode import write_results
from cds.results.kos import build_rejection_kos
from cds.store.base import StateStore
from cds.store.notifications import NotificationOutbox
from cds.store.retractions import AlreadyRetracted, Retraction, RetractionLog

log = get_logger("cds.retraction")

#: the longest reason kept (an operator's note, not a report)
MAX_REASON = 2000
_KEY_OBJECT_DESCRIPTION = "113012"


@dataclass(frozen=True, slots=True)
class Retracted:
    """What a retraction did: the record, the objects withdrawn, where the rejection
    note goes, and the notifications that withdraw the sent ones."""

    retraction: Retraction
    sop_uids: tuple[str, ...]
    destinations: tuple[str, ...]
    notifications: tuple[str, ...]  # the withdrawing notifications' ids

    def as_dict(self) -> dict[str, object]:
        return {
            **self.retraction.as_dict(with_reason=False),
            "state": ResultState.RETRACTED.value,
            "objects_withdrawn": list(self.sop_uids),
            "destinations": list(self.destinations),
            "notifications": list(self.notifications),
        }


def result_row(r: ResultObject) -> dict[str, object]:
    """A result object as ``GET /api/results`` and ``cds results --json`` list it."""
    return {
        "sop_instance_uid": r.sop_uid,
        "study_key": r.study_key,
        "study_instance_uid": r.study_uid,
        "series_instance_uid": r.series_uid,
        "sop_class_uid": r.sop_class_uid,
        "modality": r.modality,
        "job": r.job_kind,
        "model": r.job_kind.split(":", 1)[-1],
        "model_version": r.model_version,
        "state": r.state.value,
        "created_at": r.created_at,
        "withdrawn_at": r.superseded_at,
    }


def check_reason(reason: str) -> str:
    """The reason, stripped; ValueError when empty or longer than MAX_REASON."""
    kept = reason.strip()
    if not kept:
        raise ValueError("reason: say why the result is retracted (it is kept with it)")
    if len(kept) > MAX_REASON:
        raise ValueError(f"reason: at most {MAX_REASON} characters, not {len(kept)}")
    return kept


def retract_result(
    store: StateStore,
    results_root: Path,
    audit: AuditTrail,
    result_uid: str,
    *,
    reason: str,
    who: str,
    lang: str,
    now: float | None = None,
) -> Retracted:
    """Withdraw the result ``result_uid`` names everywhere (see the module docstring).

    AdminError NOT_FOUND for an unknown UID, CONFLICT for one retracted already (or
    superseded, or a rejection note); ValueError for an empty or too long reason;
    EncodingError when the rejection note cannot be made (its file is unreadable)."""
    kept = check_reason(reason)
    at = time.time() if now is None else now
    log_ = RetractionLog(store)
    named = log_.result(result_uid)
    if named is None:
        raise AdminError(Refusal.NOT_FOUND, f"no result with SOP Instance UID {result_uid}")
    if named.state is not ResultState.CURRENT:
        raise AdminError(Refusal.CONFLICT, _not_current(log_, named))
    objects = store.current_results(named.study_key, named.job_kind, named.source_series_uid)
    if named.sop_uid not in {o.sop_uid for o in objects}:  # pragma: no cover - a race
        raise AdminError(Refusal.CONFLICT, f"result {result_uid} is no longer current")
    source = _header(results_root, objects)
    model = str(source.get("ManufacturerModelName", "")) or named.job_kind.split(":", 1)[-1]
    version, sha256 = named.model_version, str(source.get("DeviceSerialNumber", ""))
    kos = build_rejection_kos(
        source, [o.ref for o in objects], lang, model=model, version=version,
        sha256=sha256, seed=f"retract|{named.study_key}",
    )  # fmt: skip
    _describe_retraction(kos, lang, model, version)
    (kos_path,) = write_results(results_root, named.study_key, [kos])
    sops = {o.sop_uid for o in objects}
    sent_to = [
        d
        for d in store.list_deliveries(study_key=named.study_key, limit=1_000_000)
        if d.sop_uid in sops and d.state is not DeliveryState.CANCELLED
    ]
    destinations = sorted({d.destination for d in sent_to})
    kos_row = ResultObject(
        sop_uid=str(kos.SOPInstanceUID), study_key=named.study_key,
        study_uid=named.study_uid, series_uid=str(kos.SeriesInstanceUID),
        sop_class_uid=str(kos.SOPClassUID), modality="KO",
        path=kos_path.relative_to(results_root).as_posix(), job_kind=named.job_kind,
        source_series_uid=named.source_series_uid, model_version=version,
        inputs_seed=named.inputs_seed, state=ResultState.REJECTION, created_at=at,
    )  # fmt: skip
    priority = max((d.priority for d in sent_to), default=0)
    store.record_results([kos_row], destinations, now=at, priority=priority)
    withdrawn = _withdraw_notifications(store, named.study_key, sha256, at)
    record = Retraction(
        result_uid=named.sop_uid, study_key=named.study_key, job_kind=named.job_kind,
        model=model, version=version, sha256=sha256, objects=len(objects),
        kos_uid=kos_row.sop_uid, who=who, reason=kept, retracted_at=at,
    )  # fmt: skip
    try:
        done = log_.retract(record, sorted(sops), now=at)
    except AlreadyRetracted:  # another retraction committed meanwhile
        raise AdminError(Refusal.CONFLICT, _not_current(log_, named)) from None
    audit.record(
        AuditEvent.RESULTS_RETRACTED,
        who=who,
        study_key=named.study_key,
        detail={"job": named.job_kind, "model": model, "version": version, "sha256": sha256,
                "objects": len(objects), "rejection_note": kos_row.sop_uid,
                "destinations": destinations, "notifications": len(withdrawn),
                "reason_chars": len(kept)},
    )  # fmt: skip
    log.info(
        "retraction.committed",
        study_key=named.study_key,
        job=named.job_kind,
        objects=len(objects),
        destinations=len(destinations),
        notifications=len(withdrawn),
    )
    return Retracted(done, tuple(sorted(sops)), tuple(destinations), tuple(withdrawn))


def _not_current(log_: RetractionLog, r: ResultObject) -> str:
    if r.state is ResultState.CURRENT:
        r = log_.result(r.sop_uid) or r
    if r.state is ResultState.RETRACTED:
        return f"result {r.sop_uid} is retracted already"
    if r.state is ResultState.REJECTION:
        return f"{r.sop_uid} is a rejection note, not a result: nothing to retract"
    return f"result {r.sop_uid} is {r.state.value} (a newer run replaced it): nothing to retract"


def _header(root: Path, objects: list[ResultObject]) -> Dataset:
    """A result object's header (the patient and study attributes the note copies, the
    model's name and SHA-256): the SR's when there is one."""
    ordered = sorted(objects, key=lambda o: o.modality != "SR")
    for o in ordered:
        try:
            return dcmread(root / o.path, stop_before_pixels=True)
        except (OSError, ValueError):
            continue
    raise EncodingError(
        f"KOS: no readable result file under {root} for the result of {objects[0].job_kind}"
    )


def _describe_retraction(kos: Dataset, lang: str, model: str, version: str) -> None:
    """The note says the result was retracted, not superseded by a newer run (the
    builder's text): its Key Object Description and series description. Text only:
    the content tree highdicom checked is otherwise unchanged."""
    known = check_lang(lang)
    adv = advisory(known)
    said = text(known, "retraction.description", name=model, version=version)
    for item in kos.get("ContentSequence", []):
        codes = item.get("ConceptNameCodeSequence", [])
        if codes and str(codes[0].CodeValue) == _KEY_OBJECT_DESCRIPTION:
            item.TextValue = f"{adv.banner}. {said}"[:1024]
    series = text(known, "retraction.series", name=model, version=version)
    kos.SeriesDescription = f"{adv.series_prefix}{series}"[:64]


def _withdraw_notifications(
    store: StateStore, study_key: str, sha256: str, now: float
) -> list[str]:
    """Queue the withdrawal of each notification of the study by this model (sent or
    waiting; a dead one never arrived). Their ids, in order."""
    outbox = NotificationOutbox(store)
    rows = outbox.find(study_key=study_key, limit=100_000)
    withdrawn_ids = {retraction_id(n.notification_id) for n in rows}
    out = []
    for n in sorted(rows, key=lambda r: r.created_at):
        if n.notification_id in withdrawn_ids or n.findings == 0 or n.state == "dead":
            continue
        if not sha256 or sha256 not in n.body:  # another model's, or another run's
            continue
        rid = retraction_id(n.notification_id)
        outbox.queue(
            rid, study_key, n.target, fmt=n.format, findings=0,
            body=withdrawal(n, rid, now), now=now,
        )  # fmt: skip
        out.append(rid)
    return out
