"""Read findings back from encoded result objects, as a viewer would: where is what.

Used by golden cases (``cds model validate``) and the geometry tests: what the model
said must be what the encoded SR, SEG and GSPS say, in source pixels. Coordinates are
edges (x1, y1, x2, y2) in source pixels, origin at the top left corner of the top left
pixel (the convention of SR SCOORD and GSPS PIXEL units). Only pydicom is used: an
independent reading of what the builders wrote.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

Code = tuple[str, str]  # (coding scheme designator, code value)
Edges = tuple[float, float, float, float]

_GROUP = ("DCM", "125007")  # Measurement Group
_FINDING = ("DCM", "121071")
_TRACKING_UID = ("DCM", "112040")
_PROBABILITY = ("DCM", "122157")
_PRESENT = ("SCT", "52101004")
_ABSENT = ("SCT", "272519000")


@dataclass(frozen=True)
class Outline:
    """A rectangle on one image (SR SCOORD or GSPS graphic)."""

    sop_uid: str
    frame: int
    edges: Edges


@dataclass
class Group:
    """One SR measurement group: a finding, its presence, its probability, its outlines."""

    tracking_uid: str
    code: Code | None
    present: bool | None
    probability: float | None
    outlines: list[Outline] = field(default_factory=list)


def _code(item: Dataset, key: str) -> Code | None:
    seq = item.get(key)
    return (str(seq[0].CodingSchemeDesignator), str(seq[0].CodeValue)) if seq else None


def _walk(seq: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in seq:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _edges(points: Sequence[float]) -> Edges:
    xy = np.asarray([float(v) for v in points], dtype=np.float64).reshape(-1, 2)
    return (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()),
            float(xy[:, 1].max()))  # fmt: skip


def _image_of(item: Dataset) -> tuple[str, int]:
    ref = item.ReferencedSOPSequence[0]
    frames = ref.get("ReferencedFrameNumber")
    frame = int(frames[0] if isinstance(frames, Sequence) and not isinstance(frames, str)
                else frames) if frames else 1  # fmt: skip
    return str(ref.ReferencedSOPInstanceUID), frame


def sr_groups(sr: Dataset) -> list[Group]:
    """Every measurement group of an SR, in document order."""
    groups = []
    for container in _walk(sr.get("ContentSequence", [])):
        if container.get("ValueType") != "CONTAINER":
            continue
        if _code(container, "ConceptNameCodeSequence") != _GROUP:
            continue
        children = list(container.get("ContentSequence", []))
        uid = next(
            (str(c.UID) for c in children
             if _code(c, "ConceptNameCodeSequence") == _TRACKING_UID), ""
        )  # fmt: skip
        code = next(
            (_code(c, "ConceptCodeSequence") for c in children
             if c.get("ValueType") == "CODE" and _code(c, "ConceptNameCodeSequence") == _FINDING),
            None,
        )  # fmt: skip
        g = Group(uid, code, None, None)
        for c in children:
            name = _code(c, "ConceptNameCodeSequence")
            if c.get("ValueType") == "CODE" and code is not None and name == code:
                value = _code(c, "ConceptCodeSequence")
                g.present = True if value == _PRESENT else False if value == _ABSENT else None
            if c.get("ValueType") == "NUM" and name == _PROBABILITY:
                g.probability = float(c.MeasuredValueSequence[0].NumericValue)
            if c.get("ValueType") != "NUM":
                continue
            for s in c.get("ContentSequence", []):
                if s.get("ValueType") != "SCOORD":
                    continue
                image = next(i for i in s.ContentSequence if i.get("ValueType") == "IMAGE")
                sop, frame = _image_of(image)
                g.outlines.append(Outline(sop, frame, _edges(s.GraphicData)))
        groups.append(g)
    return groups


def gsps_outlines(gsps: Dataset) -> list[Outline]:
    """Every rectangle (POLYLINE, PIXEL units) a GSPS draws, on its image."""
    found = []
    for ann in gsps.get("GraphicAnnotationSequence", []):
        for ref in ann.get("ReferencedImageSequence", []):
            sop = str(ref.ReferencedSOPInstanceUID)
            frames = ref.get("ReferencedFrameNumber")
            frame = int(frames) if frames else 1
            for g in ann.get("GraphicObjectSequence", []):
                if g.GraphicAnnotationUnits == "PIXEL" and g.GraphicType == "POLYLINE":
                    found.append(Outline(sop, frame, _edges(g.GraphicData)))
    return found


def seg_masks(seg: Dataset) -> dict[Code, dict[tuple[str, int], np.ndarray]]:
    """Per segment's property type code: per source image (SOP, frame), its boolean mask."""
    codes = {
        int(s.SegmentNumber): _code(s, "SegmentedPropertyTypeCodeSequence")
        for s in seg.SegmentSequence
    }
    pixels = np.asarray(seg.pixel_array).astype(bool)
    if pixels.ndim == 2:
        pixels = pixels[None]
    out: dict[Code, dict[tuple[str, int], np.ndarray]] = {}
    shared = (seg.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]

    def group(frame: Dataset, keyword: str) -> Dataset:
        item: Dataset = (frame.get(keyword) or shared.get(keyword))[0]  # per-frame, else shared
        return item

    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(group(frame, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        src = group(frame, "DerivationImageSequence").SourceImageSequence[0]
        frames = src.get("ReferencedFrameNumber")
        key = (str(src.ReferencedSOPInstanceUID), int(frames) if frames else 1)
        code = codes[number]
        assert code is not None
        masks = out.setdefault(code, {})
        masks[key] = masks[key] | pixels[i] if key in masks else pixels[i]
    return out


def box_iou(a: Edges, b: Edges) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def mask_edges(mask: np.ndarray) -> Edges | None:
    """The edges of a mask's bounding box (None when empty)."""
    r, c = np.nonzero(mask)
    if not r.size:
        return None
    return float(c.min()), float(r.min()), float(c.max() + 1), float(r.max() + 1)
