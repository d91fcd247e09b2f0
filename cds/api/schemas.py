"""Response models of the HTTP API (they shape the OpenAPI document)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from cds.admin import PurgeResult, job_timings
from cds.domain import (
    Delivery,
    DeliveryState,
    Feedback,
    FeedbackAction,
    FindingRecord,
    ImageBox,
    Job,
    JobState,
    ObjectOutcome,
    QueueStats,
    ResultObject,
    ResultState,
    SeriesSummary,
    StudyDetail,
    StudyEvent,
    StudyState,
    StudySummary,
)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class SeriesOut(BaseModel):
    series_instance_uid: str
    modality: str
    series_number: int | None
    instance_count: int
    first_received_at: datetime
    last_received_at: datetime

    @classmethod
    def of(cls, s: SeriesSummary) -> SeriesOut:
        return cls(
            series_instance_uid=s.series_uid,
            modality=s.modality,
            series_number=s.series_number,
            instance_count=s.instance_count,
            first_received_at=_ts(s.first_received_at),
            last_received_at=_ts(s.last_received_at),
        )


class StudyOut(BaseModel):
    study_key: str = Field(description="pseudonymous key of the study on this node")
    study_instance_uid: str
    state: StudyState
    series_count: int
    instance_count: int
    modalities: list[str]
    calling_ae_title: str = Field(description="sender of the latest instance")
    first_received_at: datetime
    last_received_at: datetime
    complete_due_at: datetime | None = Field(
        description="when the quiet time elapses, while receiving"
    )
    completed_at: datetime | None
    reopened_count: int = Field(description="times late instances re-opened the study")
    received_by: list[str] = Field(
        default_factory=list, description="the nodes (node.name) that received its instances"
    )

    @classmethod
    def of(cls, s: StudySummary) -> StudyOut:
        return cls(
            study_key=s.study_key,
            study_instance_uid=s.study_uid,
            state=s.state,
            series_count=s.series_count,
            instance_count=s.instance_count,
            modalities=list(s.modalities),
            calling_ae_title=s.calling_ae,
            first_received_at=_ts(s.first_received_at),
            last_received_at=_ts(s.last_received_at),
            complete_due_at=_ts(s.complete_due_at),
            completed_at=_ts(s.completed_at),
            reopened_count=s.reopened_count,
            received_by=list(s.received_by),
        )


class EventOut(BaseModel):
    at: datetime
    kind: str
    detail: str

    @classmethod
    def of(cls, e: StudyEvent) -> EventOut:
        return cls(at=_ts(e.at), kind=e.kind, detail=e.detail)


class StudyDetailOut(StudyOut):
    series: list[SeriesOut]
    history: list[EventOut]

    @classmethod
    def of_detail(cls, d: StudyDetail) -> StudyDetailOut:
        base = StudyOut.of(d.summary).model_dump()
        return cls(
            **base,
            series=[SeriesOut.of(s) for s in d.series],
            history=[EventOut.of(e) for e in d.events],
        )


class Problem(BaseModel):
    detail: str


# --- admin: jobs, queue, purge -------------------------------------------------
class ObjectOutcomeOut(BaseModel):
    kind: str = Field(description="SR, SEG, GSPS or SC")
    made: bool
    failed: bool = Field(description="not made because its encoder failed (the job is partial)")
    reason: str = Field(
        description="why it was not made, in words (never a data value); for an object "
        "made, the source attributes not copied as they were, if any"
    )

    @classmethod
    def of(cls, o: ObjectOutcome) -> ObjectOutcomeOut:
        return cls(kind=o.kind, made=o.made, failed=o.failed, reason=o.reason)


class JobOut(BaseModel):
    job_id: str
    study_key: str
    kind: str = Field(description="what the job runs, e.g. 'pipeline:model'")
    state: JobState = Field(
        description="partial: some result objects were made and delivered, others not "
        "(see objects); retried as a failed job"
    )
    attempts: int = Field(description="times the job started running")
    error: str | None = Field(
        description="why it failed, or which objects a partial job did not make"
    )
    objects: list[ObjectOutcomeOut] = Field(
        default_factory=list, description="what became of each result object, as the job ended"
    )
    created_at: datetime = Field(description="when it was queued")
    started_at: datetime | None = Field(description="its latest start")
    finished_at: datetime | None
    updated_at: datetime
    waited_s: float | None = Field(description="seconds queued before starting (so far)")
    ran_s: float | None = Field(description="seconds running (so far)")
    node: str | None = Field(None, description="the node (node.name) that ran it")

    @classmethod
    def of(cls, j: Job, now: float) -> JobOut:
        waited, ran = job_timings(j, now)
        return cls(
            job_id=j.job_id,
            study_key=j.study_key,
            kind=j.kind,
            state=j.state,
            attempts=j.attempts,
            error=j.error,
            objects=[ObjectOutcomeOut.of(o) for o in j.objects],
            created_at=_ts(j.created_at),
            started_at=_ts(j.started_at),
            finished_at=_ts(j.finished_at),
            updated_at=_ts(j.updated_at),
            waited_s=None if waited is None else round(waited, 3),
            ran_s=None if ran is None else round(ran, 3),
            node=j.claimed_by,
        )


class WorkerOut(BaseModel):
    """One worker of the executor, as the node sees it (and as it says, for Ray actors)."""

    model_config = ConfigDict(extra="allow")  # a Ray actor adds pid, host, loaded

    worker: str = Field(description="'node threads', 'process pool (N processes)' or 'actor N'")
    kind: str = Field(description="executor.kind: thread, process or ray")
    in_flight: int = Field(description="works sent and not yet back")
    done: int
    failed: int
    busy_seconds: float = Field(description="time with work in flight, summed over works")
    models: list[str] = Field(description="the models it was sent work for")


class QueueOut(BaseModel):
    jobs_queued: int
    jobs_running: int
    oldest_queued_age_s: float | None = Field(
        description="seconds the oldest queued job has waited; null when none is queued"
    )
    studies_receiving: int
    studies_complete_waiting: int = Field(
        description="complete studies that processing has not picked up yet"
    )
    deliveries_pending: int = Field(description="result objects waiting to be sent or retried")
    deliveries_dead: int = Field(description="deliveries that gave up: retry them by hand")
    oldest_pending_delivery_age_s: float | None = Field(
        description="seconds the oldest pending delivery has waited; null when none"
    )

    @classmethod
    def of(cls, q: QueueStats, now: float) -> QueueOut:
        age = None if q.oldest_queued_at is None else round(max(now - q.oldest_queued_at, 0.0), 3)
        return cls(
            jobs_queued=q.jobs_queued,
            jobs_running=q.jobs_running,
            oldest_queued_age_s=age,
            studies_receiving=q.studies_receiving,
            studies_complete_waiting=q.studies_complete_waiting,
            deliveries_pending=q.deliveries_pending,
            deliveries_dead=q.deliveries_dead,
            oldest_pending_delivery_age_s=None
            if q.oldest_pending_delivery_at is None
            else round(max(now - q.oldest_pending_delivery_at, 0.0), 3),
        )


class DeliveryOut(BaseModel):
    delivery_id: str
    study_key: str
    sop_instance_uid: str = Field(description="the result object sent")
    sop_class_uid: str
    modality: str = Field(description="SR, SEG, PR, OT/SC or KO (a rejection note)")
    destination: str = Field(description="the routing file's destination name")
    state: DeliveryState
    attempts: int
    last_error: str | None = Field(description="why the last try failed")
    next_attempt_at: datetime | None = Field(description="when a pending delivery is tried")
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(
            delivery_id=d.delivery_id,
            study_key=d.study_key,
            sop_instance_uid=d.sop_uid,
            sop_class_uid=d.sop_class_uid,
            modality=d.modality,
            destination=d.destination,
            state=d.state,
            attempts=d.attempts,
            last_error=d.last_error,
            next_attempt_at=_ts(d.next_attempt_at),
            created_at=_ts(d.created_at),
            delivered_at=_ts(d.delivered_at),
        )


class RequeuedOut(BaseModel):
    study_key: str
    job_id: str | None = Field(description="the failed job retried (null for a re-run)")
    detail: str


class PurgeOut(BaseModel):
    study_key: str
    purged: bool = Field(
        description="false when instances arrived during the purge: they were kept"
    )
    files_removed: int
    instances: int
    superseded_versions: int
    unrecorded_files: int = Field(description="files in its folder the store did not know")
    jobs_cancelled: list[str]

    @classmethod
    def of(cls, r: PurgeResult) -> PurgeOut:
        return cls(
            study_key=r.study_key,
            purged=r.purged,
            files_removed=r.files_removed,
            instances=r.instances,
            superseded_versions=r.superseded_versions,
            unrecorded_files=r.unrecorded_files,
            jobs_cancelled=list(r.jobs_cancelled),
        )


class ResultOut(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    modality: str = Field(description="SR, SEG, PR, OT (secondary capture) or KO")
    state: ResultState = Field(
        description="current; superseded (a newer run replaced it); rejection (the note "
        "that withdraws superseded objects)"
    )
    pipeline: str = Field(description="<pipeline>:<model> that made it")
    model_version: str
    source_series_instance_uid: str
    created_at: datetime
    superseded_at: datetime | None
    deliveries: list[DeliveryOut]

    @classmethod
    def of(cls, r: ResultObject, deliveries: list[Delivery]) -> ResultOut:
        return cls(
            sop_instance_uid=r.sop_uid,
            series_instance_uid=r.series_uid,
            sop_class_uid=r.sop_class_uid,
            modality=r.modality,
            state=r.state,
            pipeline=r.job_kind,
            model_version=r.model_version,
            source_series_instance_uid=r.source_series_uid,
            created_at=_ts(r.created_at),
            superseded_at=_ts(r.superseded_at),
            deliveries=[DeliveryOut.of(d) for d in deliveries if d.sop_uid == r.sop_uid],
        )


class CodeIn(BaseModel):
    scheme: str = Field(min_length=1, max_length=16, description="e.g. SCT, RADLEX, 99LOCAL")
    value: str = Field(min_length=1, max_length=64)
    meaning: str = Field(min_length=1, max_length=64)


class FeedbackIn(BaseModel):
    action: FeedbackAction
    user: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="who, while authentication is off; with it on, the signed-in user "
        "(user:<name>) is recorded and this is ignored",
    )
    reason: str = Field("", max_length=2000, description="free text, e.g. why it is rejected")
    corrected_label: CodeIn | None = Field(
        None, description="for 'correct': the finding the radiologist puts instead"
    )


class BoxOut(BaseModel):
    """A rectangle on a source image, in its pixels: x along columns, y along rows,
    (0, 0) at the top-left corner of the top-left pixel (as DICOM SR coordinates)."""

    sop_instance_uid: str
    frame: int
    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def of(cls, b: ImageBox) -> BoxOut:
        return cls(sop_instance_uid=b.sop_uid, frame=b.frame, x0=b.x0, y0=b.y0, x1=b.x1, y1=b.y1)


class FeedbackOut(BaseModel):
    feedback_id: str
    tracking_uid: str
    result_sop_instance_uid: str
    study_key: str
    action: FeedbackAction
    reason: str
    corrected_label: CodeIn | None
    corrected_box: BoxOut | None = Field(
        None, description="for 'correct': the outline the radiologist drew instead"
    )
    user: str
    source: str = Field(description="review (page), api or dicom")
    at: datetime
    model: str
    model_version: str
    model_sha256: str

    @classmethod
    def of(cls, f: Feedback) -> FeedbackOut:
        corrected = (
            CodeIn(scheme=f.corrected_scheme, value=f.corrected_value, meaning=f.corrected_meaning)
            if f.corrected_scheme and f.corrected_value and f.corrected_meaning
            else None
        )
        return cls(
            feedback_id=f.feedback_id,
            tracking_uid=f.tracking_uid,
            result_sop_instance_uid=f.result_sop_uid,
            study_key=f.study_key,
            action=f.action,
            reason=f.reason,
            corrected_label=corrected,
            corrected_box=BoxOut.of(f.corrected_box) if f.corrected_box is not None else None,
            user=f.who,
            source=f.source,
            at=_ts(f.at),
            model=f.model,
            model_version=f.version,
            model_sha256=f.sha256,
        )


class FindingOut(BaseModel):
    tracking_uid: str
    result_sop_instance_uid: str
    pipeline: str
    model: str
    model_version: str
    model_sha256: str
    label: CodeIn
    display_en: str
    display_fr: str
    present: bool
    score: float
    created_at: datetime
    verdict: FeedbackAction | None = Field(description="the latest feedback's action, if any")
    feedback: list[FeedbackOut]

    @classmethod
    def of(cls, f: FindingRecord, feedback: list[Feedback]) -> FindingOut:
        mine = [FeedbackOut.of(x) for x in feedback if x.tracking_uid == f.tracking_uid]
        return cls(
            tracking_uid=f.tracking_uid,
            result_sop_instance_uid=f.result_sop_uid,
            pipeline=f.job_kind,
            model=f.model,
            model_version=f.version,
            model_sha256=f.sha256,
            label=CodeIn(scheme=f.label_scheme, value=f.label_value, meaning=f.label_meaning[:64]),
            display_en=f.display_en,
            display_fr=f.display_fr,
            present=f.present,
            score=f.score,
            created_at=_ts(f.created_at),
            verdict=mine[-1].action if mine else None,
            feedback=mine,
        )
