"""Small immutable records handed between stages (and to the store).

They carry DICOM UIDs and technical attributes only: never patient names,
IDs, birth dates or accession numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class StudyState(enum.StrEnum):
    """Life cycle of a study on the node.

    receiving -> complete (quiet time elapsed) -> processing -> done | failed.
    A late instance moves a study in any later state back to receiving
    (``reopened_count`` goes up) so that later stages re-run it.

    An admin may purge a study from the spool (``cds studies purge``): its files
    and instance records go, the study row and its history stay (``purged``).
    An instance re-sent after that re-opens it like any late instance.
    """

    RECEIVING = "receiving"
    COMPLETE = "complete"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    PURGED = "purged"


class JobState(enum.StrEnum):
    """queued -> running -> done | partial | failed | skipped; queued or running -> cancelled.

    ``partial``: some of the job's result objects were made (and delivered), others
    not, each with its reason (``Job.objects``); an admin retries it as a failed job.

    ``cancelled`` is final: the store keeps a cancelled job cancelled whatever
    a worker reports afterwards, so the worker sees the cancellation (in the job
    ``set_job_state`` returns) at its next step.
    """

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class StoreOutcome(enum.StrEnum):
    """What recording an instance did."""

    NEW = "new"  # first time this SOP Instance UID is seen
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes: nothing changes
    REPLACED = "replaced"  # same SOP Instance UID, other bytes: newest wins, old kept


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One received, durably spooled SOP instance."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    series_number: int | None
    study_key: str  # pseudonymous key, safe for logs
    path: str  # relative to the spool root
    size: int
    sha256: str  # of the data set bytes as received
    calling_ae: str
    received_at: float  # epoch seconds
    quiet_time_s: float  # completeness quiet time that applies to this sender


@dataclass(frozen=True, slots=True)
class RecordResult:
    outcome: StoreOutcome
    study_key: str
    reopened: bool  # the study had completed and is receiving again
    version: int


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    series_uid: str
    modality: str
    series_number: int | None
    instance_count: int
    first_received_at: float
    last_received_at: float


@dataclass(frozen=True, slots=True)
class StudySummary:
    study_key: str
    study_uid: str
    state: StudyState
    series_count: int
    instance_count: int
    modalities: tuple[str, ...]
    calling_ae: str
    first_received_at: float
    last_received_at: float
    complete_due_at: float | None
    completed_at: float | None
    reopened_count: int
    updated_at: float
    received_by: tuple[str, ...] = ()  # the nodes (node.name) that received its instances


@dataclass(frozen=True, slots=True)
class StudyDetail:
    summary: StudySummary
    series: tuple[SeriesSummary, ...]
    events: tuple[StudyEvent, ...]


@dataclass(frozen=True, slots=True)
class StudyEvent:
    """One line of a study's history (received, completed, reopened, ...)."""

    at: float
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class ObjectOutcome:
    """What became of one result object a job was to make (issue 16).

    ``made``, or not: ``failed`` when its encoder raised (the job is then partial, or
    failed when nothing was made), else there was nothing to encode (a SEG without a
    positive mask). ``reason`` is in words, never a data value (``errors.safe_message``);
    for an object made, what of the source attributes was not copied as it was
    (``cds.results.copied``), if anything.
    """

    kind: str  # SR, SEG, GSPS, SC
    made: bool
    failed: bool = False
    reason: str = ""

    @property
    def text(self) -> str:
        """``GSPS not made: <reason>``, or ``SR made``."""
        if self.made:
            return f"{self.kind} made" + (f" ({self.reason})" if self.reason else "")
        return f"{self.kind} not made: {self.reason}"


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    study_key: str
    kind: str
    state: JobState
    created_at: float
    updated_at: float
    attempts: int
    error: str | None
    started_at: float | None = None  # latest move to running
    finished_at: float | None = None  # move to done, partial, failed, skipped or cancelled
    objects: tuple[ObjectOutcome, ...] = ()  # as the job ended (schema 7)
    claimed_by: str | None = None  # the node (node.name) that ran it (schema 9)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How much work waits, for the admin's queue view."""

    jobs_queued: int
    jobs_running: int
    oldest_queued_at: float | None  # created_at of the oldest queued job
    studies_receiving: int
    studies_complete_waiting: int  # complete, not yet picked up by processing
    deliveries_pending: int = 0  # result objects waiting to be sent (or retried)
    deliveries_dead: int = 0  # gave up after the last try: the admin's to retry
    oldest_pending_delivery_at: float | None = None


