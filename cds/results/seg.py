"""DICOM Segmentation (SEG) of a segmentation model's findings, built with highdicom.

One binary segment per finding that has a positive mask; one frame per
(source image, segment) with positive pixels, referencing its source image
(highdicom's one-to-one mapping of ``pixel_array`` frames to ``source_images``),
so each frame lines up with the slice it was computed on. For a series of
single-frame images in a patient Frame of Reference (CT, MR) highdicom builds what
does not depend on the frames and the frames are added in one pass, as highdicom
would add them (``in_one_pass``: half the time of highdicom's constructor for 300
slices, and no array of every frame); other sources go through highdicom's constructor.

The object says it is advisory (SeriesDescription prefix, ContentLabel,
ContentDescription, in the job's language) and names the model: segment
AlgorithmIdentification (name, version, SHA-256 of model.onnx as an algorithm
parameter), ManufacturerModelName, and a Contributing Equipment item.

Source images without a Frame of Reference (or without any position in it) still
give a SEG (issue 16): the Segmentation IOD needs the Frame of Reference module only
when the Derivation Image functional group is absent (PS3.3 A.51.3), and "if the
Frame of Reference UID is not present, each pixel of the segmentation shall correspond
to a pixel in a referenced image, using the Derivation Image Functional Group"
(A.51.5.1). highdicom makes such a SEG of one frame only, so it builds this one on a
copy of the sources with a stand-in geometry that keeps their order
(``_with_stand_in_geometry``), then the stand-in is taken out again
(``_drop_stand_in_geometry``): no Frame of Reference, Plane Position,
Plane Orientation or Pixel Measures; each frame keeps its Derivation Image reference
and is indexed by segment and source image; PatientOrientation (General Image, Type
2C) is the source's. The object's notes say it.

Located single-frame images that state no valid SliceThickness (Type 2: absent, or
emptied by the copy as not a valid DS) still give a SEG with its Pixel Measures whole
(SliceThickness is Type 1C there): the spacing between the series' slices stands in,
or for a single slice its pixel spacing (``_with_slice_thickness``); a note says which.

Its Series and SOP Instance UIDs are derived from the study, the source
series, the model name and version and the result kind, so a re-run or a
resend replaces the object at the destination instead of adding a copy.
The source series is part of the derivation (beyond study, model and kind)
so that one model run on two series of a study gives two objects, not one
that overwrites the other.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence

import highdicom as hd
import numpy as np
from highdicom.spatial import (
    get_image_coordinate_system,
)
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import format_number_as_ds

from cds.errors import EncodingError
from cds.findings import (
    Code,
    Finding,
    ImageRef,
    InferenceResult,
    Masks,
    PackedMask,
    has_positive_mask,
)
from cds.i18n import advisory
from cds.inference import manifest as mf
from cds.results import common
from cds.results.common import (
    LO,
    MANUFACTURER,
    check_model_of,
    complete,
    identify_vendor,
    tolerant,
)
from cds.results.inherited import ORIENTATION_UNKNOWN, patient_orientation, set_lossy_compression
from cds.results.seg_frames import (
    Planes,
    frames,
    in_one_pass,
    in_patient_space,
    new_item,
    pixel_array,
)

RESULT_KIND = "SEG"
#: the shared UID derivation, with this builder's kind by default
result_uids = functools.partial(common.result_uids, kind=RESULT_KIND)

_ANATOMY = hd.sr.CodedConcept("91723000", "SCT", "Anatomical structure")
_ABNORMAL = hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure")
_AI = hd.sr.CodedConcept(
    codes.DCM.ArtificialIntelligence.value,
    codes.DCM.ArtificialIntelligence.scheme_designator,
    codes.DCM.ArtificialIntelligence.meaning,
)
NO_FRAME_OF_REFERENCE = (
    "made without Frame of Reference, as the source images have none: each frame "
    "references the source image it lies on"
)
#: the Frame of Reference of the stand-in geometry (``_with_stand_in_geometry``), never written
_STAND_IN_FOR = "2.25.1"
_IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
_IMAGE_POSITION = tag_for_keyword("ImagePositionPatient")
_ORIENTATIONS_DIFFER = "PatientOrientation left empty: the source images differ in orientation"
THICKNESS_FROM_SPACING = (
    "SliceThickness of the segmentation (Pixel Measures, Type 1C) is the spacing between "
    "the source slices: the source images state no valid slice thickness"
)
THICKNESS_FROM_PIXEL_SPACING = (
    "SliceThickness of the segmentation (Pixel Measures, Type 1C) is the source's pixel "
    "spacing, a voxel as deep as it is wide: the source image states no valid slice "
    "thickness and is a single slice"
)


def _coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def segment_category(code: Code) -> hd.sr.CodedConcept:
    """SegmentedPropertyCategory of a label's code.

    The manifest does not (yet) say whether a label is anatomy, so SNOMED CT body
    structures are recognised by their naming ('Bone structure', 'Structure of
    liver', 'Entire liver'); everything else is a morphologically abnormal structure.
    """
    meaning = code.meaning.lower()
    anatomy = code.scheme == "SCT" and (
        meaning.startswith(("structure of ", "entire "))
        or (meaning.endswith(" structure") and "abnormal" not in meaning)
    )
    return _ANATOMY if anatomy else _ABNORMAL


def _has_mask(finding: Finding) -> bool:
    return has_positive_mask(finding.per_image)


def _packed_masks(finding: Finding) -> Iterator[tuple[ImageRef, PackedMask]]:
    """The finding's masks, bit-packed: a ``Masks``' as they are, others packed here."""
    per = finding.per_image
    if isinstance(per, Masks):
        yield from per.packed_items()
    else:
        for ref, mask in per.items():
            yield ref, PackedMask.of(np.asarray(mask))


def _frame_index(sources: Sequence[Dataset]) -> dict[ImageRef, int]:
    """Where each source image (SOP Instance UID, 1-based frame) lies in ``pixel_array``."""
    if len(sources) == 1 and int(sources[0].get("NumberOfFrames", 1) or 1) > 1:
        uid = str(sources[0].SOPInstanceUID)
        return {ImageRef(uid, f + 1): f for f in range(int(sources[0].NumberOfFrames))}
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in sources):
        raise EncodingError(
            "SEG: the source is several multi-frame instances; highdicom references "
            "either single-frame images or one multi-frame image"
        )
    return {ImageRef(str(ds.SOPInstanceUID), 1): i for i, ds in enumerate(sources)}


def _planes(
    sources: Sequence[Dataset], findings: Sequence[Finding]
) -> tuple[list[Dataset], Planes]:
    """The source images to reference and, per image (or frame), the mask of each
    segment on it (None where the finding has none there).

    Single-frame sources are narrowed to those with a positive pixel in some
    segment (a 500-slice series with a small finding stays small); a
    multi-frame source keeps all its frames and highdicom omits the empty ones.
    """
    index = _frame_index(sources)
    multiframe = len(sources) == 1 and len(index) > 1
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    masks: dict[int, list[PackedMask | None]] = {}
    for s, f in enumerate(findings):
        for ref, mask in _packed_masks(f):
            if ref not in index:
                raise EncodingError(
                    f"SEG: the mask of {f.label.code.meaning!r} is on image "
                    f"{ref.sop_uid} frame {ref.frame}, which is not among the source images"
                )
            if not (multiframe or mask.count):
                continue
            if mask.shape != (rows, columns):
                raise EncodingError(
                    f"SEG: the mask of {f.label.code.meaning!r} on image {ref.sop_uid} is "
                    f"{mask.shape[0]}x{mask.shape[1]}, the image is {rows}x{columns}"
                )
            masks.setdefault(index[ref], [None] * len(findings))[s] = mask
    keep = list(range(len(index))) if multiframe else sorted(masks)
    planes = [masks.get(frame, [None] * len(findings)) for frame in keep]
    referenced = list(sources) if multiframe else [sources[i] for i in keep]
    return [tolerant(ds) for ds in referenced], planes


def _located(sources: Sequence[Dataset]) -> bool:
    """Whether every source image lies in a Frame of Reference, with positions in it."""
    return all(get_image_coordinate_system(ds) is not None for ds in sources)


def _number(value: object) -> float | None:
    """A DS value as a number, None when empty or not one (a copy empties an invalid one)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _slice_spacing(sources: Sequence[Dataset]) -> float | None:
    """The spacing between the slices of single-frame ``sources``: the one they state
    (SpacingBetweenSlices), else the smallest distance between their planes along the
    normal of the first one's orientation; None for a single plane."""
    stated = [_number(ds.get("SpacingBetweenSlices")) for ds in sources]
    if stated and all(v is not None and v > 0 for v in stated):
        return min(v for v in stated if v is not None)
    try:
        row, column = np.reshape([float(v) for v in sources[0].ImageOrientationPatient], (2, 3))
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in sources])
    except (AttributeError, TypeError, ValueError):
        return None
    gaps = np.diff(np.unique(np.round(positions @ np.cross(row, column), 4)))
    return float(gaps.min()) if gaps.size else None


