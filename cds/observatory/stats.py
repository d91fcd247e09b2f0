"""Statistics per model and version, over time windows, from the state store.

Everything is read through the store's roles (``RecordsStore``, ``load_records``), so any
store implementation serves; the figures are computed here, in plain Python
(``model_stats``), exactly and in UTC.

What each figure counts (a row is one model, one version, one time window):

- ``studies``: studies with at least one result object of that model version
  (current or superseded; rejection notes do not count). A study falls in the
  window of its first such result.
- ``findings``: findings of that model version created in the window;
  ``positives`` those reported present; ``positive_rate`` = positives / findings.
- ``reviewed``: those findings with at least one feedback record, whenever it
  was given (feedback is counted as known when the figures are computed).
  ``accepted`` / ``corrected`` / ``rejected``: reviewed findings whose current
  verdict (their latest feedback record, as in the store) is that action; their
  rates are over ``reviewed``; ``reviewed_rate`` = reviewed / findings.
  ``feedback_records``: every record on those findings (a finding may have several).
- ``median_time_to_feedback_s``: over reviewed findings, first feedback time minus
  the finding's creation time.
- ``time_to_result_s``: per study, its first result of that version made at or after
  the study completed (``completed_at``, the end of its quiet time) minus
  ``completed_at``; ``job_run_time_s``: finished minus started of the jobs that ran
  that version to completion (state done; a job is tied to a version by the result
  objects it recorded while it ran), in the window of their finish.
- Percentiles (p50, p90, p99) and medians interpolate linearly between the two
  nearest ranks (numpy's default; the p50 is the median).
- ``score_histogram``: findings per tenth of the score, [0, 0.1) ... [0.9, 1.0]
  (scores outside [0, 1] count in the first or last bin).

A rate whose denominator is 0, and a percentile of nothing, is ``None``.
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from cds.domain import (
    Feedback,
    FeedbackAction,
    FindingRecord,
    Job,
    JobState,
    ResultObject,
    ResultState,
)
from cds.store.base import FeedbackStore, JobStore, Outbox, StudyStore
from cds.store.retractions import Retraction, RetractionLog

HISTOGRAM_BINS = 10
_PAGE = 500
_ALL = 1 << 62  # "no limit" for the store's list methods


class Bucket(enum.StrEnum):
    """The time windows rows are grouped by (UTC); ``all``: one window, the whole range."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class Records:
    """What the statistics read: every study's completion time, result object, job,
    finding and feedback record."""

    completed_at: dict[str, float | None]  # study key -> when it completed
    results: list[ResultObject]
    jobs: list[Job]
    findings: list[FindingRecord]
    feedback: list[Feedback]
    retractions: list[Retraction] = field(default_factory=list)  # results withdrawn


class RecordsStore(StudyStore, Outbox, JobStore, FeedbackStore, Protocol):
    """What the statistics read of the state store: studies, results, jobs, findings
    and feedback (no instance, no run)."""


def load_records(store: RecordsStore) -> Records:
    """Read everything the statistics need through the store's roles."""
    completed: dict[str, float | None] = {}
    offset = 0
    while page := store.list_studies(limit=_PAGE, offset=offset):
        for s in page:
            completed.setdefault(s.study_key, s.completed_at)
        offset += len(page)
    results: list[ResultObject] = []
    findings: list[FindingRecord] = []
    for key in completed:
        results.extend(store.list_results(key))
        findings.extend(store.list_findings(key))
    return Records(
        completed_at=completed,
        results=results,
        jobs=store.list_jobs(limit=_ALL),
        findings=findings,
        feedback=store.list_feedback(limit=_ALL),
        retractions=RetractionLog(store).all(),
    )


@dataclass(frozen=True, slots=True)
class Percentiles:
    n: int  # how many values
    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Percentiles:
        v = sorted(values)
        return cls(len(v), percentile(v, 50), percentile(v, 90), percentile(v, 99))