@dataclass(frozen=True, slots=True)
class ResultRef:
    """Where one result object sits in the DICOM model: enough to reference it from a
    later SR (Predecessor Documents) or to withdraw it (IOCM rejection KOS)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str


class ResultState(enum.StrEnum):
    """A result object is ``current`` until a newer run on the same inputs replaces it
    (``superseded``: withdrawn by a rejection note), or an operator withdraws it
    (``retracted``: ``cds results retract``). A ``rejection`` is that note."""

    CURRENT = "current"
    SUPERSEDED = "superseded"
    REJECTION = "rejection"
    RETRACTED = "retracted"


@dataclass(frozen=True, slots=True)
class ResultObject:
    """One result object the node wrote (under the results folder) for a study."""

    sop_uid: str
    study_key: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    modality: str
    path: str  # relative to the results folder
    job_kind: str  # "<pipeline>:<model>" of the job that made it
    source_series_uid: str  # the input series ("" for a rejection note)
    model_version: str
    inputs_seed: str  # digest of the input SOP Instance UIDs (see pipeline.inputs_seed)
    state: ResultState
    created_at: float
    superseded_at: float | None = None

    @property
    def ref(self) -> ResultRef:
        return ResultRef(self.study_uid, self.series_uid, self.sop_uid, self.sop_class_uid)


class DeliveryState(enum.StrEnum):
    """pending -> delivered | dead; dead -> pending when the admin retries;
    pending -> cancelled when its object was superseded before it left."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One result object to one configured destination (the outbox row)."""

    delivery_id: str
    study_key: str
    sop_uid: str
    sop_class_uid: str
    modality: str
    path: str  # relative to the results folder
    destination: str  # the routing file's destination name
    state: DeliveryState
    attempts: int
    last_error: str | None
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    delivered_at: float | None
    priority: int = 0  # the routing rule's: higher goes out first
    claimed_by: str | None = None  # the node (node.name) that last took it to send (schema 9)


@dataclass(frozen=True, slots=True)
class FindingRecord:
    """One finding of one result, as the radiologist reviews it (a measurement group of
    the SR, keyed by its Tracking Unique Identifier)."""

    tracking_uid: str
    result_sop_uid: str  # the SR that reports it (or the first object when no SR was made)
    study_key: str
    job_kind: str
    model: str
    version: str
    sha256: str
    label_scheme: str
    label_value: str
    label_meaning: str
    display_en: str
    display_fr: str
    present: bool
    score: float
    created_at: float


class FeedbackAction(enum.StrEnum):
    """What a radiologist (or the PACS on their behalf) said of a finding."""

    ACCEPT = "accept"
    REJECT = "reject"
    CORRECT = "correct"


@dataclass(frozen=True, slots=True)
class ImageBox:
    """A rectangle on one source image, in its pixels: x along columns, y along rows,
    with DICOM's (0, 0) at the top-left corner of the top-left pixel (as an SR SCOORD)."""

    sop_uid: str
    frame: int  # 1-based, as DICOM counts frames
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True, slots=True)
class Feedback:
    """One appended feedback record: it never changes the result it is about."""

    feedback_id: str
    tracking_uid: str
    result_sop_uid: str
    study_key: str
    action: FeedbackAction
    reason: str
    corrected_scheme: str | None  # the label the radiologist put instead (correct)
    corrected_value: str | None
    corrected_meaning: str | None
    who: str  # user name as given, or "AE:<calling AE>" for DICOM-native feedback
    source: str  # review | api | dicom
    at: float
    model: str
    version: str
    sha256: str
    # the outline the radiologist drew instead (correct), e.g. a box resized in the viewer
    corrected_box: ImageBox | None = None


# --- the observatory's records, kept by the store (no patient attribute, no UID) ---


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One model run on one series: what went in (headers) and what came out (scores)."""

    run_key: str  # digest of series UID, model and version: re-runs replace, never add
    at: float
    model: str
    version: str
    provider: str
    seconds: float  # inference time (the model's own figure)
    images: int
    modality: str
    body_part: str
    manufacturer: str
    scanner_model: str
    protocol: str
    slice_thickness: float | None  # mm
    kvp: float | None
    pixel_spacing: float | None  # mm, the row spacing (PixelSpacing, else ImagerPixelSpacing)
    scores: dict[str, float] = field(default_factory=dict)  # label code value -> score


@dataclass(frozen=True, slots=True)
class HistogramRow:
    labels: tuple[str, ...]
    cumulative: tuple[int, ...]  # observations <= each bound of BUCKETS, in order
    count: int
    total: float


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Counts the store holds, grouped by low-cardinality labels only."""

    instances_stored: int = 0  # current instance records
    instances_received: dict[str, int] = field(default_factory=dict)  # outcome -> count
    jobs: dict[tuple[str, ...], int] = field(default_factory=dict)  # (kind, state)
    results: dict[tuple[str, ...], int] = field(default_factory=dict)  # (kind, state)
    deliveries: dict[tuple[str, ...], int] = field(default_factory=dict)  # (destination, state)
    delivery_failed_attempts: dict[str, int] = field(default_factory=dict)  # destination
    findings: dict[tuple[str, ...], int] = field(default_factory=dict)  # model, version,
    # present ("true" / "false")
    feedback: dict[tuple[str, ...], int] = field(default_factory=dict)  # model, version,
    # action
    histograms: dict[str, list[HistogramRow]] = field(default_factory=dict)
