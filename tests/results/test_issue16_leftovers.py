"""issue 16, the items left open: a SEG of located images without a slice thickness,
and a job summary that says of each label what the SR states of it.

- Located CT/MR slices whose SliceThickness is absent, or empty (the copy empties an
  invalid Type 2 value), still give a valid SEG (dciodvfy: no error): its Pixel Measures
  carry a SliceThickness (Type 1C, PS3.3 C.7.6.16.2.1), the spacing between the
  series' slices, or for a single slice its pixel spacing; a note says which.
- The summary (the node's 'inferred' event, process.json) never reads "X absent" for a
  ``normal`` class whose score reached its threshold: it is present, the normal state,
  not a finding; an informational score is a score with no decision (as in the SR,
  ``cds.results.sr_groups``), in English and in French.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cds.findings import Code, Finding, ImageRef, InferenceResult, Label, Text
from cds.inference import manifest as mf
from cds.results import sr_groups
from cds.results.seg import THICKNESS_FROM_PIXEL_SPACING, THICKNESS_FROM_SPACING, build_seg
from cds.results.text import NORMAL_THRESHOLD, job_summary, statement
from tests.results.test_seg import MODELS, SERIES, dciodvfy_errors, record

CT_SMALL = MODELS.parents[1] / "shared" / "dicom" / "ct" / "CT_small.dcm"


@pytest.fixture(scope="module")
def manifest() -> mf.Manifest:
    return mf.load_manifest(MODELS / "cds-ref-ct-bone")


def _without_thickness(ds: Dataset, how: str) -> Dataset:
    if how == "absent":
        del ds.SliceThickness
    else:
        ds.SliceThickness = None  # as the copy leaves an invalid one (Type 2: empty)
    return ds


def _seg(
    manifest: mf.Manifest, sources: list[Dataset], tmp_path: Path
) -> tuple[Dataset, list[str]]:
    """The SEG of a block on each source image, written, checked by dciodvfy, read back."""
    masks = {}
    for i, ds in enumerate(sources):
        m = np.zeros((int(ds.Rows), int(ds.Columns)), dtype=bool)
        m[20 + 10 * i : 40 + 10 * i, 30:50] = True
        masks[ImageRef(str(ds.SOPInstanceUID), 1)] = m
    finding = Finding(manifest.output.labels[0], 0.9, True, masks)
    result = InferenceResult(
        record(manifest, str(sources[0].SeriesInstanceUID)),
        "segmentation",
        [finding],
        {},
        list(masks),
    )
    notes: list[str] = []
    seg = build_seg(sources, result, manifest, "en", notes=notes)
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    errors, _ = dciodvfy_errors(path)
    assert errors == []
    return pydicom.dcmread(path), notes


@pytest.mark.parametrize("how", ["absent", "empty"])
def test_located_slices_without_thickness_give_a_seg_with_the_slice_spacing(
    manifest: mf.Manifest, tmp_path: Path, how: str
) -> None:
    if not SERIES.is_dir():
        pytest.skip(f"test series not found: {SERIES}")
    sources = [
        _without_thickness(pydicom.dcmread(p), how) for p in sorted(SERIES.glob("*.dcm"))[:3]
    ]
    # the distance between the planes along their normal (a tilted gantry: not the z step)
    row, column = np.reshape([float(v) for v in sources[0].ImageOrientationPatient], (2, 3))
    along = sorted(np.dot([float(v) for v in ds.ImagePositionPatient], np.cross(row, column))
                   for ds in sources)  # fmt: skip
    seg, notes = _seg(manifest, sources, tmp_path)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(min(np.diff(along)), abs=1e-3)
    assert "FrameOfReferenceUID" in seg
    assert THICKNESS_FROM_SPACING in notes
    assert all(ds.get("SliceThickness") in (None, "") for ds in sources)  # left as they were


def test_a_single_located_slice_without_thickness_gives_a_seg_with_its_pixel_spacing(
    manifest: mf.Manifest, tmp_path: Path
) -> None:
    if not CT_SMALL.exists():
        pytest.skip(f"corpus file missing: {CT_SMALL}")
    source = _without_thickness(pydicom.dcmread(CT_SMALL), "empty")
    stated = float(source.SpacingBetweenSlices)
    seg, notes = _seg(manifest, [source], tmp_path)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(stated)  # the spacing it states
    assert notes == [THICKNESS_FROM_SPACING]
    del source.SpacingBetweenSlices  # and none stated: its pixel spacing
    seg, notes = _seg(manifest, [source], tmp_path)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(min(map(float, source.PixelSpacing)))
    assert notes == [THICKNESS_FROM_PIXEL_SPACING]


def test_a_slice_thickness_stated_is_kept_and_nothing_is_said(
    manifest: mf.Manifest, tmp_path: Path
) -> None:
    if not CT_SMALL.exists():
        pytest.skip(f"corpus file missing: {CT_SMALL}")
    source = pydicom.dcmread(CT_SMALL)
    seg, notes = _seg(manifest, [source], tmp_path)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == float(source.SliceThickness)
    assert not [n for n in notes if n.startswith("SliceThickness")]


# --- the job summary -------------------------------------------------------------------
def _label(index: int, name: str, *, threshold: float | None, normal: bool = False) -> Label:
    return Label(
        index=index,
        code=Code(scheme="99CDS", value=f"T{index}", meaning=name),
        display=Text(en=name, fr=f"{name} (fr)"),
        threshold=threshold,
        normal=normal,
    )


def _classification(manifest: mf.Manifest) -> InferenceResult:
    contrast = _label(0, "Adequate contrast", threshold=0.7, normal=True)
    clear = _label(1, "Clear lungs", threshold=None, normal=True)  # the default threshold
    nodule = _label(2, "Nodule", threshold=0.5)
    effusion = _label(3, "Effusion", threshold=0.5)
    score = _label(4, "Pneumothorax", threshold=None)  # informational
    findings = [
        Finding(contrast, 0.96, False),  # never present: a normal class is not a finding
        Finding(clear, 0.31, False),
        Finding(nodule, 0.12, False),
        Finding(effusion, 0.93, True),
        Finding(score, 0.34, False),
    ]
    return InferenceResult(record(manifest, "1.2.3"), "classification", findings, {}, [])


def test_the_summary_states_each_label_as_the_sr_does(manifest: mf.Manifest) -> None:
    result = _classification(manifest)
    assert NORMAL_THRESHOLD == sr_groups.DEFAULT_THRESHOLD
    assert [statement(f, result.kind) for f in result.findings] == [True, False, False, True, None]
    text = job_summary(result)
    assert "Adequate contrast present (0.96; normal state, not a finding)" in text
    assert "Adequate contrast absent" not in text
    assert "Clear lungs absent (0.31; normal state, not a finding)" in text
    assert "Nodule absent (0.12)" in text
    assert "Effusion present (0.93)" in text
    assert "Pneumothorax: score 0.34, no decision" in text
    assert text.startswith("cds-ref-ct-bone ")


def test_the_summary_in_french(manifest: mf.Manifest) -> None:
    text = job_summary(_classification(manifest), "fr")
    assert "Adequate contrast (fr) présent (0,96 ; état normal, pas un constat)" in text
    assert "Nodule (fr) absent (0,12)" in text
    assert "Pneumothorax (fr) : score 0,34, sans décision" in text
    assert " sur cpu : 1 images en 0,10 s ; " in text


def test_a_segmentation_label_is_present_when_reported(manifest: mf.Manifest) -> None:
    """Masks and boxes: a label with no threshold is a finding (0.5), never informational."""
    lesion = _label(1, "Lesion", threshold=None)
    result = InferenceResult(
        record(manifest, "1.2.3"), "segmentation", [Finding(lesion, 0.8, True)], {}, []
    )
    assert statement(result.findings[0], result.kind) is True
    assert job_summary(result).endswith("; Lesion present (0.80)")
