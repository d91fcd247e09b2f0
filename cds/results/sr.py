"""TID 1500 Measurement Report (Comprehensive 3D SR) of a model's findings, built with highdicom.

One measurement group per finding, whatever the model kind (a detection's boxes
excepted, see below):

- tracking identifier: the label's display text in the job's language, and a
  tracking UID derived like the object's UIDs (same inputs, same UID);
- finding (DCM 121071 "Finding"): the label's code;
- qualitative evaluation: concept name = the label's code, value SCT 52101004
  "Present" or SCT 272519000 "Absent" (the finding's ``present``);
- NUM DCM 122157 "Probability", unit UCUM ``{probability}``: the finding's score
  (not for measurement models, whose score is their value);
- NUM SCT 42798000 "Area", unit UCUM ``mm2``: a segmentation's area, when known;
  NUM named by the label's code in the manifest's unit for a measurement model;
- algorithm identification (TID 4019): model name, version, manufacturer
  ``cds``, family from the manifest, the SHA-256 of model.onnx as a parameter;
- where: the source images the finding is on (TID 1501 "Source image for
  measurement group") or, for a segmentation finding when its SEG is given, the
  segment (TID 1411 "Referenced Segment" with its source images).

A detection finding with boxes gets one TID 1501 group per box instead, in the
layout OHIF 3 hydrates into an editable rectangle (see ../shared/viewer/README.md,
"SR display vs hydration"): tracking identifier
``Cornerstone3DTools@^0.1.0:RectangleROI``; the NUM "Probability" (the box's
score) holds the closed 5-point rectangle as INFERRED FROM 2-D coordinates on
its source image; the finding and its "Present" evaluation as above; and a TEXT
DCM 121106 "Comment" with the label's display text in the job's language, which
OHIF shows as the rectangle's label (the tracking identifier no longer can).

The observer is a device (the model); the report is UNVERIFIED and says it is
advisory in the job's language (SeriesDescription prefix and a TEXT DCM 121106
"Comment" in the report's "Qualitative Evaluations" container, TID 1500 row 12).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cds.domain import ResultRef
from cds.errors import EncodingError
from cds.inference import manifest as mf
from cds.inference.postprocess import Finding, ImageRef
from cds.inference.runner import InferenceResult
from cds.results.common import MANUFACTURER, complete, rectangle, result_uids, tolerant
from cds.results.text import texts

RESULT_KIND = "SR"

_LO = 64
_PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability")
_PROBABILITY_UNIT = hd.sr.CodedConcept("{probability}", "UCUM", "probability")
_AREA = hd.sr.CodedConcept("42798000", "SCT", "Area")
_MM2 = hd.sr.CodedConcept("mm2", "UCUM", "square millimeter")
_PRESENT = hd.sr.CodedConcept("52101004", "SCT", "Present")
_ABSENT = hd.sr.CodedConcept("272519000", "SCT", "Absent")
_COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
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
#: tracking identifier by which OHIF 3 recognises a group it can hydrate as a rectangle
OHIF_RECTANGLE = "Cornerstone3DTools@^0.1.0:RectangleROI"


def _coded(code: mf.Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _procedure(ds: Dataset) -> hd.sr.CodedConcept:
    """The source study's procedure code, else one for its modality."""
    for item in ds.get("ProcedureCodeSequence", []):
        value = item.get("CodeValue")
        if value and item.get("CodingSchemeDesignator") and item.get("CodeMeaning"):
            return hd.sr.CodedConcept(
                str(value), str(item.CodingSchemeDesignator), str(item.CodeMeaning)
            )
    return _PROCEDURE_BY_MODALITY.get(str(ds.get("Modality", "")), _IMAGING_PROCEDURE)


def _on(value: object) -> bool:
    """Whether a per-image value shows the finding (a positive mask, some boxes, a value)."""
    if isinstance(value, np.ndarray):
        return bool(value.any())
    if isinstance(value, list):
        return bool(value)
    return value is not None


def _images(finding: Finding, result: InferenceResult) -> list[ImageRef]:
    """The images the finding is on; every analysed image when it is on none."""
    on = [ref for ref, v in finding.per_image.items() if _on(v)]
    return on or list(result.images)


