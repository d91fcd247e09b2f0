"""What a finding rests on, read from its measurement group in the SR.

The group (TID 1411 / 1501) names the images the model looked at: a spatial
coordinate (SCOORD) selected from a source image for a box, an image reference
("Source of Measurement") for a classification, or a segment of our SEG for a
segmentation; and its measurements (NUM: probability, area, ...). Read-only:
the SR is never changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from cds.feedback.edited import referenced_frame

_TRACKING_UID = ("DCM", "112040")
_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_LABELMAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
SEG_CLASSES = frozenset({_SEGMENTATION_STORAGE, _LABELMAP_SEGMENTATION_STORAGE})


@dataclass(frozen=True, slots=True)
class ImageRef:
    sop_uid: str
    frame: int = 1  # 1-based, as DICOM counts frames


@dataclass(frozen=True, slots=True)
class Region:
    """A 2D spatial coordinate on one image: column/row pairs, DICOM's (0, 0) at the
    top-left corner of the top-left pixel."""

    image: ImageRef
    graphic_type: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class SegmentRef:
    seg_sop_uid: str
    segment: int


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class Basis:
    regions: tuple[Region, ...] = ()
    images: tuple[ImageRef, ...] = ()
    segments: tuple[SegmentRef, ...] = ()
    measurements: tuple[Measurement, ...] = field(default=())


def _code(item: Dataset, key: str) -> tuple[str, str] | None:
    seq = item.get(key)
    return (str(seq[0].CodingSchemeDesignator), str(seq[0].CodeValue)) if seq else None


def _meaning(item: Dataset, key: str) -> str:
    seq = item.get(key)
    return str(seq[0].get("CodeMeaning", "")) if seq else ""


def _walk(seq: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in seq:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def find_group(sr: Dataset, tracking_uid: str) -> Dataset | None:
    """The content item (measurement group) whose Tracking Unique Identifier is ``tracking_uid``."""
    for item in _walk(sr.get("ContentSequence", [])):
        for child in item.get("ContentSequence", []):
            if (
                child.get("ValueType") == "UIDREF"
                and _code(child, "ConceptNameCodeSequence") == _TRACKING_UID
                and str(child.UID) == tracking_uid
            ):
                return item
    return None


def _image_refs(item: Dataset) -> Iterator[tuple[Dataset, str]]:
    for ref in item.get("ReferencedSOPSequence", []):
        yield ref, str(ref.get("ReferencedSOPClassUID", ""))


def basis_of(group: Dataset) -> Basis:
    """Regions, image and segment references and measurements of one measurement group."""
    regions: list[Region] = []
    images: list[ImageRef] = []
    segments: list[SegmentRef] = []
    measurements: list[Measurement] = []
    for item in _walk(group.get("ContentSequence", [])):
        kind = item.get("ValueType")
        if kind == "SCOORD":
            data = [float(v) for v in item.get("GraphicData", [])]
            points = tuple(zip(data[0::2], data[1::2], strict=False))
            for child in item.get("ContentSequence", []):
                for ref, _ in _image_refs(child):
                    image = ImageRef(str(ref.ReferencedSOPInstanceUID), referenced_frame(ref))
                    regions.append(Region(image, str(item.get("GraphicType", "")), points))
        elif kind == "IMAGE":
            for ref, sop_class in _image_refs(item):
                uid = str(ref.ReferencedSOPInstanceUID)
                if sop_class in SEG_CLASSES:
                    numbers = ref.get("ReferencedSegmentNumber", 1)
                    first = numbers[0] if isinstance(numbers, Sequence) else numbers
                    segments.append(SegmentRef(uid, int(first)))
                else:
                    images.append(ImageRef(uid, referenced_frame(ref)))
        elif kind == "NUM":
            for value in item.get("MeasuredValueSequence", []):
                measurements.append(
                    Measurement(
                        name=_meaning(item, "ConceptNameCodeSequence"),
                        value=float(value.NumericValue),
                        unit=_meaning(value, "MeasurementUnitsCodeSequence"),
                    )
                )
    # images referenced by a region are listed with it, not again on their own
    drawn = {r.image for r in regions}
    return Basis(
        regions=tuple(regions),
        images=tuple(i for i in dict.fromkeys(images) if i not in drawn),
        segments=tuple(dict.fromkeys(segments)),
        measurements=tuple(measurements),
    )


def read_basis(sr_path: Path, tracking_uid: str) -> Basis | None:
    """The basis of one finding, reading its SR from ``sr_path`` (None: no such group)."""
    group = find_group(dcmread(sr_path), tracking_uid)
    return None if group is None else basis_of(group)


def bases_of(sr: Dataset, tracking_uids: Sequence[str]) -> dict[str, Basis]:
    """The basis of each of ``tracking_uids`` found in ``sr`` (read once for a whole result)."""
    found: dict[str, Basis] = {}
    for uid in tracking_uids:
        group = find_group(sr, uid)
        if group is not None:
            found[uid] = basis_of(group)
    return found
