"""TID 1500 Measurement Report (Comprehensive 3D SR) of a model's findings, built with highdicom.

One measurement group per finding (per box of a detection), each a TID 1501
group in the layout OHIF 3 hydrates into an editable rectangle, labelled
'AI · <finding> · <score>' in the job's language: see ``sr_groups``.

The observer is a device (the model); the report is UNVERIFIED and says it is
advisory in the job's language (SeriesDescription prefix and a TEXT DCM 121106
"Comment" in the report's "Qualitative Evaluations" container, TID 1500 row 12).
A segmentation's groups name their segment of the SEG when it is given, and the
SEG is listed in the evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cds import i18n
from cds.domain import ResultRef
from cds.errors import EncodingError
from cds.findings import InferenceResult
from cds.inference import manifest as mf
from cds.results.common import (
    LO,
    MANUFACTURER,
    check_model_of,
    complete,
    identify_vendor,
    result_uids,
    tolerant,
)
from cds.results.sr_groups import (
    COMMENT,
    OHIF_RECTANGLE,
    RESULT_KIND,
    Groups,
    Sources,
    coded,
    segment_numbers,
)

__all__ = ["OHIF_RECTANGLE", "RESULT_KIND", "build_sr"]

_QUALITATIVE = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
_AI = hd.sr.CodedConcept(
    codes.DCM.ArtificialIntelligence.value,
    codes.DCM.ArtificialIntelligence.scheme_designator,
    codes.DCM.ArtificialIntelligence.meaning,
)
_LANGUAGE = {
    "en": hd.sr.CodedConcept("en", "RFC5646", "English"),
    "fr": hd.sr.CodedConcept("fr", "RFC5646", "French"),
}
#: procedure reported when the source images name none, by Modality
_PROCEDURE_BY_MODALITY = {
    "CT": hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
    "MR": hd.sr.CodedConcept("25056-3", "LN", "MRI unspecified body region"),
}
_IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")


def _procedure(ds: Dataset) -> hd.sr.CodedConcept:
    """The source study's procedure code, else one for its modality."""
    for item in ds.get("ProcedureCodeSequence", []):
        value = item.get("CodeValue")
        if value and item.get("CodingSchemeDesignator") and item.get("CodeMeaning"):
            return hd.sr.CodedConcept(
                str(value), str(item.CodingSchemeDesignator), str(item.CodeMeaning)
            )
    return _PROCEDURE_BY_MODALITY.get(str(ds.get("Modality", "")), _IMAGING_PROCEDURE)