def _with_slice_thickness(
    referenced: Sequence[Dataset], sources: Sequence[Dataset], notes: list[str]
) -> list[Dataset]:
    """``referenced`` (single-frame images in a Frame of Reference), those without a valid
    SliceThickness as copies with one: the Pixel Measures of the SEG need it (Type 1C,
    PS3.3 C.7.6.16.2.1), and highdicom takes it from the first source image. It is the
    spacing between the slices of the series (``sources``), or for a single slice its
    pixel spacing; ``notes`` say which. The images that state one are kept as they are."""
    if all(_number(ds.get("SliceThickness")) is not None for ds in referenced):
        return list(referenced)
    series = [ds for ds in sources if frames(ds) == 1]
    thickness, note = _slice_spacing(series), THICKNESS_FROM_SPACING
    if thickness is None:
        spacing = [_number(v) for v in referenced[0].get("PixelSpacing") or ()]
        if len(spacing) != 2 or any(v is None or v <= 0 for v in spacing):
            return list(referenced)  # highdicom says what is missing
        thickness, note = min(v for v in spacing if v is not None), THICKNESS_FROM_PIXEL_SPACING
    notes.append(note)
    value = format_number_as_ds(thickness)

    def stated(ds: Dataset) -> Dataset:
        if _number(ds.get("SliceThickness")) is not None:
            return ds
        copy = Dataset()
        copy.update(ds)
        if hasattr(ds, "file_meta"):
            copy.file_meta = ds.file_meta
        if "SliceThickness" in copy:
            del copy.SliceThickness  # from the copy only: the elements are shared
        copy.SliceThickness = value
        return copy

    return [stated(ds) for ds in referenced]


