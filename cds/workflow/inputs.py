"""Where a workitem's input study stands on this node, read from the state store by
its Study Instance UID (the store knows it by its pseudonymous key): not received
yet, received and waiting or running, or finished with the result objects it made
and the destinations each reached. Nothing here changes the store or the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cds.destinations import DicomWebDestination
from cds.domain import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    ResultObject,
    ResultState,
    StudyDetail,
    StudyState,
)
from cds.workflow.dataset import OutputRef

#: jobs that will not change again
_JOB_FINAL = (JobState.DONE, JobState.PARTIAL, JobState.FAILED, JobState.SKIPPED,
              JobState.CANCELLED)  # fmt: skip
_JOB_MADE = (JobState.DONE, JobState.PARTIAL)


class StudyReader(Protocol):
    """The store's roles this module reads (``StudyStore``, ``JobStore``, ``Outbox``)."""

    def get_study(self, study_key: str) -> StudyDetail | None: ...

    def list_jobs(
        self, study_key: str | None = None, state: JobState | None = None, limit: int = 100
    ) -> list[Job]: ...

    def list_results(self, study_key: str) -> list[ResultObject]: ...

    def list_deliveries(
        self,
        study_key: str | None = None,
        state: DeliveryState | None = None,
        destination: str | None = None,
        limit: int = 100,
    ) -> list[Delivery]: ...


@dataclass(frozen=True, slots=True)
class InputStatus:
    """What the node says of a workitem's input study now."""

    received: bool
    finished: bool  # routed, every job ended, every delivery tried to its end
    progress: float  # percent
    description: str  # in words, never a data value
    failure: str | None = None  # finished without any result: why (a model error, ...)
    outputs: tuple[OutputRef, ...] = ()


def input_status(  # noqa: PLR0911 (one return per stage the study can be at)
    store: StudyReader,
    study_key: str,
    series_uids: tuple[str, ...],
    destinations: Mapping[str, object],
) -> InputStatus:
    """The input study ``study_key`` as the performer reports it (``series_uids``:
    only the results made from these series count, when given)."""
    detail = store.get_study(study_key)
    if detail is None or detail.summary.instance_count == 0:
        return InputStatus(False, False, 0.0, "waiting for the input study")
    state = detail.summary.state
    if state in (StudyState.RECEIVING, StudyState.COMPLETE):
        return InputStatus(True, False, 10.0, f"input study {state.value}")
    jobs = store.list_jobs(study_key=study_key, limit=1000)
    if state == StudyState.PROCESSING or any(j.state not in _JOB_FINAL for j in jobs):
        ended = sum(1 for j in jobs if j.state in _JOB_FINAL)
        share = 20.0 + 60.0 * ended / len(jobs) if jobs else 20.0
        return InputStatus(True, False, share, f"analysing: {ended} of {len(jobs)} job(s) done")
    if state == StudyState.PURGED:
        return InputStatus(True, True, 0.0, "purged", failure="the input study was purged")
    results = [
        r
        for r in store.list_results(study_key)
        if r.state == ResultState.CURRENT
        and (not series_uids or r.source_series_uid in series_uids)
    ]
    made = [j for j in jobs if j.state in _JOB_MADE]
    if state == StudyState.DONE and not jobs:
        return InputStatus(True, True, 0.0, "not analysed",
                           failure="no routing rule sends the input study to a model")  # fmt: skip
    if state == StudyState.FAILED or (jobs and not made):
        why = next((j.error for j in jobs if j.error), None) or "the study failed"
        return InputStatus(True, True, 0.0, "failed", failure=f"model error: {why}")
    mine = {r.sop_uid for r in results}
    deliveries = [
        d for d in store.list_deliveries(study_key=study_key, limit=100_000) if d.sop_uid in mine
    ]
    if any(d.state == DeliveryState.PENDING for d in deliveries):
        pending = sum(1 for d in deliveries if d.state == DeliveryState.PENDING)
        return InputStatus(True, False, 90.0, f"delivering: {pending} object(s) to send")
    return InputStatus(
        True,
        True,
        100.0,
        f"{len(results)} result object(s)",
        outputs=tuple(_refs(results, deliveries, destinations)),
    )


def _refs(
    results: list[ResultObject], deliveries: list[Delivery], destinations: Mapping[str, object]
) -> list[OutputRef]:
    """Each result with where it was delivered: a DIMSE destination's AE title, a
    DICOMweb destination's service root."""
    reached: dict[str, list[str]] = {}
    for d in deliveries:
        if d.state == DeliveryState.DELIVERED:
            reached.setdefault(d.sop_uid, []).append(d.destination)
    out = []
    for r in sorted(results, key=lambda r: (r.series_uid, r.sop_uid)):
        aes: list[str] = []
        urls: list[str] = []
        for name in sorted(reached.get(r.sop_uid, [])):
            dest = destinations.get(name)
            if isinstance(dest, DicomWebDestination):
                urls.append(dest.url)
            elif dest is not None and isinstance(ae := getattr(dest, "ae_title", None), str):
                aes.append(ae)
        out.append(
            OutputRef(r.study_uid, r.series_uid, r.sop_class_uid, r.sop_uid, tuple(aes),
                      tuple(urls))
        )  # fmt: skip
    return out


#: what the performer is handed to read a study: (study key, series) -> InputStatus
InputReader = Callable[[str, tuple[str, ...]], InputStatus]
