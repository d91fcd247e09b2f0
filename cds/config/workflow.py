"""``workflow``: IHE AI Workflow (AIW-I), cds as a Task Performer of Unified Procedure
Steps over UPS-RS (``cds.workflow``). Off unless ``ups_url`` is set: nothing is asked
of, or sent to, a task manager the admin did not name.

``auth`` and ``tls`` are named as a DICOMweb destination's (``cds.destinations``):
a bearer token or a basic-auth password is read from its file at each request and
never logged.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from cds.config.types import AETitle, Seconds, _Section
from cds.destinations import WebAuth, WebTls, check_service_url


class WorkflowFilter(_Section):
    """Which SCHEDULED workitems are ours (both, when both are given)."""

    workitem_code: str | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="Scheduled Workitem Code Sequence's Code Value (e.g. an AI task code)",
    )
    station_name: str | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="Scheduled Station Name Code Sequence's Code Value",
    )


class WorkflowSettings(_Section):
    ups_url: str | None = Field(
        None,
        description="the task manager's UPS-RS service root (…/workitems below it); "
        "null: the performer is off",
    )
    performer_ae: AETitle = Field("CDS", description="our AE title as a subscriber")
    subscribe: bool = Field(
        True, description="subscribe to the worklist (global subscription); false: poll only"
    )
    poll_interval_s: Seconds = Field(5.0, description="how often the worklist is searched")
    input_timeout_s: Seconds = Field(
        1800.0,
        description="a claimed workitem whose input study has not been received and run "
        "within this many seconds is CANCELED",
    )
    timeout_s: Seconds = Field(30.0, description="connect and answer timeout of each request")
    max_claims: int = Field(4, ge=1, le=100, description="workitems in progress at once")
    auth: WebAuth | None = None
    tls: WebTls = WebTls()
    filter: WorkflowFilter = WorkflowFilter()

    @field_validator("ups_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        return None if v is None else check_service_url(v)  # as a DICOMweb destination's