def _with_stand_in_geometry(sources: Sequence[Dataset]) -> list[Dataset]:
    """Copies of ``sources`` (theirs are not changed) in a stand-in Frame of Reference:
    unit pixels, one axial plane per image (or frame) in their order, so that highdicom
    maps the frames to the images one to one (its Derivation Image references)."""
    copies = []
    for i, ds in enumerate(sources):
        copy = Dataset()
        copy.update(ds)
        if hasattr(ds, "file_meta"):
            copy.file_meta = ds.file_meta
        for kw in (
            "FrameOfReferenceUID",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "SliceThickness",
            "SharedFunctionalGroupsSequence",
            "PerFrameFunctionalGroupsSequence",
        ):
            if kw in copy:
                delattr(copy, kw)  # from the copy only: the elements are shared
        copy.FrameOfReferenceUID = _STAND_IN_FOR
        if frames(ds) > 1:
            copy.SharedFunctionalGroupsSequence = [
                new_item(
                    PlaneOrientationSequence=[new_item(ImageOrientationPatient=_IDENTITY)],
                    PixelMeasuresSequence=[new_item(PixelSpacing=[1.0, 1.0], SliceThickness=1.0)],
                )
            ]
            copy.PerFrameFunctionalGroupsSequence = [
                new_item(
                    PlanePositionSequence=[new_item(ImagePositionPatient=[0.0, 0.0, float(f)])]
                )
                for f in range(frames(ds))
            ]
        else:
            copy.ImagePositionPatient = [0.0, 0.0, float(i)]
            copy.ImageOrientationPatient = _IDENTITY
            copy.PixelSpacing = [1.0, 1.0]
            copy.SliceThickness = 1.0
        copies.append(copy)
    return copies


