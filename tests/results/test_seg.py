"""issue 5: the advisory DICOM SEG of a segmentation model, built with highdicom.

Every SEG is written, read back and run through dciodvfy (zero errors); its
frames must reference the very slice whose mask they carry.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cds.errors import EncodingError
from cds.findings import Code, Finding, ImageRef, InferenceRecord, InferenceResult, Label, Text
from cds.i18n import LANGS, advisory
from cds.inference import manifest as mf
from cds.inference.images import decode
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.results.seg import build_seg, result_uids, segment_category

REPO = Path(__file__).resolve().parents[2]
SERIES = REPO.parent / "shared" / "dicom" / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
MODELS = REPO / "models"
SHA = "0123456789abcdef" * 4
DCIODVFY = "/usr/bin/dciodvfy"
EMPTY_SLICE = 2  # the synthetic bone mask leaves this slice empty

LESION = Label(
    index=1,
    code=Code(scheme="SCT", value="52988006", meaning="Lesion"),
    display=Text(en="Lesion", fr="Lésion"),
)


@pytest.fixture(scope="module")
def manifest() -> mf.Manifest:
    return mf.load_manifest(MODELS / "cds-ref-ct-bone")


@pytest.fixture(scope="module")
def slices() -> list[Dataset]:
    if not SERIES.is_dir():
        pytest.skip(f"test series not found: {SERIES}")
    return [pydicom.dcmread(p) for p in sorted(SERIES.glob("*.dcm"))[:5]]


def _mask(ds: Dataset, i: int) -> np.ndarray:
    """A block whose place and size depend on the slice: a misplaced frame shows."""
    m = np.zeros((int(ds.Rows), int(ds.Columns)), dtype=bool)
    m[20 + 30 * i : 60 + 30 * i, 100 : 110 + 20 * i] = True
    return m


def record(manifest: mf.Manifest, series_uid: str, version: str | None = None) -> InferenceRecord:
    return InferenceRecord(
        model=manifest.name,
        version=version or manifest.version,
        sha256=SHA,
        provider="cpu",
        cds_version="0.1.0",
        series_uids=(series_uid,),
        images=1,
        seconds=0.1,
        timings={},
    )


def synthetic_result(
    slices: Sequence[Dataset], manifest: mf.Manifest, version: str | None = None
) -> InferenceResult:
    refs = [ImageRef(str(ds.SOPInstanceUID), 1) for ds in slices]
    bone = {r: _mask(ds, i) for i, (r, ds) in enumerate(zip(refs, slices, strict=True))}
    bone[refs[EMPTY_SLICE]] = np.zeros_like(bone[refs[EMPTY_SLICE]])  # present but empty
    lesion_mask = np.zeros_like(bone[refs[0]])
    lesion_mask[200:220, 300:340] = True
    findings = [
        Finding(manifest.output.labels[0], 0.9, True, bone),
        Finding(LESION, 0.8, True, {refs[3]: lesion_mask}),
        Finding(LESION.model_copy(update={"index": 2}), 0.1, False, {}),  # nothing: no segment
    ]
    rec = record(manifest, str(slices[0].SeriesInstanceUID), version)
    return InferenceResult(rec, "segmentation", findings, {}, refs)


def dciodvfy_errors(path: Path) -> tuple[list[str], list[str]]:
    if not Path(DCIODVFY).exists():
        pytest.skip(f"{DCIODVFY} is not installed (Debian package dicom3tools)")
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warn")]


def write_and_read(seg: Dataset, tmp_path: Path, name: str = "seg.dcm") -> Dataset:
    path = tmp_path / name
    seg.save_as(path)
    errors, _ = dciodvfy_errors(path)
    assert errors == []
    return pydicom.dcmread(path)


@pytest.mark.parametrize("lang", LANGS)
def test_seg_is_valid_advisory_and_names_the_model(
    lang: str, slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    seg = build_seg(slices, synthetic_result(slices, manifest), manifest, lang)
    back = write_and_read(seg, tmp_path)
    t = advisory(lang)
    assert back.Modality == "SEG"
    assert back.SegmentationType == "BINARY"
    assert back.SeriesDescription.startswith(t.series_prefix)
    assert len(back.SeriesDescription) <= 64
    assert back.ContentLabel == t.content_label
    assert back.ContentDescription == t.banner
    assert back.Manufacturer == "cds"
    assert back.ManufacturerModelName == manifest.name
    assert "0.1.0" in str(back.SoftwareVersions)
    assert (back.SeriesNumber, back.InstanceNumber) == (901, 1)
    assert back.StudyInstanceUID == slices[0].StudyInstanceUID
    referenced_series = back.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert referenced_series == slices[0].SeriesInstanceUID

    # one segment per finding with a mask, labelled in the job's language, from the label code
    segments = back.SegmentSequence
    assert [s.SegmentLabel for s in segments] == [
        manifest.output.labels[0].display.get(lang),
        LESION.display.get(lang),
    ]
    categories = [s.SegmentedPropertyCategoryCodeSequence[0].CodeValue for s in segments]
    assert categories == ["91723000", "49755003"]
    assert segments[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "272673000"
    for s in segments:
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        algo = s.SegmentationAlgorithmIdentificationSequence[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == (manifest.name, manifest.version)
        assert SHA in algo.AlgorithmParameters
        family = algo.AlgorithmFamilyCodeSequence[0]
        assert manifest.algorithm_family is not None
        assert family.CodeValue == manifest.algorithm_family.value

    # the model as contributing equipment, the advisory text and the SHA-256 with it
    (model_eq,) = [
        e for e in back.ContributingEquipmentSequence if e.ManufacturerModelName == manifest.name
    ]
    assert model_eq.SoftwareVersions == manifest.version
    assert t.banner in model_eq.ContributionDescription
    assert SHA in model_eq.ContributionDescription


def test_each_frame_carries_the_mask_of_the_slice_it_references(
    slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    result = synthetic_result(slices, manifest)
    back = write_and_read(build_seg(slices, result, manifest, "en"), tmp_path)
    by_uid = {str(ds.SOPInstanceUID): (i, ds) for i, ds in enumerate(slices)}
    masks = {
        n: {r.sop_uid: m for r, m in f.per_image.items()}
        for n, f in enumerate(result.findings[:2], start=1)
    }
    frames = back.pixel_array.reshape(-1, back.Rows, back.Columns).astype(bool)
    seen: set[tuple[int, str]] = set()
    for frame, item in zip(frames, back.PerFrameFunctionalGroupsSequence, strict=True):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        i, src = by_uid[uid]
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx([float(v) for v in src.ImagePositionPatient])
        assert np.array_equal(frame, masks[segment][uid]), (segment, i)
        seen.add((segment, uid))
    uids = [str(ds.SOPInstanceUID) for ds in slices]
    bone = {(1, u) for i, u in enumerate(uids) if i != EMPTY_SLICE}
    assert seen == bone | {(2, uids[3])}  # no frame for an empty slice or segment
    assert int(back.NumberOfFrames) == len(seen)


def test_uids_are_deterministic_per_study_series_model_and_version(
    slices: list[Dataset], manifest: mf.Manifest
) -> None:
    a = build_seg(slices, synthetic_result(slices, manifest), manifest, "en")
    b = build_seg(slices, synthetic_result(slices, manifest), manifest, "fr")
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    assert a.SeriesInstanceUID != a.SOPInstanceUID

    other = manifest.model_copy(update={"version": "1.0.1"})
    c = build_seg(slices, synthetic_result(slices, other, "1.0.1"), other, "en")
    assert c.SeriesInstanceUID != a.SeriesInstanceUID
    assert c.SOPInstanceUID != a.SOPInstanceUID

    study, series = str(slices[0].StudyInstanceUID), (str(slices[0].SeriesInstanceUID),)
    base = result_uids(study, series, manifest.name, manifest.version)
    assert base == (a.SeriesInstanceUID, a.SOPInstanceUID)
    assert result_uids(study, series, manifest.name, manifest.version, kind="SR") != base
    assert result_uids(study, ("1.2.3",), manifest.name, manifest.version) != base
    assert result_uids(study, series, manifest.name, manifest.version, seed="node-b") != base


def test_the_dimension_organization_uid_is_derived_not_drawn(
    slices: list[Dataset], manifest: mf.Manifest
) -> None:
    """highdicom draws a random Dimension Organization UID: two encodings of one result
    differed in it (found by ``cds certify model``'s determinism check)."""
    a, b = (build_seg(slices, synthetic_result(slices, manifest), manifest, "en") for _ in range(2))
    uids = {
        str(item.DimensionOrganizationUID)
        for seg in (a, b)
        for item in (*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence)
    }
    assert len(uids) == 1
    assert uids.pop() not in (a.SOPInstanceUID, a.SeriesInstanceUID)


def test_the_source_datasets_are_left_as_they_came(
    slices: list[Dataset], manifest: mf.Manifest
) -> None:
    """The SEG needs Type 2 attributes this scanner left out; the repair works on a copy."""
    assert "PatientBirthDate" not in slices[0]
    before = [sorted(ds.keys()) for ds in slices]
    build_seg(slices, synthetic_result(slices, manifest), manifest, "en")
    assert [sorted(ds.keys()) for ds in slices] == before


def test_refusals_name_the_problem(slices: list[Dataset], manifest: mf.Manifest) -> None:
    result = synthetic_result(slices, manifest)
    with pytest.raises(ValueError, match="unknown language 'de'"):
        build_seg(slices, result, manifest, "de")

    empty = synthetic_result(slices, manifest)
    empty.findings = [Finding(f.label, 0.0, False, {}) for f in empty.findings]
    with pytest.raises(EncodingError, match="no positive mask"):
        build_seg(slices, empty, manifest, "en")

    with pytest.raises(EncodingError, match="not among the source images"):
        build_seg(slices[:1], result, manifest, "en")

    other = manifest.model_copy(update={"version": "9.9.9"})
    with pytest.raises(ValueError, match="is not the model that produced"):
        build_seg(slices, result, other, "en")


def test_segment_category_tells_anatomy_from_abnormality() -> None:
    def cat(meaning: str, scheme: str = "SCT") -> str:
        code = Code(scheme=scheme, value="1", meaning=meaning)  # type: ignore[arg-type]
        return str(segment_category(code).value)

    assert cat("Bone structure") == "91723000"
    assert cat("Structure of liver") == "91723000"
    assert cat("Entire liver") == "91723000"
    assert cat("Morphologically abnormal structure") == "49755003"
    assert cat("Fracture of bone") == "49755003"
    assert cat("Bone structure", "99CDS") == "49755003"


def test_seg_of_the_bundled_bone_model_on_a_real_series(
    slices: list[Dataset], tmp_path: Path
) -> None:
    """End to end: decode, run cds-ref-ct-bone, build the SEG, validate it."""
    (model,) = ModelRegistry([MODELS / "cds-ref-ct-bone"], "cpu").load()
    assert model.status == "ready", model.errors
    assert model.manifest is not None
    result = ModelRunner(model, DeviceSlots(1, 1)).run(decode(slices))
    assert result.record.sha256
    seg = build_seg(slices, result, model.manifest, "fr")
    back = write_and_read(seg, tmp_path)
    assert back.SeriesDescription.startswith(advisory("fr").series_prefix)
    algo = back.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert result.record.sha256 in algo.AlgorithmParameters
    by_uid = {str(ds.SOPInstanceUID): ds for ds in slices}
    bone = {r.sop_uid: m for r, m in result.findings[0].per_image.items()}
    frames = back.pixel_array.reshape(-1, back.Rows, back.Columns).astype(bool)
    for frame, item in zip(frames, back.PerFrameFunctionalGroupsSequence, strict=True):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert uid in by_uid
        assert np.array_equal(frame, bone[uid])


def test_a_multiframe_source_maps_masks_to_its_frames(
    manifest: mf.Manifest, tmp_path: Path
) -> None:
    """An Enhanced CT instance: the mask of frame 2 lands on a frame referencing frame 2."""
    path = SERIES.parent / "eCT_Supplemental.dcm"
    if not path.is_file():
        pytest.skip(f"test image not found: {path}")
    src = pydicom.dcmread(path)
    mask = np.zeros((int(src.Rows), int(src.Columns)), dtype=bool)
    mask[5:20, 5:30] = True
    ref = ImageRef(str(src.SOPInstanceUID), 2)
    finding = Finding(manifest.output.labels[0], 0.9, True, {ref: mask})
    rec = record(manifest, str(src.SeriesInstanceUID))
    result = InferenceResult(rec, "segmentation", [finding], {}, [ref])
    back = write_and_read(build_seg([src], result, manifest, "fr"), tmp_path)
    assert int(back.NumberOfFrames) == 1
    item = back.PerFrameFunctionalGroupsSequence[0]
    source = item.DerivationImageSequence[0].SourceImageSequence[0]
    assert (source.ReferencedSOPInstanceUID, int(source.ReferencedFrameNumber)) == (
        src.SOPInstanceUID,
        2,
    )
    expected = src.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]
    assert [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient] == (
        pytest.approx([float(v) for v in expected.ImagePositionPatient])
    )
    assert np.array_equal(back.pixel_array.astype(bool).reshape(mask.shape), mask)
