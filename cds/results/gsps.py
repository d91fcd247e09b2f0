"""Grayscale Softcopy Presentation State (GSPS) of a model's findings, built with highdicom.

Graphic annotations on the source images, in one layer named after the
model: detection boxes as closed POLYLINE rectangles, segmentation masks as
their bounding rectangles, and a TEXT label beside each that says it is an AI
result, with the finding's display name and score in the job's language
('AI · Focal hyperdensity · 0.93', 'IA · Hyperdensité focale · 0,93').
Classification scores become such a TEXT line at the top of each image, which
adds 'below threshold' when the model does not report the finding. The
source's window, when it has one, is kept as the presentation's VOI LUT.

The object says it is advisory (SeriesDescription prefix, ContentLabel,
ContentDescription) and names the model (ManufacturerModelName, software
version, SHA-256 as DeviceSerialNumber, as the SEG does). UIDs come from
``result_uids`` with kind "GSPS".

highdicom leaves out the General Series Laterality (Type 2C, required for
paired body parts): the source's side; absent, with the Body Part Examined,
for an unpaired body part; else present and empty (``set_series_laterality``).
A presentation state holds no pixels, so it carries no Lossy Image Compression
(no module of the GSPS IOD has it).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from cds.errors import EncodingError
from cds.findings import Finding, ImageRef, InferenceResult
from cds.i18n import advisory
from cds.inference import manifest as mf
from cds.results.common import (
    LO,
    MANUFACTURER,
    below_threshold,
    check_model_of,
    complete,
    identify_vendor,
    rectangle,
    result_uids,
    tolerant,
)
from cds.results.inherited import set_series_laterality

RESULT_KIND = "GSPS"
_LAYER = "CDS_AI"
#: the layer's recommended display colour (the SEG's first segment's too), and on a
#: grayscale display its brightest value: a viewer that has no default colour for the
#: layer draws it where the radiologist sees it, not in an arbitrary one
LAYER_COLOR = "yellow"
_WHITE = 0xFFFF
_PIXEL = hd.pr.AnnotationUnitsValues.PIXEL


def _annotations_of(
    finding: Finding, ref: ImageRef, lang: str, rows: int, columns: int
) -> tuple[list[hd.pr.GraphicObject], list[hd.pr.TextObject]]:
    where = finding.per_image[ref]
    t = advisory(lang)
    name = finding.label.display.get(lang)
    graphics: list[hd.pr.GraphicObject] = []
    text: list[hd.pr.TextObject] = []
    boxes: list[tuple[tuple[float, float, float, float], float]] = []
    if isinstance(where, np.ndarray):
        r, c = np.nonzero(where)
        if r.size:
            boxes.append(((r.min(), c.min(), r.max(), c.max()), finding.score))
    elif isinstance(where, list):
        boxes = [(tuple(float(v) for v in b), float(s)) for b, s in where]  # type: ignore[misc]
    else:
        score = float(where)
        below = below_threshold(finding.label, score)
        text.append(
            hd.pr.TextObject(
                t.finding_label(name, score, below_threshold=below)[:LO],
                units=_PIXEL,
                anchor_point=(4.0, 4.0),
                anchor_point_visible=False,
            )
        )
    for (r0, c0, r1, c1), score in boxes:
        graphics.append(
            hd.pr.GraphicObject(
                hd.pr.GraphicTypeValues.POLYLINE, rectangle(r0, c0, r1, c1), units=_PIXEL
            )
        )
        anchor = (min(float(c1) + 1.0, columns - 1.0), max(min(float(r0), rows - 1.0), 0.0))
        text.append(
            hd.pr.TextObject(
                t.finding_label(name, score)[:LO],
                units=_PIXEL,
                anchor_point=anchor,
                anchor_point_visible=True,
            )
        )
    return graphics, text


def _plain_dashes(text: str) -> str:
    """``text`` with '-' for em and en dashes.

    DCMTK's dcmpschk checks LO values byte by byte as if they were Latin-1, and
    the UTF-8 em dash (E2 80 94) holds bytes it takes for C1 control characters.
    """
    return text.replace("\u2014", "-").replace("\u2013", "-")


def _index(sources: Sequence[Dataset]) -> dict[ImageRef, Dataset]:
    index: dict[ImageRef, Dataset] = {}
    for ds in sources:
        for frame in range(1, int(ds.get("NumberOfFrames", 1) or 1) + 1):
            index[ImageRef(str(ds.SOPInstanceUID), frame)] = ds
    return index


def _voi(sources: Sequence[Dataset]) -> list[hd.pr.SoftcopyVOILUTTransformation] | None:
    first = sources[0]
    center, width = first.get("WindowCenter"), first.get("WindowWidth")
    if center is None or width is None:
        return None
    if isinstance(center, MultiValue):
        center = center[0]
    if isinstance(width, MultiValue):
        width = width[0]
    if float(width) < 1:
        return None
    return [
        hd.pr.SoftcopyVOILUTTransformation(
            window_center=float(center),
            window_width=float(width),
            referenced_images=hd.ReferencedImageSequence(referenced_images=list(sources)),
        )
    ]


def build_gsps(
    source_datasets: Sequence[Dataset],
    result: InferenceResult,
    manifest: mf.Manifest,
    lang: str,
    *,
    series_number: int = 903,
    instance_number: int = 1,
    uid_root_seed: str = "",
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """A GSPS drawing ``result``'s findings on ``source_datasets`` (single-frame images).

    Raises EncodingError when no finding lies on the source images; ValueError
    for an unknown language or a manifest that is not the result's model.
    """
    t = advisory(lang)
    rec = result.record
    check_model_of(manifest, result)
    if not source_datasets:
        raise ValueError("source_datasets is empty")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in source_datasets):
        raise EncodingError("GSPS: multi-frame source images are not supported yet")
    index = _index(source_datasets)
    layer = hd.pr.GraphicLayer(
        layer_name=_LAYER,
        order=1,
        description=f"{rec.model} {rec.version}"[:LO],
        display_color=hd.color.CIELabColor.from_string(LAYER_COLOR),
    )
    annotations: list[hd.pr.GraphicAnnotation] = []
    for ref in sorted(
        {r for f in result.findings for r in f.per_image}, key=lambda r: (r.sop_uid, r.frame)
    ):
        if ref not in index:
            raise EncodingError(
                f"GSPS: a finding is on image {ref.sop_uid}, which is not among the source images"
            )
        ds = index[ref]
        graphics: list[hd.pr.GraphicObject] = []
        text: list[hd.pr.TextObject] = []
        for f in result.findings:
            if ref in f.per_image:
                g, x = _annotations_of(f, ref, lang, int(ds.Rows), int(ds.Columns))
                graphics += g
                text += x
        if not graphics and not text:
            continue
        annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[ds],
                graphic_layer=layer,
                graphic_objects=graphics or None,
                text_objects=text or None,
            )
        )
    if not annotations:
        raise EncodingError(f"GSPS: {rec.model} {rec.version} has no finding to draw")

    study_uid = str(source_datasets[0].StudyInstanceUID)
    series_uids = rec.series_uids or (str(source_datasets[0].SeriesInstanceUID),)
    series_uid, sop_uid = result_uids(
        study_uid, series_uids, rec.model, rec.version, kind=RESULT_KIND, seed=uid_root_seed
    )
    referenced = [tolerant(ds) for ds in source_datasets]
    try:
        gsps = hd.pr.GrayscaleSoftcopyPresentationState(
            referenced_images=referenced,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=sop_uid,
            instance_number=instance_number,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=rec.model[:LO],
            software_versions=rec.cds_version,
            device_serial_number=(rec.sha256 or "unknown")[:LO],
            content_label=t.content_label,
            content_description=_plain_dashes(t.banner)[:LO],
            graphic_annotations=annotations,
            graphic_layers=[layer],
            voi_lut_transformations=_voi(referenced),
        )
        gsps.GraphicLayerSequence[0].GraphicLayerRecommendedDisplayGrayscaleValue = _WHITE
    except (ValueError, TypeError) as exc:
        raise EncodingError(f"GSPS of {rec.model} {rec.version} is not valid: {exc}") from exc
    gsps.SpecificCharacterSet = "ISO_IR 192"
    gsps.SeriesDescription = f"{t.series_prefix}{rec.model} {rec.version}"[:LO]
    set_series_laterality(gsps, source_datasets[0])
    complete(gsps)
    identify_vendor(gsps, manifest)
    return gsps