def _set_dimension_organization(seg: Dataset, uid: str) -> None:
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = uid
    for item in seg.get("DimensionIndexSequence", []):
        item.DimensionOrganizationUID = uid


def _drop_stand_in_geometry(seg: Dataset, sources: Sequence[Dataset], notes: list[str]) -> None:
    """Take the stand-in geometry out of ``seg`` (see the module): the sources' own Frame
    of Reference where they share one, else none (said in ``notes``); no plane position,
    orientation or pixel measures; the position dimension becomes the source image
    (Frame Label 'source image N', N its place among ``sources``); PatientOrientation
    is the sources' (Type 2C: required without a plane orientation), else empty."""
    for kw in ("FrameOfReferenceUID", "PositionReferenceIndicator", "DimensionOrganizationType"):
        if kw in seg:
            delattr(seg, kw)
    own = {str(ds.get("FrameOfReferenceUID", "") or "") for ds in sources}
    if len(own) == 1 and "" not in own:  # in a Frame of Reference, without positions
        seg.FrameOfReferenceUID = own.pop()
        seg.PositionReferenceIndicator = sources[0].get("PositionReferenceIndicator") or ""
    else:
        notes.append(NO_FRAME_OF_REFERENCE)
    shared = seg.SharedFunctionalGroupsSequence[0]
    for kw in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
        if kw in shared:
            delattr(shared, kw)
    dimensions = list(seg.DimensionIndexSequence)
    label = new_item(
        DimensionOrganizationUID=dimensions[0].DimensionOrganizationUID,
        DimensionIndexPointer=tag_for_keyword("FrameLabel"),
        FunctionalGroupPointer=tag_for_keyword("FrameContentSequence"),
        DimensionDescriptionLabel="Source image",
    )
    where = next(
        (i for i, d in enumerate(dimensions) if d.DimensionIndexPointer == _IMAGE_POSITION),
        len(dimensions),
    )
    dimensions[where : where + 1] = [label]
    seg.DimensionIndexSequence = dimensions
    place = {
        (str(ds.SOPInstanceUID), frame): n
        for n, (ds, frame) in enumerate(
            ((ds, f) for ds in sources for f in range(1, frames(ds) + 1)), start=1
        )
    }
    for item in seg.PerFrameFunctionalGroupsSequence:
        if "PlanePositionSequence" in item:
            del item.PlanePositionSequence
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        n = place[
            (str(source.ReferencedSOPInstanceUID), int(source.get("ReferencedFrameNumber", 1)))
        ]
        content = item.FrameContentSequence[0]
        values = list(content.DimensionIndexValues)
        values[where : where + 1] = [n]
        content.DimensionIndexValues = values
        content.FrameLabel = f"source image {n}"
    orientations = {patient_orientation(ds) for ds in sources}
    orientation = orientations.pop() if len(orientations) == 1 else None
    seg.PatientOrientation = list(orientation or ())  # empty: unknown (Type 2)
    if orientation is None:
        notes.append(ORIENTATION_UNKNOWN if len(orientations) == 0 else _ORIENTATIONS_DIFFER)


#: segment colours in the viewer, one per segment in turn (CSS colour names)
_DISPLAY_COLORS = ("yellow", "orange", "magenta", "cyan", "lime", "red")


