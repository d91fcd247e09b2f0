"""issue 5: the advisory GSPS drawing a model's findings on the source images.

Every GSPS is written, read back and run through dciodvfy (zero errors) and
DCMTK's dcmpschk (no errors); boxes lie at their source pixels and carry labels.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cds.errors import EncodingError
from cds.findings import Finding, ImageRef, InferenceResult
from cds.i18n import LANGS, advisory
from cds.inference import manifest as mf
from cds.inference.images import decode
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.results.gsps import build_gsps
from cds.results.sc import build_sc
from tests.results.test_seg import MODELS, SERIES, dciodvfy_errors, record

DCMPSCHK = "/usr/bin/dcmpschk"
BOX = (300, 100, 350, 180)  # row0, col0, row1, col1, inclusive


@pytest.fixture(scope="module")
def manifest() -> mf.Manifest:
    return mf.load_manifest(MODELS / "cds-ref-ct-bone")


@pytest.fixture(scope="module")
def slices() -> list[Dataset]:
    if not SERIES.is_dir():
        pytest.skip(f"test series not found: {SERIES}")
    return [pydicom.dcmread(p) for p in sorted(SERIES.glob("*.dcm"))[:3]]


def _ref(ds: Dataset) -> ImageRef:
    return ImageRef(str(ds.SOPInstanceUID), 1)


def _result(slices: list[Dataset], manifest: mf.Manifest) -> InferenceResult:
    label = manifest.output.labels[0]
    mask = np.zeros((int(slices[0].Rows), int(slices[0].Columns)), dtype=bool)
    mask[200:260, 210:300] = True
    findings = [
        Finding(label, 0.9, True, {_ref(slices[0]): mask}),
        Finding(label, 0.8, True, {_ref(slices[1]): [(BOX, 0.75)]}),
    ]
    rec = record(manifest, str(slices[0].SeriesInstanceUID))
    return InferenceResult(rec, "detection", findings, {}, [_ref(ds) for ds in slices])


def _dcmpschk_errors(path: Path) -> list[str]:
    if not Path(DCMPSCHK).exists():
        pytest.skip(f"{DCMPSCHK} is not installed (DCMTK)")
    proc = subprocess.run([DCMPSCHK, str(path)], capture_output=True, text=True, check=False)
    return [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("E:")]


def _write_and_read(gsps: Dataset, tmp_path: Path) -> Dataset:
    path = tmp_path / "gsps.dcm"
    gsps.save_as(path)
    errors, _ = dciodvfy_errors(path)
    assert errors == []
    assert _dcmpschk_errors(path) == []
    return pydicom.dcmread(path)


def _annotation_of(back: Dataset, ds: Dataset) -> Dataset:
    (item,) = [
        a
        for a in back.GraphicAnnotationSequence
        if a.ReferencedImageSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    ]
    return item


@pytest.mark.parametrize("lang", LANGS)
def test_gsps_is_valid_and_advisory(
    lang: str, slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    gsps = build_gsps(slices, _result(slices, manifest), manifest, lang)
    back = _write_and_read(gsps, tmp_path)
    t = advisory(lang)
    assert back.Modality == "PR"
    assert back.SeriesDescription.startswith(t.series_prefix)
    assert manifest.name in back.SeriesDescription
    assert back.ContentLabel == t.content_label
    assert back.ContentDescription == t.banner.replace("\u2014", "-")
    assert back.ManufacturerModelName == manifest.name
    assert (back.SeriesNumber, back.InstanceNumber) == (903, 1)
    assert back.StudyInstanceUID == slices[0].StudyInstanceUID
    # the layer's recommended colour: yellow, and white on a grayscale display
    (layer,) = back.GraphicLayerSequence
    yellow = hd.color.CIELabColor.from_string("yellow").value
    assert tuple(layer.GraphicLayerRecommendedDisplayCIELabValue) == tuple(yellow)
    assert layer.GraphicLayerRecommendedDisplayGrayscaleValue == 0xFFFF
    # General Series Laterality (Type 2C) is absent for the head, an unpaired body part
    assert "Laterality" not in back
    assert back.BodyPartExamined == slices[0].BodyPartExamined == "HEAD"
    # the labels say AI, the finding and the score, in the job's language
    text = _annotation_of(back, slices[1]).TextObjectSequence[0].UnformattedTextValue
    assert text == {"en": "AI · Bone structure · 0.75", "fr": "IA · Structure osseuse · 0,75"}[lang]
    text = _annotation_of(back, slices[0]).TextObjectSequence[0].UnformattedTextValue
    assert text == {"en": "AI · Bone structure · 0.90", "fr": "IA · Structure osseuse · 0,90"}[lang]


CLASSIFICATION_LABELS = {
    "en": ["AI · Low-contrast image · 0.02 · below threshold", "AI · Adequate contrast · 0.98"],
    "fr": ["IA · Image peu contrastée · 0,02 · sous le seuil", "IA · Contraste suffisant · 0,98"],
}


@pytest.mark.parametrize("lang", LANGS)
def test_gsps_classification_scores_say_ai_and_when_below_threshold(
    lang: str, slices: list[Dataset], tmp_path: Path
) -> None:
    """issue 17: an image-level score is a text line that says it is AI, and says 'below
    threshold' for a finding the model does not report (never for the 'normal' class)."""
    manifest = mf.load_manifest(MODELS / "cds-ref-cxr-triage")
    low, adequate = manifest.output.labels  # threshold 0.5; 'normal'
    ref = _ref(slices[0])
    findings = [Finding(low, 0.02, False, {ref: 0.02}), Finding(adequate, 0.98, False, {ref: 0.98})]
    rec = record(manifest, str(slices[0].SeriesInstanceUID))
    result = InferenceResult(rec, "classification", findings, {}, [ref])
    back = _write_and_read(build_gsps(slices[:1], result, manifest, lang), tmp_path)
    texts_drawn = [
        t.UnformattedTextValue for t in _annotation_of(back, slices[0]).TextObjectSequence
    ]
    assert texts_drawn == CLASSIFICATION_LABELS[lang]


