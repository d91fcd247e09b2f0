"""The measurement groups of the SR: one per finding (one per box of a detection).

Every group is a TID 1501 "Measurement and Qualitative Evaluation Group" in the
layout OHIF 3 hydrates into an editable rectangle (../shared/viewer/README.md,
"SR display vs hydration"), because an SR group without spatial coordinates
makes OHIF 3.13 crash instead of showing the image:

- tracking identifier ``Cornerstone3DTools@^0.1.0:RectangleROI`` and a tracking
  UID derived like the object's UIDs (same inputs, same UID; feedback matches
  findings by it);
- finding (DCM 121071): the label's code; algorithm identification (TID 4019, row
  10, once for the whole group): model name, version, the manifest's manufacturer,
  family, the SHA-256 of model.onnx;
- the first NUM holds the outline, INFERRED FROM closed 5-point rectangles on
  source images and nothing else (the coordinates OHIF reads; TID 320 allows an
  IMAGE or a SCOORD per inclusion, and validators take a NUM's sources as one
  inclusion): DCM 122157 "Probability" (the score), or for a measurement model the
  value named by the label's code; then SCT 42798000 "Area" of a segmentation,
  when known, INFERRED FROM the segment when the SEG is given (the SEG as "Source
  of Measurement" with its Referenced Segment Number);
- the qualitative evaluation (TID 1501 CODE row): concept name = the label's code,
  value SCT 52101004 "Present" or SCT 272519000 "Absent", stated as below;
- the source images (TID 1501 row 10b, "Source of Measurement"): the finding's
  segment of the SEG when given, and nothing else (the SEG's frames name each image
  the segment lies on, in their Derivation Image Sequence: a group does not repeat
  them one IMAGE item per slice, which made a 300-slice SR 300 items longer); else
  the images the finding is on, except for a box, whose rectangle names its image.
  TID 1501 has no series-level reference (its Source series UIDREF belongs to TID
  1411): the SR's Current Requested Procedure Evidence lists every analysed image
  and the SEG, and each SCOORD keeps its own SELECTED FROM image (what OHIF needs);
- a TEXT DCM 121106 "Comment" (a TID 1501 TEXT qualitative evaluation) with the
  label a viewer shows, in the job's language: the advisory word, the finding and
  its score ('AI · Focal hyperdensity · 0.93'); OHIF takes the group's first
  Comment as the measurement's label. A second Comment says what the rectangle
  means when it is not the finding's own outline.

What the qualitative evaluation states, per kind of label (``statement``), so that
it agrees with the group's probability and the label's threshold:

- a finding (a label that is not ``normal``, with a threshold, or any label of a
  segmentation or detection model): "Present" when the model reports it
  (``cds.inference.postprocess``: its score reached the threshold), else "Absent";
  the probability is the finding's (a box's own score, else the finding's best
  score over the images). The classes of a
  multi-label (sigmoid) model are each a finding of their own: each is Present or
  Absent by its own score and threshold, whatever the others say; a softmax
  model's classes likewise, one statement per class;
- a ``normal`` class ('no finding', 'adequate contrast'): its statement is the
  normal state itself, "Present" when its score reaches its threshold (0.5 when it
  has none), else "Absent". It is never reported as a finding (no SEG, GSPS, SC
  or notification for it, and no 'below threshold'), but a high score is never
  coded Absent;
- an informational classification score (threshold null): no statement at all,
  only the probability: the model decides nothing about it;
- a measurement: "Present" (the value was measured).

What the rectangle is, per finding:

- a detection box: the box, on its image;
- a mask (segmentation): its bounding box on the image where its area is
  largest;
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
from typing import TypeVar

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from cds.errors import EncodingError
from cds.findings import (
    Code,
    Finding,
    ImageRef,
    InferenceResult,
    Label,
    Masks,
    mask_counts,
)
from cds.i18n import AdvisoryTexts
from cds.inference import manifest as mf
from cds.results.common import rectangle, result_uids

RESULT_KIND = "SR"

PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability")
PROBABILITY_UNIT = hd.sr.CodedConcept("{probability}", "UCUM", "probability")
AREA = hd.sr.CodedConcept("42798000", "SCT", "Area")
_MM2 = hd.sr.CodedConcept("mm2", "UCUM", "square millimeter")
_NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
_PRESENT = hd.sr.CodedConcept("52101004", "SCT", "Present")
_ABSENT = hd.sr.CodedConcept("272519000", "SCT", "Absent")
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
#: the threshold of a label that names none (``cds.inference.postprocess``: masks, boxes)
DEFAULT_THRESHOLD = 0.5
#: tracking identifier by which OHIF 3 recognises a group it can hydrate as a rectangle
OHIF_RECTANGLE = "Cornerstone3DTools@^0.1.0:RectangleROI"

#: (row0, col0, row1, col1): inclusive pixel indices on the source image
Box = tuple[float, float, float, float]
_Group = hd.sr.MeasurementsAndQualitativeEvaluations
_Source = TypeVar("_Source", hd.sr.SourceImageForMeasurement, hd.sr.SourceImageForMeasurementGroup)


def coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _on(value: object) -> bool:
    """Whether a per-image value shows the finding (a positive mask, some boxes, a value)."""
    if isinstance(value, np.ndarray):
        return bool(value.any())
    if isinstance(value, list):
        return bool(value)
    return value is not None


def _on_images(finding: Finding) -> list[ImageRef]:
    """The images where a per-image value shows the finding (``_on``); a ``Masks``'
    from their counts, none unpacked."""
    per = finding.per_image
    if isinstance(per, Masks):
        return [ref for ref, n in mask_counts(per).items() if n]
    return [ref for ref, v in per.items() if _on(v)]


def _images(finding: Finding, result: InferenceResult) -> list[ImageRef]:
    """The images the finding is on; every analysed image when it is on none."""
    return _on_images(finding) or list(result.images)


def _boxes(finding: Finding) -> list[tuple[ImageRef, Box, float]]:
    """A detection finding's boxes: (image, (row0, col0, row1, col1), score), image order."""
    if isinstance(finding.per_image, Masks):  # a segmentation's: none (its masks stay packed)
        return []
    return [
        (ref, (float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(score))
        for ref, where in finding.per_image.items()
        if isinstance(where, list)
        for b, score in where
    ]


def _largest_mask(finding: Finding) -> tuple[ImageRef, Box] | None:
    """The image where the finding's mask has the most pixels (the first of equals), and
    the mask's bounding box on it; None when the finding has no positive mask."""
    counts = [(ref, n) for ref, n in mask_counts(finding.per_image).items() if n]
    if not counts:
        return None
    ref, _ = max(counts, key=lambda item: item[1])  # only that mask is unpacked
    rows, cols = np.nonzero(finding.per_image[ref])
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
    with_mask = [i for i, f in enumerate(findings) if _on_images(f)]
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


def _as_segment(item: _Source, segment: int) -> _Source:
    """``item``, an IMAGE content item naming the SEG, as its segment ``segment``."""
    item.ReferencedSOPSequence[0].ReferencedSegmentNumber = segment
    return item


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
                        statement=self.statement(finding, score, box=True),
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
            statement=self.statement(finding, score),
            segment=segment,
            source_images=_images(finding, self.result),
            meaning=meaning,
        )

    def _seg_ref(self) -> tuple[str, str]:
        assert self.seg is not None
        return str(self.seg.SOPClassUID), str(self.seg.SOPInstanceUID)

    def _sources(
        self, finding: Finding, refs: Sequence[ImageRef], segment: int | None
    ) -> list[hd.sr.SourceImageForMeasurementGroup] | None:
        """The group's source images (TID 1501 row 10b): the segment alone when there
        is one (its SEG frames reference the images it lies on), else ``refs``."""
        if segment is not None:
            group_source = hd.sr.SourceImageForMeasurementGroup(*self._seg_ref())
            return [_as_segment(group_source, segment)]
        return self.sources.for_group(finding, refs) or None

    def _nums(
        self,
        finding: Finding,
        score: float,
        outlines: list[hd.sr.CoordinatesForMeasurement],
        segment: int | None,
    ) -> list[hd.sr.Measurement]:
        """The group's NUMs: the first INFERRED FROM the outlines only, the area (of a
        segmentation) INFERRED FROM the segment when the SEG is given."""
        kind, label = self.manifest.output.kind, finding.label
        # a measurement model's score is its value; others give a probability
        name, unit = (
            self._value_of(label) if kind == "measurement" else (PROBABILITY, PROBABILITY_UNIT)
        )
        nums = [
            hd.sr.Measurement(name=name, value=score, unit=unit, referenced_coordinates=outlines)
        ]
        if finding.measurement is not None and kind != "measurement":
            name, unit = (AREA, _MM2) if kind == "segmentation" else self._value_of(label)
            of_segment = None
            if kind == "segmentation" and segment is not None:
                source = hd.sr.SourceImageForMeasurement(*self._seg_ref())
                of_segment = [_as_segment(source, segment)]
            nums.append(
                hd.sr.Measurement(
                    name=name,
                    value=float(finding.measurement),
                    unit=unit,
                    referenced_images=of_segment,
                )
            )
        return nums

    def _value_of(self, label: Label) -> tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]:
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
        statement: bool | None,
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
            qualitative_evaluations=(
                None
                if statement is None
                else [
                    hd.sr.QualitativeEvaluation(
                        coded(label.code), _PRESENT if statement else _ABSENT
                    )
                ]
            ),
            source_images=self._sources(finding, source_images or [], segment),
        )
        below = not finding.present and self.reported(label)
        name = label.display.get(self.texts.lang)
        items = group[0].ContentSequence
        items.append(_comment(self.texts.finding_label(name, score, below_threshold=below)))
        if meaning:
            items.append(_comment(meaning))
        return group

    def statement(self, finding: Finding, score: float, *, box: bool = False) -> bool | None:
        """What the qualitative evaluation of a group of ``finding`` with probability
        ``score`` states: True "Present", False "Absent", None nothing (an informational
        score). A box is reported (its score reached the threshold). See the module's
        docstring."""
        label = finding.label
        if label.normal:  # the normal state itself: present when its score is high
            threshold = label.threshold if label.threshold is not None else DEFAULT_THRESHOLD
            return score >= threshold
        if not self.reported(label):
            return None
        return box or finding.present

    def reported(self, label: Label) -> bool:
        """Whether the model reports ``label`` as a finding when its score reaches the
        threshold (not a 'normal' class, nor an informational classification score)."""
        if label.normal:
            return False
        return label.threshold is not None or self.manifest.output.kind != "classification"