def build_seg(
    source_datasets: Sequence[Dataset],
    result: InferenceResult,
    manifest: mf.Manifest,
    lang: str,
    *,
    series_number: int = 901,
    instance_number: int = 1,
    uid_root_seed: str = "",
    notes: list[str] | None = None,
) -> hd.seg.Segmentation:
    """A binary SEG of ``result``'s masks on ``source_datasets`` (the series the model ran on).

    Sources without a Frame of Reference give a SEG without one (see the module);
    ``notes`` get what the object says differently from a SEG of located images.

    Raises EncodingError when there is nothing to encode (no positive mask) or the
    masks do not fit the source images; ValueError for an unknown language or a
    manifest that is not the result's model.
    """
    t = advisory(lang)
    rec = result.record
    notes = [] if notes is None else notes
    check_model_of(manifest, result)
    if not rec.sha256:
        raise EncodingError(f"SEG: the result of {rec.model} {rec.version} has no model SHA-256")
    if not source_datasets:
        raise ValueError("source_datasets is empty")
    findings = [f for f in result.findings if _has_mask(f)]
    if not findings:
        raise EncodingError(f"SEG: {rec.model} {rec.version} found no positive mask to encode")

    referenced, planes = _planes(source_datasets, findings)
    family = _coded(manifest.algorithm_family) if manifest.algorithm_family else _AI
    algorithm = hd.AlgorithmIdentificationSequence(
        name=rec.model,
        family=family,
        version=rec.version,
        source=manifest.manufacturer,
        parameters={"sha256": rec.sha256},
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f.label.display.get(lang)[:LO],
            segmented_property_category=segment_category(f.label.code),
            segmented_property_type=_coded(f.label.code),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            # without it OHIF warns and picks a colour itself
            display_color=hd.color.CIELabColor.from_string(
                _DISPLAY_COLORS[(number - 1) % len(_DISPLAY_COLORS)]
            ),
        )
        for number, f in enumerate(findings, start=1)
    ]
    produced_by = t.produced_by.format(name=rec.model, version=rec.version, sha256=rec.sha256)
    equipment = hd.ContributingEquipment(
        manufacturer=manifest.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=rec.model,
        software_versions=rec.version,
        contribution_description=f"{t.banner}. {produced_by}",
    )
    study_uid = str(referenced[0].StudyInstanceUID)
    series_uids = rec.series_uids or (str(referenced[0].SeriesInstanceUID),)
    series_uid, sop_uid = result_uids(
        study_uid, series_uids, rec.model, rec.version, kind=RESULT_KIND, seed=uid_root_seed
    )
    make = functools.partial(
        hd.seg.Segmentation,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=rec.model[:LO],
        software_versions=rec.cds_version,
        device_serial_number=rec.sha256[:LO],
        content_label=t.content_label,
        content_description=t.banner[:LO],
        contributing_equipment=[equipment],
        series_description=f"{t.series_prefix}{rec.model} {rec.version}"[:LO],
        specific_character_set="ISO_IR 192",  # the French texts hold accents
    )
    located = _located(referenced)
    if located and all(frames(ds) == 1 for ds in referenced):
        referenced = _with_slice_thickness(referenced, source_datasets, notes)
    try:
        if located and in_patient_space(referenced):
            seg = in_one_pass(make, referenced, planes)
        else:
            seg = make(
                source_images=referenced if located else _with_stand_in_geometry(referenced),
                pixel_array=pixel_array(
                    planes, (int(referenced[0].Rows), int(referenced[0].Columns))
                ),
            )
    except (ValueError, TypeError) as exc:
        raise EncodingError(f"SEG of {rec.model} {rec.version} is not valid: {exc}") from exc
    if not located:
        _drop_stand_in_geometry(seg, referenced, notes)
        seg = hd.seg.Segmentation.from_dataset(seg, copy=False)  # highdicom's view of it
    # highdicom draws the Dimension Organization UID at random: derived as the SOP
    # Instance UID is, so that the same inputs make the same bytes (a rerun, cds process)
    _set_dimension_organization(seg, common.derived_uid([sop_uid, "dimension-organization"]))
    set_lossy_compression(seg, source_datasets, notes)
    complete(seg, manifest.manufacturer)
    identify_vendor(seg, manifest)
    return seg