def _boxes(finding: Finding) -> list[tuple[ImageRef, tuple[float, float, float, float], float]]:
    """A detection finding's boxes: (image, (row0, col0, row1, col1), score), image order."""
    return [
        (ref, (float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(score))
        for ref, where in finding.per_image.items()
        if isinstance(where, list)
        for b, score in where
    ]


class _Sources:
    """SOP Class UIDs of the source images, by SOP Instance UID."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.sop_class = {str(ds.SOPInstanceUID): str(ds.SOPClassUID) for ds in datasets}
        self.multiframe = {
            str(ds.SOPInstanceUID) for ds in datasets if int(ds.get("NumberOfFrames", 1) or 1) > 1
        }

    def _check(self, finding: Finding, ref: ImageRef) -> str:
        try:
            return self.sop_class[ref.sop_uid]
        except KeyError:
            raise EncodingError(
                f"SR: {finding.label.code.meaning!r} is on image {ref.sop_uid}, "
                "which is not among the source images"
            ) from None

    def _frames(self, ref: ImageRef) -> list[int] | None:
        return [ref.frame] if ref.sop_uid in self.multiframe else None

    def for_group(
        self, finding: Finding, refs: Sequence[ImageRef]
    ) -> list[hd.sr.SourceImageForMeasurementGroup]:
        return [
            hd.sr.SourceImageForMeasurementGroup(
                self._check(finding, r), r.sop_uid, self._frames(r)
            )
            for r in refs
        ]

    def for_region(self, finding: Finding, ref: ImageRef) -> hd.sr.SourceImageForRegion:
        return hd.sr.SourceImageForRegion(self._check(finding, ref), ref.sop_uid, self._frames(ref))

    def for_segment(
        self, finding: Finding, refs: Sequence[ImageRef]
    ) -> list[hd.sr.SourceImageForSegmentation]:
        return [
            hd.sr.SourceImageForSegmentation(self._check(finding, r), r.sop_uid, self._frames(r))
            for r in refs
        ]


def _segment_numbers(findings: Sequence[Finding], seg: Dataset | None) -> dict[int, int]:
    """Segment number in ``seg`` of each finding (by position in ``findings``).

    ``build_seg`` numbers the findings with a positive mask from 1, in order;
    each segment's property type must be that finding's code.
    """
    if seg is None:
        return {}
    numbers: dict[int, int] = {}
    segments = list(seg.get("SegmentSequence", []))
    with_mask = [i for i, f in enumerate(findings) if any(_on(m) for m in f.per_image.values())]
    if len(with_mask) != len(segments):
        raise EncodingError(
            f"SR: the SEG has {len(segments)} segments, the result {len(with_mask)} "
            "findings with a mask"
        )
    for i, item in zip(with_mask, segments, strict=True):
        code = findings[i].label.code
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        if (str(prop.CodeValue), str(prop.CodingSchemeDesignator)) != (code.value, code.scheme):
            raise EncodingError(
                f"SR: segment {item.SegmentNumber} of the SEG is not {code.meaning!r}"
            )
        numbers[i] = int(item.SegmentNumber)
    return numbers


def _measurements(
    finding: Finding, manifest: mf.Manifest, algorithm: hd.sr.AlgorithmIdentification
) -> list[hd.sr.Measurement]:
    kind = manifest.output.kind
    out: list[hd.sr.Measurement] = []
    if kind != "measurement":
        out.append(
            hd.sr.Measurement(
                name=_PROBABILITY,
                value=float(finding.score),
                unit=_PROBABILITY_UNIT,
                algorithm_id=algorithm,
            )
        )
    if finding.measurement is not None:
        if kind == "segmentation":
            name, unit = _AREA, _MM2
        elif manifest.output.unit is not None:
            name, unit = _coded(finding.label.code), _coded(manifest.output.unit)
        else:
            name, unit = _coded(finding.label.code), hd.sr.CodedConcept("1", "UCUM", "no units")
        out.append(
            hd.sr.Measurement(
                name=name, value=float(finding.measurement), unit=unit, algorithm_id=algorithm
            )
        )
    return out


def _box_groups(
    finding: Finding,
    lang: str,
    algorithm: hd.sr.AlgorithmIdentification,
    sources: _Sources,
    tracking_uid: Callable[[str], str],
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """One TID 1501 group per detection box, in the layout OHIF 3 hydrates.

    OHIF turns a group into an editable rectangle when its tracking identifier
    names the Cornerstone3D tool and its first NUM holds the outline as INFERRED
    FROM coordinates; it labels the rectangle with the group's DCM 121106
    "Comment", which carries the finding's display name in the job's language.
    """
    groups = []
    for n, (ref, (r0, c0, r1, c1), score) in enumerate(_boxes(finding)):
        outline = hd.sr.CoordinatesForMeasurement(
            hd.sr.GraphicTypeValues.POLYLINE,
            rectangle(r0, c0, r1, c1),
            sources.for_region(finding, ref),
        )
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=tracking_uid(f"box-{ref.sop_uid}-{ref.frame}-{n}"), identifier=OHIF_RECTANGLE
            ),
            finding_type=_coded(finding.label.code),
            algorithm_id=algorithm,
            measurements=[
                hd.sr.Measurement(
                    name=_PROBABILITY,
                    value=score,
                    unit=_PROBABILITY_UNIT,
                    referenced_coordinates=[outline],
                    algorithm_id=algorithm,
                )
            ],
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(_coded(finding.label.code), _PRESENT)
            ],
        )
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=_COMMENT,
                value=finding.label.display.get(lang),
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
        groups.append(group)
    return groups


_Group = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
)


@dataclass(frozen=True)
class _Context:
    """What the measurement groups of one report share."""

    lang: str
    manifest: mf.Manifest
    result: InferenceResult
    algorithm: hd.sr.AlgorithmIdentification
    sources: _Sources
    seg: Dataset | None
    segments: dict[int, int]
    #: (study UID, series UIDs, seed) of the report's UIDs, for the tracking UIDs
    uid_base: tuple[str, tuple[str, ...], str]

    def tracking_uid(self, i: int, finding: Finding, suffix: str = "") -> str:
        """Tracking UID of finding ``i`` (and of its box ``suffix``): same inputs, same UID."""
        label, rec = finding.label, self.result.record
        kind = f"{RESULT_KIND}-tracking-{i}-{label.index}-{label.code.scheme}-{label.code.value}"
        study_uid, series_uids, seed = self.uid_base
        return result_uids(
            study_uid,
            series_uids,
            rec.model,
            rec.version,
            kind=f"{kind}-{suffix}" if suffix else kind,
            seed=seed,
        )[1]

    def groups(self, i: int, finding: Finding) -> list[_Group]:
        """The groups of finding ``i``: one per box of a detection, else one."""
        rec, label = self.result.record, finding.label
        try:
            if _boxes(finding):
                return list(
                    _box_groups(
                        finding,
                        self.lang,
                        self.algorithm,
                        self.sources,
                        lambda suffix: self.tracking_uid(i, finding, suffix),
                    )
                )
            return [self._group(i, finding)]
        except (ValueError, TypeError) as exc:
            raise EncodingError(
                f"SR of {rec.model} {rec.version}: {label.code.meaning!r}: {exc}"
            ) from exc

    def _group(self, i: int, finding: Finding) -> _Group:
        label = finding.label
        tracking = hd.sr.TrackingIdentifier(
            uid=self.tracking_uid(i, finding), identifier=label.display.get(self.lang)[:_LO]
        )
        common = {
            "tracking_identifier": tracking,
            "finding_type": _coded(label.code),
            "algorithm_id": self.algorithm,
            "measurements": _measurements(finding, self.manifest, self.algorithm),
            "qualitative_evaluations": [
                hd.sr.QualitativeEvaluation(
                    _coded(label.code), _PRESENT if finding.present else _ABSENT
                )
            ],
        }
        refs = _images(finding, self.result)
        if i in self.segments and self.seg is not None:
            segment = hd.sr.ReferencedSegment(
                sop_class_uid=str(self.seg.SOPClassUID),
                sop_instance_uid=str(self.seg.SOPInstanceUID),
                segment_number=self.segments[i],
                source_images=self.sources.for_segment(finding, refs),
            )
            return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=segment,
                **common,  # type: ignore[arg-type]
            )
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            source_images=self.sources.for_group(finding, refs),
            **common,  # type: ignore[arg-type]
        )


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
    run this SR replaces (Predecessor Documents Sequence).
    """
    t = texts(lang)
    rec = result.record
    if (manifest.name, manifest.version) != (rec.model, rec.version):
        raise ValueError(
            f"manifest {manifest.name} {manifest.version} is not the model that produced "
            f"the result ({rec.model} {rec.version})"
        )
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
            name=rec.model[:_LO],
            manufacturer_name=MANUFACTURER,
            model_name=f"{rec.model} {rec.version}"[:_LO],
        ),
    )
    family = _coded(manifest.algorithm_family) if manifest.algorithm_family else _AI
    algorithm = hd.sr.AlgorithmIdentification(
        name=rec.model,
        version=rec.version,
        parameters=[f"sha256={rec.sha256}"],
        family=family,
        manufacturer=MANUFACTURER,
    )
    ctx = _Context(
        lang=lang,
        manifest=manifest,
        result=result,
        algorithm=algorithm,
        sources=_Sources(source_datasets),
        seg=seg,
        segments=_segment_numbers(result.findings, seg),
        uid_base=(study_uid, tuple(series_uids), seed),
    )
    groups = [g for i, finding in enumerate(result.findings) for g in ctx.groups(i, finding)]

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
                    name=_COMMENT,
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
            series_description=f"{t.series_prefix}{rec.model} {rec.version}"[:_LO],
            manufacturer_model_name=rec.model[:_LO],
            software_versions=rec.cds_version,
            device_serial_number=rec.sha256[:_LO],
            specific_character_set="ISO_IR 192",  # the French texts hold accents
        )
    except (ValueError, TypeError) as exc:
        raise EncodingError(f"SR of {rec.model} {rec.version} is not valid: {exc}") from exc
    # the SEG's repairs (de-identification method, 99CDS declared) use only Dataset operations
    complete(sr, manifest.manufacturer)
    if predecessors:
        sr.PredecessorDocumentsSequence = _hierarchical(predecessors)
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
