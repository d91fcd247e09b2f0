"""Secondary Capture (SC) of one source image with a model's findings burned in.

For viewers that show no SEG or presentation state: an RGB picture of the
source image, windowed for display (the source's first WindowCenter/Width,
else the 1st-99th percentiles), with the findings drawn on it (mask contours
over a translucent fill, boxes as rectangles, beside each a label with the
advisory word, the finding and its score: 'AI - Focal hyperdensity - 0.93') and a
banner across the top with the advisory text in the job's language and the
model's name and version. BurnedInAnnotation is YES.

Text is drawn with Pillow's built-in default font: Pillow is already installed
as a dependency of highdicom (which uses it for its own image codecs), so this
adds no dependency.

UIDs are derived like the SEG's (``result_uids``, kind "SC") plus the source
image, so each source image gives its own, stable SC.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from cds.errors import EncodingError
from cds.findings import Finding, ImageRef, InferenceResult
from cds.i18n import advisory
from cds.inference import manifest as mf
from cds.results.common import (
    LO,
    MANUFACTURER,
    TYPE2_COPIED,
    below_threshold,
    check_model_of,
    identify_vendor,
    result_uids,
)
from cds.results.inherited import (
    ORIENTATION_UNKNOWN,
    patient_orientation,
    set_lossy_compression,
    set_series_laterality,
)

RESULT_KIND = "SC"
#: colours of successive findings (RGB)
_COLOURS = ((255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 200, 0), (255, 0, 255))
_BANNER_BG = (0, 0, 0)
_BANNER_FG = (255, 255, 0)
_FILL_ALPHA = 0.3


def _frame(ds: Dataset, frame: int) -> np.ndarray:
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[frame - 1]
    if pixels.ndim != 2:
        raise EncodingError(f"SC: source image {ds.SOPInstanceUID} is not a grayscale image")
    return pixels.astype(np.float64)


def _first(value: Any) -> float | None:
    """The first of a (possibly multi-valued) DS, or None."""
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def windowed(ds: Dataset, frame: int = 1) -> np.ndarray:
    """The image as uint8 grey levels: rescaled, then the source's window or the 1-99% range."""
    pixels = _frame(ds, frame)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    values = pixels * slope + intercept
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 1:
        low, high = center - width / 2, center + width / 2
    else:
        low, high = (float(v) for v in np.percentile(values, [1, 99]))
    if high <= low:
        high = low + 1
    out = np.clip((values - low) / (high - low), 0, 1) * 255
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return out.round().astype(np.uint8)