@dataclass(frozen=True, slots=True)
class ModelStats:
    """One model version in one time window (see the module docstring for each figure)."""

    model: str
    version: str
    sha256: tuple[str, ...]  # the model files' digests seen in its findings (usually one)
    period: str  # "2026-11-25", "2026-W48", "2026-11", or "all"
    start: float | None  # the window, [start, end) in epoch seconds (None: unbounded)
    end: float | None
    studies: int
    findings: int
    positives: int
    reviewed: int
    accepted: int
    corrected: int
    rejected: int
    feedback_records: int
    median_time_to_feedback_s: float | None
    time_to_result_s: Percentiles
    job_run_time_s: Percentiles
    score_histogram: tuple[int, ...]
    retracted: int = 0  # results withdrawn everywhere by an operator (cds results retract)

    @property
    def positive_rate(self) -> float | None:
        return ratio(self.positives, self.findings)

    @property
    def reviewed_rate(self) -> float | None:
        return ratio(self.reviewed, self.findings)

    @property
    def accept_rate(self) -> float | None:
        return ratio(self.accepted, self.reviewed)

    @property
    def correct_rate(self) -> float | None:
        return ratio(self.corrected, self.reviewed)

    @property
    def reject_rate(self) -> float | None:
        return ratio(self.rejected, self.reviewed)


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The p-th percentile of ascending values, interpolating between nearest ranks."""
    if not sorted_values:
        return None
    h = (len(sorted_values) - 1) * p / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def median(values: Iterable[float]) -> float | None:
    return percentile(sorted(values), 50)


# --- time windows ---------------------------------------------------------------------


def _day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def _epoch(d: date) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()


def iso_week(ts: float) -> str:
    """ISO 8601 week of an epoch second (UTC), as "2026-W48"."""
    y, w, _ = _day(ts).isocalendar()
    return f"{y}-W{w:02d}"


def week_start(ts: float) -> float:
    """Monday 00:00 UTC of the ISO week holding ``ts``."""
    d = _day(ts)
    return _epoch(d - timedelta(days=d.weekday()))


def window(ts: float, bucket: Bucket) -> tuple[str, float | None, float | None]:
    """(label, start, end) of the window of ``bucket`` holding ``ts``."""
    d = _day(ts)
    if bucket is Bucket.DAY:
        return d.isoformat(), _epoch(d), _epoch(d + timedelta(days=1))
    if bucket is Bucket.WEEK:
        start = week_start(ts)
        return iso_week(ts), start, start + 7 * 86400
    if bucket is Bucket.MONTH:
        first = d.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
        return f"{d.year}-{d.month:02d}", _epoch(first), _epoch(nxt)
    return "all", None, None


# --- the figures --------------------------------------------------------------------


def model_of(job_kind: str) -> str:
    """The model of a job kind "<pipeline>:<model>"."""
    return job_kind.split(":", 1)[-1]


@dataclass
class _Acc:
    sha256: set[str] = field(default_factory=set)
    studies: int = 0
    findings: int = 0
    positives: int = 0
    reviewed: int = 0
    verdicts: dict[FeedbackAction, int] = field(
        default_factory=lambda: dict.fromkeys(FeedbackAction, 0)
    )
    feedback_records: int = 0
    to_feedback: list[float] = field(default_factory=list)
    to_result: list[float] = field(default_factory=list)
    run_times: list[float] = field(default_factory=list)
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    retracted: int = 0


def _bin(score: float) -> int:
    return min(max(math.floor(score * HISTOGRAM_BINS), 0), HISTOGRAM_BINS - 1)


class _Grouper:
    def __init__(self, bucket: Bucket, since: float | None, until: float | None) -> None:
        self.bucket, self.since, self.until = bucket, since, until
        self.rows: dict[tuple[str, str, str], _Acc] = defaultdict(_Acc)
        self.windows: dict[str, tuple[float | None, float | None]] = {}

    def at(self, model: str, version: str, ts: float) -> _Acc | None:
        """The row an event at ``ts`` counts in, or None when outside [since, until)."""
        if (self.since is not None and ts < self.since) or (
            self.until is not None and ts >= self.until
        ):
            return None
        label, start, end = window(ts, self.bucket)
        if self.bucket is Bucket.ALL:
            start, end = self.since, self.until
        self.windows[label] = (start, end)
        return self.rows[(model, version, label)]


def _studies(records: Records, g: _Grouper) -> None:
    made: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in records.results:
        if r.state is not ResultState.REJECTION:
            made[(r.study_key, model_of(r.job_kind), r.model_version)].append(r.created_at)
    for (study_key, model, version), times in made.items():
        acc = g.at(model, version, min(times))
        if acc is None:
            continue
        acc.studies += 1
        completed = records.completed_at.get(study_key)
        after = [t for t in times if completed is not None and t >= completed]
        if after and completed is not None:
            acc.to_result.append(min(after) - completed)


def _jobs(records: Records, g: _Grouper) -> None:
    by_run: dict[tuple[str, str], list[ResultObject]] = defaultdict(list)
    for r in records.results:
        by_run[(r.study_key, r.job_kind)].append(r)
    for j in records.jobs:
        if j.state is not JobState.DONE or j.started_at is None or j.finished_at is None:
            continue
        versions = sorted(
            {
                r.model_version
                for r in by_run.get((j.study_key, j.kind), [])
                if j.started_at <= r.created_at <= j.finished_at
            }
        )
        for version in versions:
            acc = g.at(model_of(j.kind), version, j.finished_at)
            if acc is not None:
                acc.run_times.append(j.finished_at - j.started_at)


def _findings(records: Records, g: _Grouper) -> None:
    on: dict[str, list[Feedback]] = defaultdict(list)
    for fb in records.feedback:
        on[fb.tracking_uid].append(fb)
    for f in records.findings:
        acc = g.at(f.model, f.version, f.created_at)
        if acc is None:
            continue
        acc.sha256.add(f.sha256)
        acc.findings += 1
        acc.positives += int(f.present)
        acc.histogram[_bin(f.score)] += 1
        given = on.get(f.tracking_uid, [])
        if not given:
            continue
        ordered = sorted(enumerate(given), key=lambda ifb: (ifb[1].at, ifb[0]))
        acc.reviewed += 1
        acc.feedback_records += len(given)
        acc.verdicts[ordered[-1][1].action] += 1
        acc.to_feedback.append(ordered[0][1].at - f.created_at)


def model_stats(
    records: Records,
    bucket: Bucket = Bucket.WEEK,
    since: float | None = None,
    until: float | None = None,
) -> list[ModelStats]:
    """The figures per model, version and window of ``bucket``, for events in
    [since, until); sorted by model, version and window."""
    g = _Grouper(bucket, since, until)
    _studies(records, g)
    _jobs(records, g)
    _findings(records, g)
    for r in records.retractions:
        acc = g.at(r.model, r.version, r.retracted_at)
        if acc is not None:
            acc.retracted += 1
    out = []
    for (model, version, label), a in g.rows.items():
        start, end = g.windows[label]
        out.append(
            ModelStats(
                model=model,
                version=version,
                sha256=tuple(sorted(a.sha256)),
                period=label,
                start=start,
                end=end,
                studies=a.studies,
                findings=a.findings,
                positives=a.positives,
                reviewed=a.reviewed,
                accepted=a.verdicts[FeedbackAction.ACCEPT],
                corrected=a.verdicts[FeedbackAction.CORRECT],
                rejected=a.verdicts[FeedbackAction.REJECT],
                feedback_records=a.feedback_records,
                median_time_to_feedback_s=median(a.to_feedback),
                time_to_result_s=Percentiles.of(a.to_result),
                job_run_time_s=Percentiles.of(a.run_times),
                score_histogram=tuple(a.histogram),
                retracted=a.retracted,
            )
        )
    return sorted(out, key=lambda s: (s.model, s.version, s.start or 0.0, s.period))


def stats_dict(s: ModelStats) -> dict[str, object]:
    """A row as plain JSON-able data (counts, rates, seconds), for the API and ``--json``."""

    def pct(p: Percentiles) -> dict[str, object]:
        return {"n": p.n, "p50": p.p50, "p90": p.p90, "p99": p.p99}

    return {
        "model": s.model,
        "version": s.version,
        "sha256": list(s.sha256),
        "period": s.period,
        "start": s.start,
        "end": s.end,
        "studies": s.studies,
        "findings": s.findings,
        "positives": s.positives,
        "positive_rate": s.positive_rate,
        "reviewed": s.reviewed,
        "reviewed_rate": s.reviewed_rate,
        "accepted": s.accepted,
        "corrected": s.corrected,
        "rejected": s.rejected,
        "accept_rate": s.accept_rate,
        "correct_rate": s.correct_rate,
        "reject_rate": s.reject_rate,
        "feedback_records": s.feedback_records,
        "median_time_to_feedback_s": s.median_time_to_feedback_s,
        "time_to_result_s": pct(s.time_to_result_s),
        "job_run_time_s": pct(s.job_run_time_s),
        "score_histogram": list(s.score_histogram),
        "retracted": s.retracted,
    }


def parse_when(text: str, name: str) -> float:
    """Epoch seconds of a date ("2026-11-23", midnight UTC) or an ISO 8601 date-time
    (UTC unless it names its offset); ValueError naming ``name`` otherwise."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{name}: {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 date-time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
