"""The FHIR R4 DiagnosticReport an urgent finding is notified with (``cds.delivery.notify``):
which findings are urgent (``urgent_findings``), and the report (``fhir_diagnostic_report``)
with the Study Instance UID, never a patient's name, ID, birth date or accession number.
"""

from __future__ import annotations

import html
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.fhirprimitiveextension import FHIRPrimitiveExtension
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.narrative import Narrative
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference
from pydantic import ValidationError

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
_V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_UCUM = "http://unitsofmeasure.org"
#: the report's priority (FHIR request-priority codes): DiagnosticReport has no element
PRIORITY_EXTENSION = "urn:cds:fhir:StructureDefinition:priority"
PRIORITIES = ("stat", "asap")
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


def _coding(f: Finding, lang: str) -> CodeableConcept:
    code = f.label.code
    return CodeableConcept(
        coding=[Coding(system=FHIR_SYSTEMS[code.scheme], code=code.value, display=code.meaning)],
        text=f.label.display.get(lang),
    )


def _observation(n: int, f: Finding, result: InferenceResult, lang: str, when: str) -> Observation:
    """The contained Observation of one finding: its code, score (a unitless
    valueQuantity, 0 to 1), interpretation A (abnormal), and the model as ``method``
    (name, version, SHA-256 as a coding of the cds scheme) and ``device`` (display)."""
    rec = result.record
    named = f"{rec.model} {rec.version} (SHA-256 {rec.sha256})"
    return Observation(
        id=f"finding-{n}",
        meta=_ai_asserted(),
        status="preliminary",
        category=[_RADIOLOGY],
        code=_coding(f, lang),
        issued=when,
        valueQuantity=Quantity(
            value=Decimal(f"{f.score:.4g}"), unit="score", system=_UCUM, code="1"
        ),
        interpretation=[
            CodeableConcept(coding=[Coding(system=_INTERPRETATION, code="A", display="Abnormal")])
        ],
        method=CodeableConcept(
            coding=[Coding(system=FHIR_SYSTEMS["99CDS"], code=rec.sha256, display=named)],
            text=named,
        ),
        device=Reference(display=named),
    )


def _ai_asserted() -> Meta:
    return Meta(security=[Coding(system=_V3_OBSERVATION_VALUE, code="AIAST",
                                 display="Artificial Intelligence asserted")])  # fmt: skip


_RADIOLOGY = CodeableConcept(
    coding=[
        Coding(system="http://loinc.org", code="LP29684-5", display="Radiology"),
        Coding(system="http://terminology.hl7.org/CodeSystem/v2-0074", code="RAD",
               display="Radiology"),
    ]
)  # fmt: skip


