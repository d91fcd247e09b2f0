"""Response models of the HTTP API (they shape the OpenAPI document)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from cds.domain import SeriesSummary, StudyDetail, StudyEvent, StudyState, StudySummary


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
