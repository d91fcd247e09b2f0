"""issue 5: the advisory Secondary Capture of one source image with the findings burned in.

Every SC is written, read back and run through dciodvfy (zero errors); the
banner is visible at the top and a detection box lies at its source pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import ImageDraw
from pydicom.dataset import Dataset

from cds.findings import Finding, ImageRef, InferenceResult
from cds.i18n import LANGS, advisory
from cds.inference import manifest as mf
from cds.results.inherited import ORIENTATION_UNKNOWN
from cds.results.sc import build_sc, drawable, render, windowed
from tests.results.test_seg import MODELS, SERIES, dciodvfy_errors, record

BOX = (300, 100, 350, 180)  # row0, col0, row1, col1, inclusive


@pytest.fixture(scope="module")
def manifest() -> mf.Manifest:
    return mf.load_manifest(MODELS / "cds-ref-ct-bone")


@pytest.fixture(scope="module")
def source() -> Dataset:
    if not SERIES.is_dir():
        pytest.skip(f"test series not found: {SERIES}")
    return pydicom.dcmread(sorted(SERIES.glob("*.dcm"))[0])


def _result(ds: Dataset, manifest: mf.Manifest, box_only: bool = False) -> InferenceResult:
    ref = ImageRef(str(ds.SOPInstanceUID), 1)
    label = manifest.output.labels[0]
    mask = np.zeros((int(ds.Rows), int(ds.Columns)), dtype=bool)
    mask[200:260, 200:300] = True
    findings = [Finding(label, 0.8, True, {ref: [(BOX, 0.8)]})]
    if not box_only:
        findings.append(Finding(label, 0.9, True, {ref: mask}))
    rec = record(manifest, str(ds.SeriesInstanceUID))
    return InferenceResult(rec, "detection", findings, {}, [ref])


def _ref(ds: Dataset) -> ImageRef:
    return ImageRef(str(ds.SOPInstanceUID), 1)


@pytest.mark.parametrize("lang", LANGS)
def test_sc_is_valid_advisory_and_references_its_source(
    lang: str, source: Dataset, manifest: mf.Manifest, tmp_path: Path
) -> None:
    sc = build_sc(source, _ref(source), _result(source, manifest), manifest, lang)
    path = tmp_path / "sc.dcm"
    sc.save_as(path)
    errors, _ = dciodvfy_errors(path)
    assert errors == []
    back = pydicom.dcmread(path)
    t = advisory(lang)
    assert back.BurnedInAnnotation == "YES"
    assert back.PhotometricInterpretation == "RGB"
    assert back.SeriesDescription.startswith(t.series_prefix)
    assert manifest.name in back.SeriesDescription
    assert back.ImageComments == t.banner
    assert (back.SeriesNumber, back.InstanceNumber) == (904, 1)
    assert back.StudyInstanceUID == source.StudyInstanceUID
    for seq in (back.SourceImageSequence, back.ReferencedImageSequence):
        assert seq[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert seq[0].ReferencedSOPClassUID == source.SOPClassUID


def test_the_banner_is_drawn_at_the_top(source: Dataset, manifest: mf.Manifest) -> None:
    result = _result(source, manifest)
    pixels = build_sc(source, _ref(source), result, manifest, "fr").pixel_array
    grey = windowed(source)
    top = pixels[:20]
    # the banner is not the plain image: black with yellow text
    assert not np.array_equal(top[:, :, 0], grey[:20])
    yellow = (top[:, :, 0] > 200) & (top[:, :, 1] > 200) & (top[:, :, 2] < 80)
    assert yellow.sum() > 50
    # below the banner and away from the findings the picture is the windowed image
    assert np.array_equal(pixels[450:, :, 0], grey[450:])
    assert np.array_equal(pixels[450:, :, 1], grey[450:])


def test_the_detection_box_is_burned_in_at_its_source_pixels(
    source: Dataset, manifest: mf.Manifest
) -> None:
    pixels = render(source, _ref(source), _result(source, manifest, box_only=True), "en")
    r0, c0, r1, c1 = BOX
    colour = pixels[r0, c0]
    assert tuple(colour) == (255, 64, 64)
    for r, c in ((r0, c1), (r1, c0), (r1, c1), (r0, (c0 + c1) // 2), ((r0 + r1) // 2, c0)):
        assert tuple(pixels[r, c]) == tuple(colour)
    # one pixel outside and inside the box is the image, not the outline
    outside = pixels[r0 - 1, c0 + 5]
    assert outside[0] == outside[1] == outside[2]
    inside = pixels[r0 + 2 : r1 - 1, c0 + 2 : c1 - 1]
    assert np.all(inside[:, :, 0] == inside[:, :, 1])


def test_sc_uids_are_deterministic(source: Dataset, manifest: mf.Manifest) -> None:
    result = _result(source, manifest)
    a = build_sc(source, _ref(source), result, manifest, "en")
    b = build_sc(source, _ref(source), result, manifest, "fr")
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    c = build_sc(source, _ref(source), result, manifest, "en", uid_root_seed="other node")
    assert c.SOPInstanceUID != a.SOPInstanceUID
    assert a.SOPInstanceUID != a.SeriesInstanceUID


@pytest.mark.parametrize("lang", LANGS)
def test_sc_labels_say_ai_the_finding_and_the_score(
    lang: str, source: Dataset, manifest: mf.Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 17: beside each burned-in finding, the advisory word, the finding and its
    score in the job's language (the built-in font draws ASCII: '-' for the middle dot)."""
    drawn: list[str] = []
    draw_text = ImageDraw.ImageDraw.text

    def spy(self: ImageDraw.ImageDraw, xy: object, text: str, *args: object, **kw: object) -> None:
        drawn.append(text)
        draw_text(self, xy, text, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    render(source, _ref(source), _result(source, manifest), lang)
    expected = {
        "en": ["AI - Bone structure - 0.80", "AI - Bone structure - 0.90"],
        "fr": ["IA - Structure osseuse - 0,80", "IA - Structure osseuse - 0,90"],
    }[lang]
    assert drawn[:2] == expected  # the labels, then the banner's two lines
    assert drawn[2] == drawable(advisory(lang).banner)


def test_drawable_text_keeps_the_advisory_words() -> None:
    assert drawable(advisory("fr").banner) == "IA - indicatif, a faire valider par un radiologue"
    assert drawable(advisory("en").banner).startswith("AI - advisory")


def test_sc_refuses_another_models_manifest_and_a_foreign_image(
    source: Dataset, manifest: mf.Manifest
) -> None:
    result = _result(source, manifest)
    other = manifest.model_copy(update={"version": "9.9.9"})
    with pytest.raises(ValueError, match="not the model"):
        build_sc(source, _ref(source), result, other, "en")
    with pytest.raises(ValueError, match="not the source"):
        build_sc(source, ImageRef("1.2.3", 1), result, manifest, "en")
    with pytest.raises(ValueError, match="unknown language"):
        build_sc(source, _ref(source), result, manifest, "de")


def _reoriented(source: Dataset, orientation: list[str] | None) -> Dataset:
    """A copy of ``source`` with ``orientation`` as its only orientation (None: none)."""
    ds = Dataset()
    ds.update(source)
    ds.file_meta = source.file_meta
    for kw in ("PatientOrientation", "ImageOrientationPatient", "ImagePositionPatient"):
        if kw in ds:
            delattr(ds, kw)
    if orientation is not None:
        ds.PatientOrientation = orientation
    return ds


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [(None, []), (["A", "FL"], ["A", "FL"]), (["P", "F"], ["P", "F"]), (["x", ""], [])],
)
def test_sc_of_a_source_without_orientation_is_made_with_the_boxes_in_place(
    source: Dataset,
    manifest: mf.Manifest,
    tmp_path: Path,
    orientation: list[str] | None,
    expected: list[str],
) -> None:
    """issue 16: PatientOrientation (General Image, Type 2C) is the source's, even oblique
    ('FL', which highdicom's constructor refuses), else empty (unknown), and said so."""
    src = _reoriented(source, orientation)
    notes: list[str] = []
    sc = build_sc(
        src, _ref(src), _result(src, manifest, box_only=True), manifest, "en", notes=notes
    )
    path = tmp_path / "sc.dcm"
    sc.save_as(path)
    errors, _ = dciodvfy_errors(path)
    assert errors == []
    back = pydicom.dcmread(path)
    assert "PatientOrientation" in back
    assert list(back.PatientOrientation or []) == expected
    assert notes == ([] if expected else [ORIENTATION_UNKNOWN])
    # the box read back from the encoded pixels lies where the model put it
    pixels = back.pixel_array
    r0, c0, r1, c1 = BOX
    for r, c in ((r0, c0), (r0, c1), (r1, c0), (r1, c1)):
        assert tuple(pixels[r, c]) == (255, 64, 64)
