"""An audit record as a DICOM audit message (PS3.15 A.5, IHE ATNA ``AuditMessage``).

Elements in the schema's order: EventIdentification, ActiveParticipant (one or
more), AuditSourceIdentification, ParticipantObjectIdentification (the study,
by its pseudonymous study key: never a patient or DICOM identifier). Codes
use the schema's ``csd-code`` / ``codeSystemName`` / ``originalText`` attributes.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from cds.audit.events import ATNA_CODES, AuditEvent
from cds.audit.trail import AuditRecord

SOURCE = ("110153", "Source Role ID")
DESTINATION = ("110152", "Destination Role ID")
APPLICATION = ("110150", "Application")

#: EventActionCode: C create, R read, U update, D delete, E execute
ACTIONS: dict[AuditEvent, str] = {
    AuditEvent.INSTANCES_RECEIVED: "C",
    AuditEvent.RESULTS_PRODUCED: "C",
    AuditEvent.INSTANCES_SENT: "R",
    AuditEvent.EXPORT: "R",
    AuditEvent.QUERY: "E",
    AuditEvent.FEEDBACK_GIVEN: "U",
    AuditEvent.RESULTS_RETRACTED: "U",
    AuditEvent.PURGE: "D",
}
#: events where ``who`` sent to this node (it is the source, the node the destination)
INBOUND = {
    AuditEvent.ASSOCIATION_ACCEPTED,
    AuditEvent.ASSOCIATION_REJECTED,
    AuditEvent.INSTANCES_RECEIVED,
}


def _code(parent: ET.Element, tag: str, code: tuple[str, str], system: str = "DCM") -> None:
    ET.SubElement(
        parent, tag, {"csd-code": code[0], "codeSystemName": system, "originalText": code[1]}
    )


def _participant(
    msg: ET.Element,
    user: str,
    requestor: bool,
    role: tuple[str, str] | None,
    access_point: str | None = None,
) -> None:
    attrs = {"UserID": user, "UserIsRequestor": "true" if requestor else "false"}
    if access_point:
        host = _host(access_point)
        attrs["NetworkAccessPointID"] = host
        attrs["NetworkAccessPointTypeCode"] = "2" if _is_ip(host) else "1"  # IP / machine name
    p = ET.SubElement(msg, "ActiveParticipant", attrs)
    if role is not None:
        _code(p, "RoleIDCode", role)


def to_atna(rec: AuditRecord, *, source_id: str, ae_title: str, site: str = "") -> bytes:
    """The record as an ``AuditMessage`` XML document (UTF-8, with declaration).

    ``source_id`` names this node (AuditSourceID), ``ae_title`` is its DICOM AE."""
    msg = ET.Element("AuditMessage")
    event_id, type_code = ATNA_CODES[rec.event]
    ident = ET.SubElement(
        msg,
        "EventIdentification",
        {
            "EventActionCode": ACTIONS.get(rec.event, "E"),
            "EventDateTime": datetime.fromtimestamp(rec.at, UTC).isoformat(timespec="milliseconds"),
            "EventOutcomeIndicator": rec.outcome.value,
        },
    )
    _code(ident, "EventID", event_id)
    if type_code is not None:
        _code(ident, "EventTypeCode", type_code)
    node = f"AE:{ae_title}"
    if rec.event in INBOUND:
        _participant(msg, rec.who, True, SOURCE, rec.where)
        _participant(msg, node, False, DESTINATION)
    elif rec.event is AuditEvent.INSTANCES_SENT:
        _participant(msg, node, True, SOURCE)
        dest = str(rec.detail.get("destination") or rec.where or "unknown")
        _participant(msg, dest, False, DESTINATION, rec.where)
    else:
        if rec.who != "system":
            _participant(msg, rec.who, True, None, rec.where)
        _participant(msg, node, rec.who == "system", APPLICATION)
    src_attrs = {"AuditSourceID": source_id}
    if site:
        src_attrs["AuditEnterpriseSiteID"] = site
    src = ET.SubElement(msg, "AuditSourceIdentification", src_attrs)
    _code(src, "AuditSourceTypeCode", ("4", "Application Server"), "DCM")
    if rec.study_key:
        obj = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": rec.study_key,
                "ParticipantObjectTypeCode": "2",  # system object
                "ParticipantObjectTypeCodeRole": "3",  # report
            },
        )
        _code(obj, "ParticipantObjectIDTypeCode", ("study-key", "Pseudonymous study key"), "99CDS")
    else:
        obj = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": rec.event.value,
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "13",  # security resource
            },
        )
        _code(obj, "ParticipantObjectIDTypeCode", (rec.event.value, rec.event.value), "99CDS")
    ET.SubElement(
        obj, "ParticipantObjectDetail", {"type": "cds-audit-seq", "value": _b64(str(rec.seq))}
    )
    for key, value in sorted(rec.detail.items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        ET.SubElement(obj, "ParticipantObjectDetail", {"type": str(key), "value": _b64(text)})
    xml: bytes = ET.tostring(msg, encoding="utf-8", xml_declaration=True)
    return xml


def _host(access_point: str) -> str:
    """``10.1.2.3:104`` or ``pacs (PACS@10.1.2.3:104)`` -> the host part."""
    text = access_point.rsplit("@", maxsplit=1)[-1].rstrip(")").strip()
    if text.startswith("["):  # [v6]:port
        return text[1:].split("]")[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
