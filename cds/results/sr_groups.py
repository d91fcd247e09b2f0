"""The measurement groups of the SR: one per finding (one per box of a detection).

Every group is a TID 1501 "Measurement and Qualitative Evaluation Group" in the
layout OHIF 3 hydrates into an editable rectangle (../shared/viewer/README.md,
"SR display vs hydration"), because an SR group without spatial coordinates
makes OHIF 3.13 crash instead of showing the image:

- tracking identifier ``Cornerstone3DTools@^0.1.0:RectangleROI`` and a tracking
  UID derived like the object's UIDs (same inputs, same UID; feedback matches
  findings by it);
- finding (DCM 121071): the label's code; algorithm identification (TID 4019):
  model name, version, the manifest's manufacturer, family, the SHA-256 of model.onnx;
- the first NUM holds the outline, INFERRED FROM closed 5-point rectangles on
  source images (the coordinates OHIF reads): DCM 122157 "Probability" (the
  score), or for a measurement model the value named by the label's code;
  then SCT 42798000 "Area" of a segmentation, when known;
- qualitative evaluation: concept name = the label's code, value SCT 52101004
  "Present" or SCT 272519000 "Absent";
- the source images the finding is on (TID 1501 "Source image for measurement
  group"), except for a box, whose rectangle names its image;
- a TEXT DCM 121106 "Comment" with the label a viewer shows, in the job's
  language: the advisory word, the finding and its score
  ('AI · Focal hyperdensity · 0.93'); OHIF takes the group's first Comment as
  the measurement's label. A second Comment says what the rectangle means when
  it is not the finding's own outline.

What the rectangle is, per finding:

- a detection box: the box, on its image;
- a mask (segmentation): its bounding box on the image where its area is
  largest. With the SEG, both NUMs are also INFERRED FROM the segment (the SEG
  as "Source of Measurement" with its Referenced Segment Number);
- anything else (a classification, a measurement, a finding found nowhere):
  the whole image the score comes from (a classification: the image with the
  highest score; a measurement: every image, its value being their mean; an
  absent finding: the first analysed image). The Comment says the result is
  about the image as a whole, so the outline does not pretend to localise it.

Coordinates are in source pixels: (column, row), origin at the top left corner
of the top left pixel (``common.rectangle``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from cds.errors import EncodingError
from cds.inference import manifest as mf
from cds.inference.postprocess import Finding, ImageRef
from cds.inference.runner import InferenceResult
from cds.results.common import rectangle, result_uids
from cds.results.text import AdvisoryTexts

RESULT_KIND = "SR"

PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability")
PROBABILITY_UNIT = hd.sr.CodedConcept("{probability}", "UCUM", "probability")
AREA = hd.sr.CodedConcept("42798000", "SCT", "Area")
_MM2 = hd.sr.CodedConcept("mm2", "UCUM", "square millimeter")
_NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
_PRESENT = hd.sr.CodedConcept("52101004", "SCT", "Present")
_ABSENT = hd.sr.CodedConcept("272519000", "SCT", "Absent")
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
#: tracking identifier by which OHIF 3 recognises a group it can hydrate as a rectangle
OHIF_RECTANGLE = "Cornerstone3DTools@^0.1.0:RectangleROI"

#: (row0, col0, row1, col1): inclusive pixel indices on the source image
Box = tuple[float, float, float, float]
_Group = hd.sr.MeasurementsAndQualitativeEvaluations


def coded(code: mf.Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


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


def _boxes(finding: Finding) -> list[tuple[ImageRef, Box, float]]:
    """A detection finding's boxes: (image, (row0, col0, row1, col1), score), image order."""
    return [
        (ref, (float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(score))
        for ref, where in finding.per_image.items()
        if isinstance(where, list)
        for b, score in where
    ]


def _largest_mask(finding: Finding) -> tuple[ImageRef, Box] | None:
    """The image where the finding's mask has the most pixels (the first of equals), and
    the mask's bounding box on it; None when the finding has no positive mask."""
    masks = [
        (ref, m) for ref, m in finding.per_image.items() if isinstance(m, np.ndarray) and m.any()
    ]
    if not masks:
        return None
    ref, mask = max(masks, key=lambda item: int(np.count_nonzero(item[1])))
    rows, cols = np.nonzero(mask)
    return ref, (float(rows.min()), float(cols.min()), float(rows.max()), float(cols.max()))


def _whole_images(finding: Finding, result: InferenceResult, kind: str) -> list[ImageRef]:
    """The images an image-level result comes from (see the module's docstring)."""
    values = [(ref, float(v)) for ref, v in finding.per_image.items() if isinstance(v, float)]
    if not values:
        return list(result.images[:1])
    if kind == "measurement":
        return [ref for ref, _ in values]
    return [max(values, key=lambda item: item[1])[0]]


class Sources:
    """SOP Class UIDs and sizes of the source images, by SOP Instance UID."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.sop_class = {str(ds.SOPInstanceUID): str(ds.SOPClassUID) for ds in datasets}
        self.size = {str(ds.SOPInstanceUID): (int(ds.Rows), int(ds.Columns)) for ds in datasets}
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

    def whole(self, finding: Finding, ref: ImageRef) -> Box:
        """The whole image ``ref`` as a box."""
        self._check(finding, ref)
        rows, cols = self.size[ref.sop_uid]
        return 0.0, 0.0, float(rows - 1), float(cols - 1)

    def outline(self, finding: Finding, ref: ImageRef, box: Box) -> hd.sr.CoordinatesForMeasurement:
        """The closed rectangle ``box`` on ``ref``, for a NUM to be INFERRED FROM."""
        return hd.sr.CoordinatesForMeasurement(
            hd.sr.GraphicTypeValues.POLYLINE,
            rectangle(*box),
            hd.sr.SourceImageForRegion(self._check(finding, ref), ref.sop_uid, self._frames(ref)),
        )

    def for_group(
        self, finding: Finding, refs: Sequence[ImageRef]
    ) -> list[hd.sr.SourceImageForMeasurementGroup]:
        return [
            hd.sr.SourceImageForMeasurementGroup(
                self._check(finding, r), r.sop_uid, self._frames(r)
            )
            for r in refs
        ]


def segment_numbers(findings: Sequence[Finding], seg: Dataset | None) -> dict[int, int]:
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


def _comment(text: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=COMMENT, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


@dataclass(frozen=True)
class Groups:
    """Builds the measurement groups of one report (what its groups share)."""

    texts: AdvisoryTexts
    manifest: mf.Manifest
    result: InferenceResult
    algorithm: hd.sr.AlgorithmIdentification
    sources: Sources
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

    def of(self, i: int, finding: Finding) -> list[_Group]:
        """The groups of finding ``i``: one per box of a detection, else one."""
        rec, label = self.result.record, finding.label
        try:
            if boxes := _boxes(finding):
                return [
                    self._group(
                        finding,
                        self.tracking_uid(i, finding, f"box-{ref.sop_uid}-{ref.frame}-{n}"),
                        score,
                        [(ref, box)],
                    )
                    for n, (ref, box, score) in enumerate(boxes)
                ]
            return [self._finding_group(i, finding)]
        except (ValueError, TypeError) as exc:
            raise EncodingError(
                f"SR of {rec.model} {rec.version}: {label.code.meaning!r}: {exc}"
            ) from exc

    def _finding_group(self, i: int, finding: Finding) -> _Group:
        t, kind = self.texts, self.manifest.output.kind
        segment = self.segments.get(i) if self.seg is not None else None
        if (largest := _largest_mask(finding)) is not None:
            regions = [largest]
            meaning = t.region_mask + (
                t.region_segment.format(segment=segment) if segment is not None else ""
            )
        else:
            refs = _whole_images(finding, self.result, kind)
            regions = [(ref, self.sources.whole(finding, ref)) for ref in refs]
            meaning = t.region_image
        score = float(finding.score)
        return self._group(
            finding,
            self.tracking_uid(i, finding),
            score,
            regions,
            segment=segment,
            source_images=_images(finding, self.result),
            meaning=meaning,
        )

    def _source_of_segment(self, segment: int) -> hd.sr.SourceImageForMeasurement:
        assert self.seg is not None
        item = hd.sr.SourceImageForMeasurement(
            str(self.seg.SOPClassUID), str(self.seg.SOPInstanceUID)
        )
        item.ReferencedSOPSequence[0].ReferencedSegmentNumber = segment
        return item

    def _nums(
        self,
        finding: Finding,
        score: float,
        outlines: list[hd.sr.CoordinatesForMeasurement],
        segment: int | None,
    ) -> list[hd.sr.Measurement]:
        """The group's NUMs, the first holding the outlines (and the segment, with a SEG)."""
        kind, label = self.manifest.output.kind, finding.label

        def source() -> list[hd.sr.SourceImageForMeasurement] | None:
            return [self._source_of_segment(segment)] if segment is not None else None

        # a measurement model's score is its value; others give a probability
        name, unit = (
            self._value_of(label) if kind == "measurement" else (PROBABILITY, PROBABILITY_UNIT)
        )
        nums = [
            hd.sr.Measurement(
                name=name,
                value=score,
                unit=unit,
                referenced_coordinates=outlines,
                referenced_images=source(),
                algorithm_id=self.algorithm,
            )
        ]
        if finding.measurement is not None and kind != "measurement":
            name, unit = (AREA, _MM2) if kind == "segmentation" else self._value_of(label)
            nums.append(
                hd.sr.Measurement(
                    name=name,
                    value=float(finding.measurement),
                    unit=unit,
                    referenced_images=source() if kind == "segmentation" else None,
                    algorithm_id=self.algorithm,
                )
            )
        return nums

    def _value_of(self, label: mf.Label) -> tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]:
        """(name, unit) of a measured value: the label's code, the manifest's unit."""
        unit = self.manifest.output.unit
        return coded(label.code), coded(unit) if unit is not None else _NO_UNITS

    def _group(
        self,
        finding: Finding,
        tracking_uid: str,
        score: float,
        regions: list[tuple[ImageRef, Box]],
        *,
        segment: int | None = None,
        source_images: list[ImageRef] | None = None,
        meaning: str | None = None,
    ) -> _Group:
        label = finding.label
        if not regions:  # OHIF 3 cannot show a group without coordinates
            raise ValueError("no source image to outline it on")
        outlines = [self.sources.outline(finding, ref, box) for ref, box in regions]
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=tracking_uid, identifier=OHIF_RECTANGLE
            ),
            finding_type=coded(label.code),
            algorithm_id=self.algorithm,
            measurements=self._nums(finding, score, outlines, segment),
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(
                    coded(label.code), _PRESENT if finding.present else _ABSENT
                )
            ],
            source_images=(
                self.sources.for_group(finding, source_images) if source_images else None
            ),
        )
        below = not finding.present and self.reported(label)
        name = label.display.get(self.texts.lang)
        items = group[0].ContentSequence
        items.append(_comment(self.texts.finding_label(name, score, below_threshold=below)))
        if meaning:
            items.append(_comment(meaning))
        return group

    def reported(self, label: mf.Label) -> bool:
        """Whether the model reports ``label`` as a finding when its score reaches the
        threshold (not a 'normal' class, nor an informational classification score)."""
        if label.normal:
            return False
        return label.threshold is not None or self.manifest.output.kind != "classification"