def fhir_report(
    study_uid: str,
    result: InferenceResult,
    findings: Sequence[Finding],
    lang: str,
    issued: float | None = None,
    *,
    priority: str = "stat",
) -> DiagnosticReport:
    """A FHIR R4 DiagnosticReport announcing ``findings`` of ``result`` on a study,
    built on fhir.resources' validated models (R4B: the same DiagnosticReport and
    Observation as R4 4.0.1).

    - ``code`` is LOINC 18748-4 "Diagnostic imaging study": the generic imaging
      report code, true whatever the modality (a pipeline may run on CT, CR or MR,
      so a modality-specific code would often be wrong); ``category`` carries both
      LOINC LP29684-5 and HL7 v2-0074 RAD, so either kind of receiver finds
      "Radiology".
    - the study is a logical reference: ``imagingStudy`` by identifier
      ``urn:dicom:uid`` / ``urn:oid:<Study Instance UID>``, as FHIR's ImagingStudy
      identifies a study. No ``subject``: patient identity stays with the receiver.
    - one Observation per finding, contained in the report (``result`` points at
      ``#finding-<n>``): the report is one resource POSTed to the target's URL, which
      may be a worklist's endpoint rather than a FHIR server's base (a transaction
      Bundle needs the base); see ``_observation``.
    - ``conclusion`` is in ``lang``, the other language rides along in FHIR's
      standard translation extension; it says the finding is an AI suggestion to be
      reviewed by a radiologist, and names the model, its version and SHA-256.
    - the priority (``stat``/``asap``, FHIR's request-priority codes) is an extension
      (``PRIORITY_EXTENSION``): DiagnosticReport has no priority element, only a
      ServiceRequest has one, and the report references no order.
    - ``meta.security`` AIAST (HL7 "Artificial Intelligence asserted") labels it.
    - ``identifier`` is a UUID derived from the study, the model's SHA-256 and the
      finding codes: a retried or repeated notification carries the same one, so a
      receiver can recognise it (and the retraction, ``entered_in_error``, names it).
    """
    known = check_lang(lang)
    if priority not in PRIORITIES:
        raise ValueError(f"priority: one of {', '.join(PRIORITIES)}, not {priority!r}")
    second = other(known)  # the conclusion's translation
    rec = result.record
    codes = ",".join(sorted(f"{f.label.code.scheme}:{f.label.code.value}" for f in findings))
    report_id = uuid.uuid5(_REPORT_NS, f"{study_uid}|{rec.sha256}|{codes}")
    when = datetime.fromtimestamp(time.time() if issued is None else issued, UTC)
    stamp = when.isoformat(timespec="seconds")
    conclusion = _conclusion(result, findings, known)
    observations = [_observation(n, f, result, known, stamp) for n, f in enumerate(findings, 1)]
    translation = Extension(
        url=_TRANSLATION,
        extension=[
            Extension(url="lang", valueCode=second),
            Extension(url="content", valueString=_conclusion(result, findings, second)),
        ],
    )
    return DiagnosticReport(
        meta=_ai_asserted(),
        language=known,
        text=Narrative(
            status="generated",
            div=f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(conclusion)}</p></div>',
        ),
        contained=observations,
        extension=[Extension(url=PRIORITY_EXTENSION, valueCode=priority)],
        identifier=[Identifier(system="urn:ietf:rfc:3986", value=f"urn:uuid:{report_id}")],
        status="preliminary",
        category=[_RADIOLOGY],
        code=CodeableConcept(
            coding=[
                Coding(
                    system="http://loinc.org", code="18748-4", display="Diagnostic imaging study"
                )
            ],
            text=text(known, "fhir.title"),
        ),
        issued=stamp,
        imagingStudy=[
            Reference(
                type="ImagingStudy",
                identifier=Identifier(system="urn:dicom:uid", value=f"urn:oid:{study_uid}"),
            )
        ],
        result=[Reference(reference=f"#{o.id}") for o in observations],
        conclusion=conclusion,
        conclusion__ext=FHIRPrimitiveExtension(extension=[translation]),
        conclusionCode=[_coding(f, known) for f in findings],
    )


def fhir_diagnostic_report(
    study_uid: str,
    result: InferenceResult,
    findings: Sequence[Finding],
    lang: str,
    issued: float | None = None,
    *,
    priority: str = "stat",
) -> dict[str, Any]:
    """``fhir_report`` as the JSON object that is sent."""
    report = fhir_report(study_uid, result, findings, lang, issued, priority=priority)
    return to_json(report)


def to_json(resource: DiagnosticReport) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(resource.model_dump_json(exclude_none=True))
    return out


def entered_in_error(body: str) -> str:
    """The retraction of a sent report (its JSON ``body``): the same report, the same
    ``identifier``, with status ``entered-in-error``, and so each of its Observations
    (FHIR: "the report was withdrawn"). ValueError when ``body`` is not a report."""
    try:
        report = DiagnosticReport.model_validate_json(body)
    except ValidationError as exc:
        raise ValueError(f"not a FHIR DiagnosticReport ({exc.error_count()} error(s))") from None
    report.status = "entered-in-error"
    for item in report.contained or []:
        if isinstance(item, Observation):
            item.status = "entered-in-error"
    again = DiagnosticReport.model_validate(to_json(report))  # validated as sent
    return json.dumps(to_json(again), ensure_ascii=False, separators=(",", ":"))


# --- sending -----------------------------------------------------------------
