"""The interface every state store implements."""

from __future__ import annotations

from typing import Protocol

from cds.domain import (
    InstanceRecord,
    Job,
    JobState,
    RecordResult,
    StudyDetail,
    StudyState,
    StudySummary,
)


class StateStore(Protocol):
    """Durable state of the node. Implementations must be safe to call from many threads."""

    def ping(self) -> bool:
        """True when the store answers a trivial query."""
        ...

    def close(self) -> None: ...

    # --- instances -------------------------------------------------------
    def find_instance(self, sop_uid: str) -> tuple[str, str] | None:
        """(sha256, path) of the current version of an instance, if known."""
        ...

    def record_instance(self, rec: InstanceRecord) -> RecordResult:
        """Record a durably spooled instance, applying the duplicate policy:

        - unknown SOP Instance UID: NEW;
        - same UID, same sha256: DUPLICATE, nothing changes;
        - same UID, other sha256: REPLACED, the new version becomes current and
          the old one is kept in the version history.

        A study past ``receiving`` goes back to ``receiving`` (reopened) on NEW
        or REPLACED. Its completeness deadline moves to received_at + quiet time.
        """
        ...

    def known_paths(self) -> set[str]:
        """Spool paths of every recorded version (current and superseded)."""
        ...

    # --- studies ---------------------------------------------------------
    def list_studies(
        self, state: StudyState | None = None, limit: int = 100, offset: int = 0
    ) -> list[StudySummary]: ...

    def get_study(self, study_key: str) -> StudyDetail | None: ...

    def studies_due(self, now: float) -> list[str]:
        """Keys of studies still receiving whose quiet time has elapsed."""
        ...

    def complete_study(self, study_key: str, now: float) -> bool:
        """receiving -> complete, if still due at ``now``; False if it moved on."""
        ...

    def set_study_state(
        self, study_key: str, state: StudyState, detail: str = "", now: float | None = None
    ) -> None: ...

    def count_studies_by_state(self) -> dict[StudyState, int]: ...

    # --- jobs ------------------------------------------------------------
    def create_job(self, study_key: str, kind: str, now: float | None = None) -> Job: ...

    def set_job_state(
        self, job_id: str, state: JobState, error: str | None = None, now: float | None = None
    ) -> Job: ...

    def list_jobs(
        self, study_key: str | None = None, state: JobState | None = None, limit: int = 100
    ) -> list[Job]: ...