def build_sr(
    source_datasets: Sequence[Dataset],
    result: InferenceResult,
    manifest: mf.Manifest,
    lang: str,
    *,
    seg: Dataset | None = None,
    series_number: int = 902,
    instance_number: int = 1,
    uid_root_seed: str | None = None,
    predecessors: Sequence[ResultRef] = (),
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 Measurement Report of ``result`` on ``source_datasets``.

    ``seg`` is the SEG built from the same result (``build_seg``): segmentation
    findings then reference their segment. Raises ValueError for an unknown
    language, a manifest that is not the result's model or no source images;
    EncodingError when the result does not fit the sources (or the SEG) or the
    object would not be valid. ``predecessors``: the result objects of an earlier
    run this SR replaces (Predecessor Documents Sequence); one with this SR's own UID (the
    same content) is left out.
    """
    t = i18n.advisory(lang)
    rec = result.record
    check_model_of(manifest, result)
    if not rec.sha256:
        raise EncodingError(f"SR: the result of {rec.model} {rec.version} has no model SHA-256")
    if not source_datasets:
        raise ValueError("source_datasets is empty")
    seed = uid_root_seed or ""
    first = source_datasets[0]
    study_uid = str(first.StudyInstanceUID)
    series_uids = rec.series_uids or (str(first.SeriesInstanceUID),)
    series_uid, sop_uid = result_uids(
        study_uid, series_uids, rec.model, rec.version, kind=RESULT_KIND, seed=seed
    )
    # the device: the model version itself, whichever study or inputs it reports on (no
    # seed: the seed follows the input instances, and the device must not change with them)
    _, device_uid = result_uids("", (), rec.model, rec.version, kind="device")
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name=rec.model[:LO],
            manufacturer_name=manifest.manufacturer[:LO],  # the model's vendor
            model_name=f"{rec.model} {rec.version}"[:LO],
        ),
    )
    family = coded(manifest.algorithm_family) if manifest.algorithm_family else _AI
    algorithm = hd.sr.AlgorithmIdentification(
        name=rec.model,
        version=rec.version,
        parameters=[f"sha256={rec.sha256}"],
        family=family,
        manufacturer=manifest.manufacturer,  # the model's vendor; cds encoded the object
    )
    builder = Groups(
        texts=t,
        manifest=manifest,
        result=result,
        algorithm=algorithm,
        sources=Sources(source_datasets),
        seg=seg,
        segments=segment_numbers(result.findings, seg),
        uid_base=(study_uid, tuple(series_uids), seed),
    )
    groups = [g for i, finding in enumerate(result.findings) for g in builder.of(i, finding)]

    produced_by = t.produced_by.format(name=rec.model, version=rec.version, sha256=rec.sha256)
    try:
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=_procedure(first),
            imaging_measurements=groups,
            language_of_content_item_and_descendants=hd.sr.LanguageOfContentItemAndDescendants(
                _LANGUAGE[t.lang]
            ),
        )
        advisory = hd.sr.ContainerContentItem(
            name=_QUALITATIVE, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
        advisory.ContentSequence = hd.sr.ContentSequence(
            [
                hd.sr.TextContentItem(
                    name=COMMENT,
                    value=f"{t.banner}. {produced_by}",
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            ]
        )
        report[0].ContentSequence.append(advisory)
        # highdicom copies Type 2 patient/study attributes from the first; a scanner may omit some
        evidence = [
            tolerant(first),
            *source_datasets[1:],
            *([seg] if seg is not None else []),
        ]
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=sop_uid,
            instance_number=instance_number,
            manufacturer=MANUFACTURER,
            is_complete=True,
            is_final=False,
            is_verified=False,
            series_description=f"{t.series_prefix}{rec.model} {rec.version}"[:LO],
            manufacturer_model_name=rec.model[:LO],
            software_versions=rec.cds_version,
            device_serial_number=rec.sha256[:LO],
            specific_character_set="ISO_IR 192",  # the French texts hold accents
        )
    except (ValueError, TypeError) as exc:
        raise EncodingError(f"SR of {rec.model} {rec.version} is not valid: {exc}") from exc
    # the SEG's repairs (de-identification method, 99CDS declared) use only Dataset operations
    complete(sr, manifest.manufacturer)
    identify_vendor(sr, manifest)
    # an SR is never its own predecessor: the same content has the same UID
    replaced = [p for p in predecessors if p.sop_uid != sop_uid]
    if replaced:
        sr.PredecessorDocumentsSequence = _hierarchical(replaced)
    return sr


def _hierarchical(refs: Sequence[ResultRef]) -> list[Dataset]:
    """SOP Instance Reference Macro items (study > series > SOP) for ``refs``."""
    studies: dict[str, dict[str, list[ResultRef]]] = {}
    for r in refs:
        studies.setdefault(r.study_uid, {}).setdefault(r.series_uid, []).append(r)
    items = []
    for study_uid, series in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = []
        for series_uid, sops in series.items():
            item = Dataset()
            item.SeriesInstanceUID = series_uid
            item.ReferencedSOPSequence = []
            for r in sops:
                sop = Dataset()
                sop.ReferencedSOPClassUID = r.sop_class_uid
                sop.ReferencedSOPInstanceUID = r.sop_uid
                item.ReferencedSOPSequence.append(sop)
            study.ReferencedSeriesSequence.append(item)
        items.append(study)
    return items
