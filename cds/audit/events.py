"""What is audited, and how each act maps to the DICOM audit message schema.

Codes follow PS3.15 A.5 / IHE ATNA: EventID (DCM 1101xx) and, where the
schema has one, an EventTypeCode.
"""

from __future__ import annotations

from enum import StrEnum


class AuditOutcome(StrEnum):
    """EventOutcomeIndicator: 0 success, 4 minor, 8 serious, 12 major failure."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


class AuditEvent(StrEnum):
    APPLICATION_START = "application_start"
    APPLICATION_STOP = "application_stop"
    ASSOCIATION_ACCEPTED = "association_accepted"
    ASSOCIATION_REJECTED = "association_rejected"
    INSTANCES_RECEIVED = "instances_received"
    INSTANCES_SENT = "instances_sent"
    RESULTS_PRODUCED = "results_produced"
    FEEDBACK_GIVEN = "feedback_given"
    CONFIG_CHANGED = "config_changed"
    ROUTING_CHANGED = "routing_changed"
    MODEL_ENABLED = "model_enabled"
    MODEL_DISABLED = "model_disabled"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    ACCESS_DENIED = "access_denied"
    EXPORT = "export"
    PURGE = "purge"
    QUERY = "query"
    SECURITY_ALERT = "security_alert"
    RESULTS_RETRACTED = "results_retracted"


#: (EventID code, meaning), (EventTypeCode code, meaning) or None
ATNA_CODES: dict[AuditEvent, tuple[tuple[str, str], tuple[str, str] | None]] = {
    AuditEvent.APPLICATION_START: (
        ("110100", "Application Activity"),
        ("110120", "Application Start"),
    ),
    AuditEvent.APPLICATION_STOP: (
        ("110100", "Application Activity"),
        ("110121", "Application Stop"),
    ),
    AuditEvent.ASSOCIATION_ACCEPTED: (("110114", "User Authentication"), ("110122", "Login")),
    AuditEvent.ASSOCIATION_REJECTED: (("110114", "User Authentication"), ("110122", "Login")),
    AuditEvent.INSTANCES_RECEIVED: (("110104", "DICOM Instances Transferred"), None),
    AuditEvent.INSTANCES_SENT: (("110104", "DICOM Instances Transferred"), None),
    AuditEvent.RESULTS_PRODUCED: (("110103", "DICOM Instances Accessed"), None),
    AuditEvent.FEEDBACK_GIVEN: (("110103", "DICOM Instances Accessed"), None),
    AuditEvent.CONFIG_CHANGED: (("110113", "Security Alert"), ("110129", "Software Configuration")),
    AuditEvent.ROUTING_CHANGED: (
        ("110113", "Security Alert"),
        ("110129", "Software Configuration"),
    ),
    AuditEvent.MODEL_ENABLED: (("110113", "Security Alert"), ("110129", "Software Configuration")),
    AuditEvent.MODEL_DISABLED: (("110113", "Security Alert"), ("110129", "Software Configuration")),
    AuditEvent.LOGIN: (("110114", "User Authentication"), ("110122", "Login")),
    AuditEvent.LOGIN_FAILED: (("110114", "User Authentication"), ("110122", "Login")),
    AuditEvent.ACCESS_DENIED: (("110113", "Security Alert"), ("110127", "Emergency Override")),
    AuditEvent.EXPORT: (("110106", "Export"), None),
    AuditEvent.PURGE: (("110105", "DICOM Study Deleted"), None),
    AuditEvent.QUERY: (("110112", "Query"), None),
    AuditEvent.SECURITY_ALERT: (("110113", "Security Alert"), None),
    # a result withdrawn by an operator: its objects rejected (IOCM), as a purge deletes
    AuditEvent.RESULTS_RETRACTED: (("110103", "DICOM Instances Accessed"), None),
}
