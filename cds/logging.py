"""Logging as a catalogue of events, through structlog.

Event names are stable and dotted by stage (``ingest.instance_stored``,
``assembly.study_complete``). Context is bound as keys such as ``study_key``
(a pseudonymous key) — never a patient's name, ID, birth date or accession
number. As a second line of defence, ``scrub_patient_data`` drops any key that
names a patient attribute and any pydicom PersonName value.

Third-party loggers (pynetdicom, uvicorn) are routed through the same
renderer; pynetdicom is held at WARNING because its INFO/DEBUG output dumps
request identifiers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
import warnings
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from pydicom.valuerep import PersonName

#: keys that must never reach a log line (compared case-insensitively, without _)
_PATIENT_KEYS = frozenset(
    k.lower().replace("_", "")
    for k in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientBirthName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "OtherPatientIDs",
        "OtherPatientNames",
        "AccessionNumber",
        "PatientMotherBirthName",
        "ReferringPhysicianName",
        "IssuerOfPatientID",
    )
)


def scrub_patient_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: remove patient attributes, whatever the caller did."""
    for key in list(event_dict):
        if key.lower().replace("_", "") in _PATIENT_KEYS or isinstance(event_dict[key], PersonName):
            event_dict[key] = "[removed]"
    return event_dict


def study_key(secret: bytes, study_uid: str) -> str:
    """A pseudonymous, stable key for a study: HMAC-SHA256 of its UID, 16 hex digits.

    Without the node's secret the key cannot be linked back to the Study
    Instance UID, so it is what logs, metrics and spool paths use.
    """
    return hmac.new(secret, study_uid.encode("ascii", "replace"), hashlib.sha256).hexdigest()[:16]


_ROUTINE_NETWORK_ERRORS = (TimeoutError, ConnectionError)


def quiet_routine_network_errors(record: logging.LogRecord) -> bool:
    """Handler filter: a peer that times out or drops the connection is routine.

    pynetdicom logs those at ERROR with a full traceback; keep one WARNING line.
    """
    if not record.name.startswith("pynetdicom"):
        return True
    exc = record.exc_info[1] if record.exc_info else None
    routine = isinstance(exc, _ROUTINE_NETWORK_ERRORS) or (
        record.getMessage() == "Connection closed before the entire PDU was received"
    )
    if routine:
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        if exc is not None:
            record.msg, record.args = f"peer connection: {type(exc).__name__}", None
    return True


def configure_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger: one line per event, to stderr by default."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        scrub_patient_data,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(quiet_routine_network_errors)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs identifiers of every request at INFO/DEBUG: keep it to problems.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom's parse warnings quote element values (a patient's name among them):
    # silence them in logs and on stderr; ingest reports problems in its own words.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    # highdicom warns with the value it checks (e.g. a PatientName it finds odd)
    warnings.filterwarnings("ignore", module=r"highdicom(\..*)?$")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
