"""The frames of a SEG (``cds.results.seg``): the mask array highdicom takes, and the
one-pass build of the SEG of single-frame images in a patient Frame of Reference (a CT
or MR series), made as highdicom makes it (tests/results/test_encode_speed_shape.py
compares the two element by element) without its look-ups in the standard's tables per
image nor an array of every frame. The masks come bit-packed (``PackedMask``): a frame
of whole bytes is its mask's bits as they are, none is unpacked for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import highdicom as hd
import numpy as np
from highdicom.enum import CoordinateSystemNames
from highdicom.spatial import (
    VOLUME_INDEX_CONVENTION,
    get_image_coordinate_system,
    get_normal_vector,
    get_volume_positions,
)
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import format_number_as_ds

from cds.findings import PackedMask

#: per referenced image (or frame), the mask of each segment on it (None: none there)
Planes = Sequence[Sequence[PackedMask | None]]


def pixel_array(planes: Planes, shape: tuple[int, int]) -> np.ndarray:
    """The [frames, rows, columns, segments] mask array highdicom takes."""
    array = np.zeros((len(planes), *shape, len(planes[0]) if planes else 0), dtype=bool)
    for row, masks in enumerate(planes):
        for s, mask in enumerate(masks):
            if mask is not None:
                array[row, :, :, s] = mask.unpack()
    return array


def frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def new_item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def in_patient_space(sources: Sequence[Dataset]) -> bool:
    """Whether ``sources`` are single-frame images in a patient Frame of Reference (a
    CT or MR series): their SEG is built in one pass (``in_one_pass``)."""
    return all(frames(ds) == 1 for ds in sources) and (
        get_image_coordinate_system(sources[0]) == CoordinateSystemNames.PATIENT
    )


def _one_series(sources: Sequence[Dataset]) -> None:
    """highdicom's checks of its source images, which ``in_one_pass`` gives it one of."""
    if len({(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Rows, ds.Columns,
             ds.get("FrameOfReferenceUID")) for ds in sources}) > 1:  # fmt: skip
        raise ValueError(
            "Source images must all be part of the same series and must "
            "have the same image dimensions (number of rows/columns)."
        )
    orientation = sources[0].ImageOrientationPatient
    if any(ds.ImageOrientationPatient != orientation for ds in sources):
        raise ValueError("Source images must have a shared orientation.")


def in_one_pass(
    make: Callable[..., hd.seg.Segmentation], referenced: Sequence[Dataset], planes: Planes
) -> hd.seg.Segmentation:
    """The SEG of single-frame images in a patient Frame of Reference, built as
    highdicom builds it (tests/results/test_encode_speed_shape.py compares the two),
    its frames made in one pass.

    highdicom makes everything that does not depend on the frames from the first image
    alone (patient, study, series, equipment, segments, dimensions, shared functional
    groups); the rest is done here as highdicom does it for every image
    (``_place_planes``, ``_add_frames``), without its look-ups in the standard's
    tables per image (0.1 s for 300) nor an array of every frame.
    """
    _one_series(referenced)
    first = referenced[0]
    shape = (int(first.Rows), int(first.Columns))
    seg = make(source_images=[first], pixel_array=pixel_array(planes[:1], shape))
    positions = [
        hd.PlanePositionSequence(CoordinateSystemNames.PATIENT, ds.ImagePositionPatient)
        for ds in referenced
    ]
    order = _place_planes(seg, first, positions, segments=len(planes[0]))
    _add_frames(seg, referenced, planes, positions, order)
    references = [
        new_item(ReferencedSOPClassUID=ds.SOPClassUID, ReferencedSOPInstanceUID=ds.SOPInstanceUID)
        for ds in referenced
    ]
    seg.SourceImageSequence = references
    seg.ReferencedSeriesSequence = [
        new_item(SeriesInstanceUID=first.SeriesInstanceUID, ReferencedInstanceSequence=references)
    ]
    return hd.seg.Segmentation.from_dataset(seg, copy=False)  # highdicom's view of all frames


