"""The FHIR R4 DiagnosticReport an urgent finding is notified with (``cds.delivery.notify``):
which findings are urgent (``urgent_findings``), and the report (``fhir_diagnostic_report``)
with the Study Instance UID, never a patient's name, ID, birth date or accession number.
"""

from __future__ import annotations

import html
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cds.destinations import ANY_FINDING, Notify
from cds.i18n import Lang, advisory, check_lang, other, text

if TYPE_CHECKING:  # the inference stack (onnxruntime) is not needed to send
    from cds.findings import Finding, InferenceResult

#: FHIR systems of the manifest's coding schemes (PS3.16 designator -> FHIR URI)
FHIR_SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "LN": "http://loinc.org",
    "RADLEX": "http://radlex.org",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "99CDS": "urn:cds:99CDS",  # the cds private scheme (no registered URI)
}
_TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
_REPORT_NS = uuid.UUID("5b0f4f4e-6c1e-4a53-9d0b-6e3a2f1c9a10")  # namespace of report ids


# --- what is urgent ----------------------------------------------------------
def urgent_findings(spec: Notify, result: InferenceResult) -> list[Finding]:
    """Findings the model reports present that ``spec`` calls urgent: their code value
    is listed (or ``any``), and their score reaches ``min_score`` when one is set.

    A measurement is a value, not a finding: a measurement model never notifies.
    """
    if result.kind == "measurement":
        return []
    wanted = set(spec.findings)
    return [
        f
        for f in result.findings
        if f.present
        and not f.label.normal
        and (ANY_FINDING in wanted or f.label.code.value in wanted)
        and (spec.min_score is None or f.score >= spec.min_score)
    ]


# --- the FHIR R4 DiagnosticReport --------------------------------------------
def _conclusion(result: InferenceResult, findings: Sequence[Finding], lang: Lang) -> str:
    adv, rec = advisory(lang), result.record
    items = "; ".join(
        f"{f.label.display.get(lang)} ({text(lang, 'fhir.score', score=adv.number(f.score))})"
        for f in findings
    )
    made = adv.produced_by.format(name=rec.model, version=rec.version, sha256=rec.sha256)
    return f"{adv.banner}. {text(lang, 'fhir.found', items=items)} {made}."


def _coding(f: Finding, lang: str) -> dict[str, Any]:
    code = f.label.code
    return {
        "coding": [
            {"system": FHIR_SYSTEMS[code.scheme], "code": code.value, "display": code.meaning}
        ],
        "text": f.label.display.get(lang),
    }


def fhir_diagnostic_report(
    study_uid: str,
    result: InferenceResult,
    findings: Sequence[Finding],
    lang: str,
    issued: float | None = None,
) -> dict[str, Any]:
    """A FHIR R4 DiagnosticReport announcing ``findings`` of ``result`` on a study.

    - ``code`` is LOINC 18748-4 "Diagnostic imaging study": the generic imaging
      report code, true whatever the modality (a pipeline may run on CT, CR or MR,
      so a modality-specific code would often be wrong); ``category`` carries both
      LOINC LP29684-5 and HL7 v2-0074 RAD, so either kind of receiver finds
      "Radiology".
    - the study is a logical reference: ``imagingStudy`` by identifier
      ``urn:dicom:uid`` / ``urn:oid:<Study Instance UID>``, as FHIR's ImagingStudy
      identifies a study. No ``subject``: patient identity stays with the receiver.
    - ``conclusion`` is in ``lang``, the other language rides along in FHIR's
      standard translation extension; it says the finding is an AI suggestion to be
      reviewed by a radiologist, and names the model, its version and SHA-256.
    - ``meta.security`` AIAST (HL7 "Artificial Intelligence asserted") labels it.
    - ``identifier`` is a UUID derived from the study, the model's SHA-256 and the
      finding codes: a retried or repeated notification carries the same one, so a
      receiver can recognise it.
    """
    known = check_lang(lang)
    second = other(known)  # the conclusion's translation
    rec = result.record
    codes = ",".join(sorted(f"{f.label.code.scheme}:{f.label.code.value}" for f in findings))
    report_id = uuid.uuid5(_REPORT_NS, f"{study_uid}|{rec.sha256}|{codes}")
    when = datetime.fromtimestamp(time.time() if issued is None else issued, UTC)
    conclusion = _conclusion(result, findings, known)
    return {
        "resourceType": "DiagnosticReport",
        "meta": {
            "security": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                    "code": "AIAST",
                    "display": "Artificial Intelligence asserted",
                }
            ]
        },
        "language": known,
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(conclusion)}</p>'
            "</div>",
        },
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{report_id}"}],
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"},
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                        "code": "RAD",
                        "display": "Radiology",
                    },
                ]
            }
        ],
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "18748-4",
                    "display": "Diagnostic imaging study",
                }
            ],
            "text": text(known, "fhir.title"),
        },
        "issued": when.isoformat(timespec="seconds"),
        "imagingStudy": [
            {
                "type": "ImagingStudy",
                "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"},
            }
        ],
        "conclusion": conclusion,
        "_conclusion": {
            "extension": [
                {
                    "url": _TRANSLATION,
                    "extension": [
                        {"url": "lang", "valueCode": second},
                        {"url": "content", "valueString": _conclusion(result, findings, second)},
                    ],
                }
            ]
        },
        "conclusionCode": [_coding(f, known) for f in findings],
    }


# --- sending -----------------------------------------------------------------