def test_gsps_boxes_lie_at_their_source_pixels(
    slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    back = _write_and_read(build_gsps(slices, _result(slices, manifest), manifest, "en"), tmp_path)
    assert len(back.GraphicAnnotationSequence) == 2  # the third slice has no finding
    r0, c0, r1, c1 = BOX
    box = _annotation_of(back, slices[1]).GraphicObjectSequence[0]
    assert box.GraphicType == "POLYLINE"
    assert box.GraphicAnnotationUnits == "PIXEL"
    points = np.array(box.GraphicData, dtype=float).reshape(-1, 2)  # (column, row)
    assert points[0].tolist() == points[-1].tolist()  # closed
    assert (points[:, 0].min(), points[:, 0].max()) == (c0, c1 + 1)
    assert (points[:, 1].min(), points[:, 1].max()) == (r0, r1 + 1)
    # the mask is drawn as its bounding rectangle
    mask_box = _annotation_of(back, slices[0]).GraphicObjectSequence[0]
    points = np.array(mask_box.GraphicData, dtype=float).reshape(-1, 2)
    assert (points[:, 0].min(), points[:, 0].max()) == (210, 300)
    assert (points[:, 1].min(), points[:, 1].max()) == (200, 260)


def test_gsps_uids_are_deterministic(slices: list[Dataset], manifest: mf.Manifest) -> None:
    result = _result(slices, manifest)
    a = build_gsps(slices, result, manifest, "en")
    b = build_gsps(slices, result, manifest, "fr")
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    c = build_gsps(slices, result, manifest, "en", uid_root_seed="other node")
    assert c.SOPInstanceUID != a.SOPInstanceUID


def test_gsps_refuses_nothing_to_draw_and_foreign_images(
    slices: list[Dataset], manifest: mf.Manifest
) -> None:
    result = _result(slices, manifest)
    empty = InferenceResult(result.record, "detection", [], {}, [])
    with pytest.raises(EncodingError, match="no finding"):
        build_gsps(slices, empty, manifest, "en")
    with pytest.raises(EncodingError, match="not among the source images"):
        build_gsps(slices[2:], result, manifest, "en")
    other = manifest.model_copy(update={"version": "9.9.9"})
    with pytest.raises(ValueError, match="not the model"):
        build_gsps(slices, result, other, "en")


def test_gsps_and_sc_of_the_bundled_blob_detector_on_a_real_series(
    slices: list[Dataset], tmp_path: Path
) -> None:
    """End to end: decode, run cds-ref-blob-detect, draw its boxes (GSPS and SC), validate."""
    (model,) = ModelRegistry([MODELS / "cds-ref-blob-detect"], "cpu").load()
    assert model.status == "ready", model.errors
    assert model.manifest is not None
    result = ModelRunner(model, DeviceSlots(1, 1)).run(decode(slices))
    on = [(ref, f) for f in result.findings for ref in f.per_image]
    assert on, "the blob detector boxes something on the test slices"
    back = _write_and_read(build_gsps(slices, result, model.manifest, "fr"), tmp_path)
    drawn = {
        a.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        for a in back.GraphicAnnotationSequence
    }
    assert drawn == {ref.sop_uid for ref, _ in on}
    ref, finding = on[0]
    (source,) = [ds for ds in slices if str(ds.SOPInstanceUID) == ref.sop_uid]
    sc = build_sc(source, ref, result, model.manifest, "fr")
    path = tmp_path / "sc.dcm"
    sc.save_as(path)
    errors, _ = dciodvfy_errors(path)
    assert errors == []
    (r0, c0, r1, c1), _score = finding.per_image[ref][0]
    pixels = pydicom.dcmread(path).pixel_array
    for r, c in ((r0, c0), (r1, c1)):
        corner = pixels[int(r), int(c)]
        assert not corner[0] == corner[1] == corner[2]  # coloured: the outline is there