def _place_planes(
    seg: Dataset, first: Dataset, positions: Sequence[hd.PlanePositionSequence], *, segments: int
) -> np.ndarray:
    """The spacing between slices when the images do not state it, the 3D dimension
    organisation when the planes of one segment are evenly spaced, and the planes'
    order along their normal (returned), as highdicom sets them from every plane."""
    orientation = [float(v) for v in first.ImageOrientationPatient]
    values = np.array([[float(v) for v in p[0].ImagePositionPatient] for p in positions])
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    if "SpacingBetweenSlices" not in first:  # else highdicom copied the image's own
        spacing, _ = get_volume_positions(
            image_positions=values.tolist(), image_orientation=orientation
        )
        if spacing is not None:
            measures.SpacingBetweenSlices = format_number_as_ds(spacing)
        elif "SpacingBetweenSlices" in measures:
            del measures.SpacingBetweenSlices
    spacing = None
    if len(positions) > 1 and segments == 1:  # several segments: never 3D
        spacing, _ = get_volume_positions(
            image_positions=values.tolist(), image_orientation=orientation, sort=False
        )
    if spacing is not None and spacing > 0.0:
        seg.DimensionOrganizationType = "3D"
    elif "DimensionOrganizationType" in seg:
        del seg.DimensionOrganizationType
    normal = get_normal_vector(orientation, index_convention=VOLUME_INDEX_CONVENTION)
    _, order = np.unique(values @ normal, return_index=True)
    if len(order) != len(positions):
        raise ValueError("Plane positions must not contain duplicates.")
    return order


def _add_frames(
    seg: Dataset,
    referenced: Sequence[Dataset],
    planes: Planes,
    positions: Sequence[hd.PlanePositionSequence],
    order: np.ndarray,
) -> None:
    """One frame per (segment, plane in ``order``) where the segment has a pixel: its
    Derivation Image (the source image), its index values (the segment, the plane's
    place in the order), its position; the bits of every frame, packed frame by frame;
    whether segments overlap. The coded items are the shared ones of highdicom's
    frame, as in its own frames."""
    template = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    derivation_code = template.DerivationCodeSequence[0]
    purpose = template.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0]
    derived = [
        _element_item(
            (0x00089215, "SQ", [derivation_code]),  # DerivationCodeSequence
            (0x00082112, "SQ", [_element_item(  # SourceImageSequence
                (0x00081150, "UI", ds.SOPClassUID),  # ReferencedSOPClassUID
                (0x00081155, "UI", ds.SOPInstanceUID),  # ReferencedSOPInstanceUID
                (0x0040A170, "SQ", [purpose]),  # PurposeOfReferenceCodeSequence
                (0x0028135A, "CS", "YES"),  # SpatialLocationsPreserved
            )]),
        )
        for ds in referenced
    ]  # fmt: skip
    several = len(planes[0]) > 1  # else the segment is named in the shared groups
    if several:  # highdicom's first plane alone said it
        seg.SegmentsOverlap = "YES" if any(_overlap(masks) for masks in planes) else "NO"
    frames: list[Dataset] = []
    pixels: list[PackedMask] = []
    for s in range(len(planes[0])):
        for place, plane in enumerate(order, start=1):
            mask = planes[plane][s]
            if mask is None:  # ``_planes`` keeps the positive masks of single frames only
                continue
            item = _element_item(
                (0x00089124, "SQ", [derived[plane]]),  # DerivationImageSequence
                (0x00209111, "SQ", [_element_item((0x00209157, "UL", [s + 1, place]))]),
                (0x00209113, "SQ", positions[plane]),  # PlanePositionSequence
            )
            if several:
                number = _element_item((0x0062000B, "US", s + 1))  # ReferencedSegmentNumber
                item.add(DataElement(0x0062000A, "SQ", [number]))  # SegmentIdentificationSeq.
            frames.append(item)
            pixels.append(mask)
    packed = _packed(pixels)
    seg.PerFrameFunctionalGroupsSequence = frames
    seg.NumberOfFrames = len(frames)
    seg.PixelData = packed + b"\x00" * (len(packed) % 2)


def _overlap(masks: Sequence[PackedMask | None]) -> bool:
    """Whether a pixel of one plane lies in two segments."""
    present = [m for m in masks if m is not None]
    return any(a.overlaps(b) for i, a in enumerate(present) for b in present[i + 1 :])


def _packed(masks: Sequence[PackedMask]) -> bytes:
    """The frames' bits, one after the other with no gap (PS3.5 8.1.1): when each frame
    fills whole bytes, its mask's bits as they are; else the frames unpacked into one
    run of pixels, packed at once."""
    pixels = int(np.prod(masks[0].shape, dtype=np.int64))
    if pixels % 8 == 0:
        return b"".join(m.bits for m in masks)
    run = np.empty(pixels * len(masks), dtype=bool)
    for i, m in enumerate(masks):
        run[i * pixels : (i + 1) * pixels] = m.unpack().reshape(-1)
    return np.packbits(run, bitorder="little").tobytes()


def _element_item(*elements: tuple[int, str, object]) -> Dataset:
    """An item of (tag, VR, value) elements, added without keyword look-ups."""
    item = Dataset()
    for tag, vr, value in elements:
        item.add(DataElement(tag, vr, value))
    return item
