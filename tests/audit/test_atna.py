"""Issue 7 (audit): each record renders as a DICOM audit message (PS3.15 A.5).

No XSD is at hand offline, so the test asserts what the schema requires: the
element order, EventIdentification with EventID and its attributes, one or
more ActiveParticipant with UserID/UserIsRequestor, AuditSourceIdentification
with AuditSourceID, ParticipantObjectIdentification with its ID and ID type
code; codes carry csd-code / codeSystemName / originalText.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pytest

from cds.audit import AuditEvent, AuditOutcome, AuditRecord, AuditTrail
from cds.audit.atna import to_atna
from cds.audit.events import ATNA_CODES

ORDER = [
    "EventIdentification",
    "ActiveParticipant",
    "AuditSourceIdentification",
    "ParticipantObjectIdentification",
]


def _parse(rec: AuditRecord) -> ET.Element:
    return ET.fromstring(to_atna(rec, source_id="cds@host", ae_title="CDS"))  # noqa: S314 (ours)


def _code_ok(el: ET.Element | None) -> None:
    assert el is not None
    assert el.get("csd-code")
    assert el.get("codeSystemName")
    assert el.get("originalText")


def _check_schema(root: ET.Element) -> None:
    assert root.tag == "AuditMessage"
    tags = [c.tag for c in root]
    ranks = [ORDER.index(t) for t in tags]  # unknown element -> ValueError
    assert ranks == sorted(ranks), tags
    assert tags.count("EventIdentification") == 1
    assert tags.count("AuditSourceIdentification") == 1
    assert tags.count("ActiveParticipant") >= 1
    ident = root.find("EventIdentification")
    assert ident is not None
    assert ident.get("EventActionCode") in {"C", "R", "U", "D", "E"}
    assert ident.get("EventOutcomeIndicator") in {"0", "4", "8", "12"}
    datetime.fromisoformat(ident.get("EventDateTime", ""))
    _code_ok(ident.find("EventID"))
    for p in root.findall("ActiveParticipant"):
        assert p.get("UserID")
        assert p.get("UserIsRequestor") in {"true", "false"}
        if p.get("NetworkAccessPointID"):
            assert p.get("NetworkAccessPointTypeCode") in {"1", "2"}
        for role in p.findall("RoleIDCode"):
            _code_ok(role)
    src = root.find("AuditSourceIdentification")
    assert src is not None
    assert src.get("AuditSourceID")
    for obj in root.findall("ParticipantObjectIdentification"):
        assert obj.get("ParticipantObjectID")
        _code_ok(obj.find("ParticipantObjectIDTypeCode"))
        assert next(iter(obj)).tag == "ParticipantObjectIDTypeCode"
        for d in obj.findall("ParticipantObjectDetail"):
            assert d.get("type")
            base64.b64decode(d.get("value", ""), validate=True)


def _roles(root: ET.Element) -> dict[str, str]:
    out = {}
    for p in root.findall("ActiveParticipant"):
        role = p.find("RoleIDCode")
        out[p.get("UserID", "")] = role.get("csd-code", "") if role is not None else ""
    return out


@pytest.mark.parametrize("event", list(AuditEvent))
def test_every_event_renders_a_valid_message(tmp_path: Path, event: AuditEvent) -> None:
    trail = AuditTrail(tmp_path)
    rec = trail.record(
        event,
        who="AE:PACS" if "instances" in event.value else "user:anna",
        where="10.1.2.3",
        study_key="k3y",
        outcome=AuditOutcome.MINOR_FAILURE,
        detail={"count": 3, "model": "ct-bone"},
    )
    root = _parse(rec)
    _check_schema(root)
    ident = root.find("EventIdentification")
    assert ident is not None
    event_id = ident.find("EventID")
    assert event_id is not None
    assert event_id.get("csd-code") == ATNA_CODES[event][0][0]
    assert ident.get("EventOutcomeIndicator") == "4"


def test_received_instances_name_the_sender_as_source_and_the_node_as_destination(
    tmp_path: Path,
) -> None:
    rec = AuditTrail(tmp_path).record(
        AuditEvent.INSTANCES_RECEIVED, who="AE:ORTHANC", where="10.1.2.3:4242", study_key="abc"
    )
    root = _parse(rec)
    assert _roles(root) == {"AE:ORTHANC": "110153", "AE:CDS": "110152"}
    sender = root.find("ActiveParticipant")
    assert sender is not None
    assert sender.get("NetworkAccessPointID") == "10.1.2.3"
    assert sender.get("NetworkAccessPointTypeCode") == "2"
    obj = root.find("ParticipantObjectIdentification")
    assert obj is not None
    assert obj.get("ParticipantObjectID") == "abc"  # the pseudonymous key, nothing else


def test_sent_instances_name_the_node_as_source(tmp_path: Path) -> None:
    rec = AuditTrail(tmp_path).record(
        AuditEvent.INSTANCES_SENT,
        who="system",
        where="pacs.example.org:104",
        study_key="abc",
        detail={"destination": "pacs", "objects": 4},
    )
    root = _parse(rec)
    _check_schema(root)
    assert _roles(root) == {"AE:CDS": "110153", "pacs": "110152"}
    dest = root.findall("ActiveParticipant")[1]
    assert dest.get("NetworkAccessPointID") == "pacs.example.org"
    assert dest.get("NetworkAccessPointTypeCode") == "1"


def test_system_acts_name_the_application(tmp_path: Path) -> None:
    rec = AuditTrail(tmp_path).record(AuditEvent.APPLICATION_START, who="system")
    root = _parse(rec)
    _check_schema(root)
    assert _roles(root) == {"AE:CDS": "110150"}
    ident = root.find("EventIdentification")
    assert ident is not None
    type_code = ident.find("EventTypeCode")
    assert type_code is not None
    assert type_code.get("csd-code") == "110120"