def _contour(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    contour: np.ndarray = mask & ~inner
    return contour


def drawable(text: str) -> str:
    """``text`` in the ASCII the built-in font draws: dashes and the labels' middle dot as
    '-', accents dropped."""
    text = text.replace("\u2014", "-").replace("\u2013", "-").replace("\u00b7", "-")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii())


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _banner_height(rows: int) -> int:
    return max(24, rows // 12)


def render(
    source_dataset: Dataset, image_ref: ImageRef, result: InferenceResult, lang: str
) -> np.ndarray:
    """The RGB pixels of the SC: the windowed image, the findings and the banner."""
    t = advisory(lang)
    rec = result.record
    grey = windowed(source_dataset, image_ref.frame)
    rows, columns = grey.shape
    rgb = np.repeat(grey[:, :, None], 3, axis=2).astype(np.float64)
    findings = [f for f in result.findings if image_ref in f.per_image]
    labels: list[tuple[tuple[int, int], str, tuple[int, int, int]]] = []
    boxes: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]] = []
    for n, finding in enumerate(findings):
        colour = _COLOURS[n % len(_COLOURS)]
        _overlay(finding, image_ref, lang, colour=colour, rgb=rgb, boxes=boxes, labels=labels)
    image = Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    for (r0, c0, r1, c1), colour in boxes:
        draw.rectangle((c0, r0, c1, r1), outline=colour, width=1)
    small = _font(max(10, rows // 40))
    for (r, c), text, colour in labels:
        draw.text((c, r), drawable(text), fill=colour, font=small)
    height = _banner_height(rows)
    draw.rectangle((0, 0, columns - 1, height - 1), fill=_BANNER_BG)
    big = _font(max(9, height // 2 - 2))
    draw.text((4, 1), drawable(t.banner), fill=_BANNER_FG, font=big)
    draw.text((4, height // 2), drawable(f"{rec.model} {rec.version}"), fill=_BANNER_FG, font=big)
    return np.asarray(image, dtype=np.uint8)


def build_sc(
    source_dataset: Dataset,
    image_ref: ImageRef,
    result: InferenceResult,
    manifest: mf.Manifest,
    lang: str,
    *,
    series_number: int = 904,
    instance_number: int = 1,
    uid_root_seed: str | None = None,
    notes: list[str] | None = None,
) -> Dataset:
    """An RGB SC of ``image_ref`` (an image of ``source_dataset``) with ``result`` burned in.

    A source without any orientation gives an SC whose PatientOrientation is empty
    (General Image, Type 2C: unknown), and ``notes`` say so; a lossy compressed source
    gives an SC that says it (``set_lossy_compression``).

    ValueError for an unknown language, a manifest that is not the result's model
    or an image that is not ``source_dataset``'s; EncodingError when the
    object cannot be made valid.
    """
    notes = [] if notes is None else notes
    t = advisory(lang)
    rec = result.record
    check_model_of(manifest, result)
    if image_ref.sop_uid != str(source_dataset.SOPInstanceUID):
        raise ValueError(f"image {image_ref.sop_uid} is not the source dataset's")
    pixels = render(source_dataset, image_ref, result, lang)

    study_uid = str(source_dataset.StudyInstanceUID)
    series_uids = rec.series_uids or (str(source_dataset.SeriesInstanceUID),)
    seed = uid_root_seed or ""
    series_uid, _ = result_uids(
        study_uid, series_uids, rec.model, rec.version, kind=RESULT_KIND, seed=seed
    )
    _, sop_uid = result_uids(
        study_uid,
        series_uids,
        rec.model,
        rec.version,
        kind=f"{RESULT_KIND}/{image_ref.sop_uid}/{image_ref.frame}",
        seed=seed,
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = source_dataset.SOPClassUID
    reference.ReferencedSOPInstanceUID = source_dataset.SOPInstanceUID
    if int(source_dataset.get("NumberOfFrames", 1) or 1) > 1:
        reference.ReferencedFrameNumber = image_ref.frame
    try:
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=_tolerant(source_dataset),
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=sop_uid,
            instance_number=instance_number,
            manufacturer=MANUFACTURER,
            # highdicom insists on a value in the PATIENT coordinate system; the real
            # one (or none) is set below, checked by patient_orientation
            patient_orientation=("L", "F"),
        )
    except (ValueError, TypeError) as exc:
        raise EncodingError(f"SC of {rec.model} {rec.version} is not valid: {exc}") from exc
    orientation = patient_orientation(source_dataset)
    sc.PatientOrientation = list(orientation or ())  # empty: unknown (Type 2)
    if orientation is None:
        notes.append(ORIENTATION_UNKNOWN)
    sc.SpecificCharacterSet = "ISO_IR 192"
    set_series_laterality(sc, source_dataset)
    set_lossy_compression(sc, [source_dataset], notes)
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"
    sc.SeriesDescription = f"{t.series_prefix}{rec.model} {rec.version}"[:LO]
    sc.ImageComments = t.banner
    sc.DerivationDescription = t.produced_by.format(
        name=rec.model, version=rec.version, sha256=rec.sha256
    )
    sc.ManufacturerModelName = rec.model[:LO]
    sc.SoftwareVersions = rec.cds_version
    sc.SourceImageSequence = [reference]
    ref2 = Dataset()
    ref2.update(reference)
    sc.ReferencedImageSequence = [ref2]
    identify_vendor(sc, manifest)
    return sc


def _tolerant(ds: Dataset) -> Dataset:
    fixed = Dataset()
    fixed.update({e.tag: e for e in ds if e.keyword in (*TYPE2_COPIED, "StudyInstanceUID")})
    for kw in TYPE2_COPIED:
        if kw not in fixed:
            setattr(fixed, kw, None)
    fixed.StudyInstanceUID = ds.StudyInstanceUID
    return fixed


def _overlay(
    finding: Finding,
    ref: ImageRef,
    lang: str,
    *,
    colour: tuple[int, int, int],
    rgb: np.ndarray,
    boxes: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]],
    labels: list[tuple[tuple[int, int], str, tuple[int, int, int]]],
) -> None:
    where = finding.per_image[ref]
    t = advisory(lang)
    name = finding.label.display.get(lang)
    rows, columns = rgb.shape[:2]
    if isinstance(where, np.ndarray):
        mask = where.astype(bool)
        if mask.shape != (rows, columns):
            raise EncodingError(
                f"SC: the mask of {finding.label.code.meaning!r} is "
                f"{mask.shape[0]}x{mask.shape[1]}, the image is {rows}x{columns}"
            )
        if not mask.any():
            return
        rgb[mask] = rgb[mask] * (1 - _FILL_ALPHA) + np.array(colour) * _FILL_ALPHA
        rgb[_contour(mask)] = colour
        r, c = np.nonzero(mask)
        label = t.finding_label(name, finding.score)
        labels.append(((int(r.min()), int(c.max()) + 3), label, colour))
    elif isinstance(where, list):
        for (r0, c0, r1, c1), score in where:
            box = (int(r0), int(c0), int(r1), int(c1))
            boxes.append((box, colour))
            labels.append(((box[0], box[3] + 3), t.finding_label(name, score), colour))
    else:
        below = below_threshold(finding.label, float(where))
        label = t.finding_label(name, float(where), below_threshold=below)
        labels.append(((rows - rows // 20, 4), label, colour))
