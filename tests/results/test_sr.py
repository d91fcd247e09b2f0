"""issue 5: the advisory TID 1500 Measurement Report (Comprehensive 3D SR), built with highdicom.

Every SR is written, read back and run through dciodvfy (zero errors); its
structure is checked item by item: one measurement group per finding, a device
observer, the model's version and SHA-256, references to the source images (or
to the SEG's segments), the advisory text in the job's language.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cds.domain import ResultRef
from cds.errors import EncodingError
from cds.findings import Code, Finding, ImageRef, InferenceRecord, InferenceResult, Label, Text
from cds.i18n import LANGS, advisory
from cds.inference import manifest as mf
from cds.inference.images import decode
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.results.seg import build_seg, result_uids
from cds.results.sr import build_sr

REPO = Path(__file__).resolve().parents[2]
SERIES = REPO.parent / "shared" / "dicom" / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
MODELS = REPO / "models"
SHA = "0123456789abcdef" * 4
DCIODVFY = "/usr/bin/dciodvfy"
AREA_MM2 = 1234.5

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


def synthetic_result(slices: Sequence[Dataset], manifest: mf.Manifest) -> InferenceResult:
    """Bone on slices 0, 1, 3, 4 (with an area); a lesion on slice 3; an absent lesion."""
    refs = [ImageRef(str(ds.SOPInstanceUID), 1) for ds in slices]
    shape = (int(slices[0].Rows), int(slices[0].Columns))
    bone: dict[ImageRef, np.ndarray] = {}
    for i, ref in enumerate(refs):
        m = np.zeros(shape, dtype=bool)
        if i != 2:
            m[20 + 30 * i : 60 + 30 * i, 100:140] = True
        bone[ref] = m
    lesion = np.zeros(shape, dtype=bool)
    lesion[200:220, 300:340] = True
    findings = [
        Finding(manifest.output.labels[0], 0.9, True, bone, AREA_MM2),
        Finding(LESION, 0.8, True, {refs[3]: lesion}),
        Finding(LESION.model_copy(update={"index": 2}), 0.1, False, {}),
    ]
    rec = InferenceRecord(
        model=manifest.name,
        version=manifest.version,
        sha256=SHA,
        provider="cpu",
        cds_version="0.1.0",
        series_uids=(str(slices[0].SeriesInstanceUID),),
        images=len(refs),
        seconds=0.1,
        timings={},
    )
    return InferenceResult(rec, "segmentation", findings, {}, refs)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    if not Path(DCIODVFY).exists():
        pytest.skip(f"{DCIODVFY} is not installed (Debian package dicom3tools)")
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warn")]


def write_and_read(ds: Dataset, tmp_path: Path, name: str = "sr.dcm") -> Dataset:
    path = tmp_path / name
    ds.save_as(path)
    errors, _ = dciodvfy(path)
    assert errors == []
    return pydicom.dcmread(path)


def name(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return str(code.CodingSchemeDesignator), str(code.CodeValue)


def children(item: Dataset, scheme: str, value: str) -> list[Dataset]:
    return [c for c in item.get("ContentSequence", []) if name(c) == (scheme, value)]


def child(item: Dataset, scheme: str, value: str) -> Dataset:
    (found,) = children(item, scheme, value)
    return found


def walk(item: Dataset) -> Iterator[Dataset]:
    for c in item.get("ContentSequence", []):
        yield c
        yield from walk(c)


def groups(sr: Dataset) -> list[Dataset]:
    return children(child(sr, "DCM", "126010"), "DCM", "125007")


def referenced_sops(group: Dataset) -> set[str]:
    """The source images a group references (not the SEG: a reference with a segment)."""
    return {
        str(r.ReferencedSOPInstanceUID)
        for c in walk(group)
        if c.ValueType == "IMAGE"
        for r in c.ReferencedSOPSequence
        if "ReferencedSegmentNumber" not in r
    }


def comments(group: Dataset) -> list[str]:
    """The group's DCM 121106 Comments, in order: the label a viewer shows comes first."""
    return [str(c.TextValue) for c in children(group, "DCM", "121106")]


OHIF_RECTANGLE = "Cornerstone3DTools@^0.1.0:RectangleROI"


@pytest.mark.parametrize("lang", LANGS)
def test_sr_is_a_valid_unverified_advisory_measurement_report(
    lang: str, slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    result = synthetic_result(slices, manifest)
    back = write_and_read(build_sr(slices, result, manifest, lang), tmp_path)
    t = advisory(lang)
    assert back.Modality == "SR"
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert name(back) == ("DCM", "126000")  # Imaging Measurement Report
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert back.VerificationFlag == "UNVERIFIED"
    assert back.CompletionFlag == "COMPLETE"
    assert back.SeriesDescription.startswith(t.series_prefix)
    assert len(back.SeriesDescription) <= 64
    assert (back.SeriesNumber, back.InstanceNumber) == (902, 1)
    assert back.Manufacturer == "cds"
    assert back.StudyInstanceUID == slices[0].StudyInstanceUID
    language = child(back, "DCM", "121049").ConceptCodeSequence[0]
    assert language.CodeValue == lang

    # the observer is the model, as a device
    assert child(back, "DCM", "121005").ConceptCodeSequence[0].CodeValue == "121007"
    assert child(back, "DCM", "121012").UID  # Device Observer UID
    assert child(back, "DCM", "121013").TextValue == manifest.name
    assert child(back, "DCM", "121014").TextValue == manifest.manufacturer  # the vendor
    assert child(back, "DCM", "121015").TextValue == f"{manifest.name} {manifest.version}"
    assert child(back, "DCM", "121058").ConceptCodeSequence[0].CodeValue == "25045-6"

    # the advisory text, in the job's language, naming the model
    comment = child(child(back, "UMLS", "C0034375"), "DCM", "121106").TextValue
    assert comment.startswith(t.banner)
    assert SHA in comment
    other = advisory("fr" if lang == "en" else "en")
    assert other.banner not in comment


def test_one_group_per_finding_with_its_evaluation_score_and_model(
    slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    result = synthetic_result(slices, manifest)
    back = write_and_read(build_sr(slices, result, manifest, "fr"), tmp_path)
    found = groups(back)
    assert len(found) == len(result.findings)
    uids = [str(ds.SOPInstanceUID) for ds in slices]
    tracking_uids = set()
    labels = [
        "IA · Structure osseuse · 0,90",
        "IA · Lésion · 0,80",
        "IA · Lésion · 0,10 · sous le seuil",
    ]
    for group, finding, label in zip(found, result.findings, labels, strict=True):
        code = finding.label.code
        assert child(group, "DCM", "112039").TextValue == OHIF_RECTANGLE
        assert comments(group)[0] == label
        tracking_uids.add(child(group, "DCM", "112040").UID)
        assert child(group, "DCM", "121071").ConceptCodeSequence[0].CodeValue == code.value
        evaluation = child(group, code.scheme, code.value).ConceptCodeSequence[0]
        assert evaluation.CodeValue == ("52101004" if finding.present else "272519000")
        score = child(group, "DCM", "122157")
        assert float(score.MeasuredValueSequence[0].NumericValue) == pytest.approx(finding.score)
        unit = score.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
        assert (unit.CodingSchemeDesignator, unit.CodeValue) == ("UCUM", "{probability}")
        # TID 4019 algorithm identification: name, version, manufacturer, SHA-256
        assert child(group, "DCM", "111001").TextValue == manifest.name
        assert child(group, "DCM", "111003").TextValue == manifest.version
        assert child(group, "DCM", "111002").TextValue == f"sha256={SHA}"
    assert len(tracking_uids) == len(found)

    # source images: those the finding is on; every analysed image for an absent one
    assert referenced_sops(found[0]) == {u for i, u in enumerate(uids) if i != 2}
    assert referenced_sops(found[1]) == {uids[3]}
    assert referenced_sops(found[2]) == set(uids)
    area = child(found[0], "SCT", "42798000").MeasuredValueSequence[0]
    assert float(area.NumericValue) == pytest.approx(AREA_MM2)
    assert area.MeasurementUnitsCodeSequence[0].CodeValue == "mm2"
    assert children(found[1], "SCT", "42798000") == []

    evidence = {
        str(r.ReferencedSOPInstanceUID)
        for s in back.CurrentRequestedProcedureEvidenceSequence
        for se in s.ReferencedSeriesSequence
        for r in se.ReferencedSOPSequence
    }
    assert evidence == set(uids)


def test_segmentation_findings_reference_their_segment_of_the_seg(
    slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    """A segmentation finding's group names its segment as a source (TID 1501 row 10b:
    the SEG as "Source of Measurement" with the Referenced Segment Number) and its Area
    is INFERRED FROM the segment; the Probability is INFERRED FROM the outline alone
    (TID 320: an IMAGE or a SCOORD, not both; OHIF reads that SCOORD)."""
    result = synthetic_result(slices, manifest)
    seg = build_seg(slices, result, manifest, "en")
    back = write_and_read(build_sr(slices, result, manifest, "en", seg=seg), tmp_path)
    found = groups(back)

    def segments(group: Dataset) -> list[tuple[tuple[str, str], str, str, int]]:
        """(where, relationship, SEG, segment) of every reference to a segment."""
        return [
            (name(parent), str(c.RelationshipType), str(r.ReferencedSOPInstanceUID),
             int(r.ReferencedSegmentNumber))
            for parent in [group, *(n for n in group.ContentSequence if n.ValueType == "NUM")]
            for c in parent.get("ContentSequence", [])
            if c.ValueType == "IMAGE"
            for r in c.ReferencedSOPSequence
            if "ReferencedSegmentNumber" in r
        ]  # fmt: skip

    sop = str(seg.SOPInstanceUID)
    assert segments(found[0]) == [
        (("DCM", "125007"), "CONTAINS", sop, 1),
        (("SCT", "42798000"), "INFERRED FROM", sop, 1),
    ]
    assert segments(found[1]) == [(("DCM", "125007"), "CONTAINS", sop, 2)]  # no area known
    assert segments(found[2]) == []  # absent: no segment, the analysed images instead
    for group in found:
        (probability,) = children(group, "DCM", "122157")
        assert [c.ValueType for c in probability.ContentSequence] == ["SCOORD"]
    assert comments(found[0])[1].endswith(" The finding itself is segment 1 of the SEG.")
    assert referenced_sops(found[1]) == {str(slices[3].SOPInstanceUID)}
    evidence = {
        str(r.ReferencedSOPInstanceUID)
        for s in back.CurrentRequestedProcedureEvidenceSequence
        for se in s.ReferencedSeriesSequence
        for r in se.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence


def test_uids_are_deterministic_and_differ_from_the_seg(
    slices: list[Dataset], manifest: mf.Manifest
) -> None:
    result = synthetic_result(slices, manifest)
    a = build_sr(slices, result, manifest, "en")
    b = build_sr(slices, synthetic_result(slices, manifest), manifest, "fr")
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    study, series = str(slices[0].StudyInstanceUID), (str(slices[0].SeriesInstanceUID),)
    expected = result_uids(study, series, manifest.name, manifest.version, kind="SR")
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == expected
    seg_uids = result_uids(study, series, manifest.name, manifest.version, kind="SEG")
    assert a.SOPInstanceUID not in seg_uids

    def tracking(sr: Dataset) -> list[str]:
        return [str(child(g, "DCM", "112040").UID) for g in groups(sr)]

    assert tracking(a) == tracking(b)
    c = build_sr(slices, result, manifest, "en", uid_root_seed="node-b")
    assert c.SOPInstanceUID != a.SOPInstanceUID
    assert set(tracking(c)).isdisjoint(tracking(a))


def test_refusals_name_the_problem(slices: list[Dataset], manifest: mf.Manifest) -> None:
    result = synthetic_result(slices, manifest)
    with pytest.raises(ValueError, match="unknown language 'de'"):
        build_sr(slices, result, manifest, "de")
    with pytest.raises(EncodingError, match="not among the source images"):
        build_sr(slices[:1], result, manifest, "en")
    other = manifest.model_copy(update={"version": "9.9.9"})
    with pytest.raises(ValueError, match="is not the model that produced"):
        build_sr(slices, result, other, "en")
    with pytest.raises(ValueError, match="source_datasets is empty"):
        build_sr([], result, manifest, "en")


def test_sr_of_the_bundled_bone_model_on_a_real_series(
    slices: list[Dataset], tmp_path: Path
) -> None:
    """issue 17, end to end: decode, run cds-ref-ct-bone, build SEG and SR, read the SR back:
    the finding's rectangle bounds the model's mask on the slice where it is largest, in
    source pixels, and its NUMs are INFERRED FROM segment 1 of the SEG."""
    (model,) = ModelRegistry([MODELS / "cds-ref-ct-bone"], "cpu").load()
    assert model.status == "ready", model.errors
    assert model.manifest is not None
    result = ModelRunner(model, DeviceSlots(1, 1)).run(decode(slices))
    seg = build_seg(slices, result, model.manifest, "fr")
    back = write_and_read(build_sr(slices, result, model.manifest, "fr", seg=seg), tmp_path)
    (group,) = groups(back)
    assert child(group, "DCM", "111002").TextValue == f"sha256={result.record.sha256}"
    assert referenced_sops(group) <= {str(ds.SOPInstanceUID) for ds in slices}
    (finding,) = result.findings
    sizes = {ref: int(mask.sum()) for ref, mask in finding.per_image.items()}
    largest = max(sizes, key=lambda ref: sizes[ref])
    assert list(sizes.values()).count(sizes[largest]) == 1  # one largest slice: no tie here
    rows, cols = np.nonzero(finding.per_image[largest])
    ((sop, points),) = outlines(group)
    assert sop == largest.sop_uid
    assert np.allclose(points, corners(rows.min(), cols.min(), rows.max(), cols.max()))
    assert comments(group)[0] == f"IA · Structure osseuse · {finding.score:.2f}".replace(".", ",")
    sources = {
        (str(r.ReferencedSOPInstanceUID), int(r.ReferencedSegmentNumber))
        for c in walk(group)
        if c.ValueType == "IMAGE"
        for r in c.ReferencedSOPSequence
        if "ReferencedSegmentNumber" in r
    }
    assert sources == {(str(seg.SOPInstanceUID), 1)}


def test_predecessor_documents_name_the_replaced_objects(
    slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    """A newer run's SR lists the earlier SR and SEG in its Predecessor Documents."""
    result = synthetic_result(slices, manifest)
    old_seg = build_seg(slices, result, manifest, "en")
    old_sr = build_sr(slices, result, manifest, "en", seg=old_seg)
    old = [
        ResultRef(
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
            str(ds.SOPClassUID),
        )
        for ds in (old_sr, old_seg)
    ]
    new = build_sr(slices, result, manifest, "fr", uid_root_seed="late-instances", predecessors=old)
    back = write_and_read(new, tmp_path)
    assert back.SOPInstanceUID != old_sr.SOPInstanceUID
    (study,) = back.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == slices[0].StudyInstanceUID
    listed = {
        ResultRef(
            str(study.StudyInstanceUID),
            str(series.SeriesInstanceUID),
            str(sop.ReferencedSOPInstanceUID),
            str(sop.ReferencedSOPClassUID),
        )
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert listed == set(old)
    assert "PredecessorDocumentsSequence" not in write_and_read(old_sr, tmp_path, "old.dcm")


def test_device_observer_is_the_model_whatever_the_inputs(
    slices: list[Dataset], manifest: mf.Manifest
) -> None:
    """The Device Observer UID names the model version, not the run: the same for
    other inputs, another for another version."""
    result = synthetic_result(slices, manifest)

    def device_uid(sr: Dataset) -> str:
        return str(child(sr, "DCM", "121012").UID)

    a = build_sr(slices, result, manifest, "en")
    b = build_sr(slices, result, manifest, "en", uid_root_seed="other-inputs")
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert device_uid(a) == device_uid(b)
    other = manifest.model_copy(update={"version": "9.9.9"})
    rec = dataclasses.replace(result.record, version="9.9.9")
    c = build_sr(slices, dataclasses.replace(result, record=rec), other, "en")
    assert device_uid(c) != device_uid(a)


BOXES = [((100.0, 120.0, 139.0, 179.0), 0.92), ((300.0, 40.0, 309.0, 59.0), 0.61)]


def detection_result(slices: Sequence[Dataset], manifest: mf.Manifest) -> InferenceResult:
    """Two boxes on slice 1, one on slice 3; a second label boxed nowhere (absent)."""
    refs = [ImageRef(str(ds.SOPInstanceUID), 1) for ds in slices]
    findings = [
        Finding(LESION, 0.92, True, {refs[1]: BOXES, refs[3]: BOXES[1:]}),
        Finding(LESION.model_copy(update={"index": 2}), 0.2, False, {}),
    ]
    rec = synthetic_result(slices, manifest).record
    return InferenceResult(rec, "detection", findings, {}, refs)


@pytest.mark.parametrize("lang", LANGS)
def test_detection_boxes_are_groups_ohif_can_hydrate(
    lang: str, slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    """One TID 1501 group per box: OHIF's RectangleROI tracking identifier, the box's
    score as a NUM holding the closed rectangle, the display name as a Comment."""
    result = detection_result(slices, manifest)
    back = write_and_read(build_sr(slices, result, manifest, lang), tmp_path)
    found = groups(back)
    assert len(found) == 3 + 1  # three boxes, and the absent finding's group
    uids = [str(ds.SOPInstanceUID) for ds in slices]
    expected = [(uids[1], *BOXES[0]), (uids[1], *BOXES[1]), (uids[3], *BOXES[1])]
    tracking_uids = set()
    labels = {
        "en": ["AI · Lesion · 0.92", "AI · Lesion · 0.61", "AI · Lesion · 0.61"],
        "fr": ["IA · Lésion · 0,92", "IA · Lésion · 0,61", "IA · Lésion · 0,61"],
    }[lang]
    for group, (sop_uid, (r0, c0, r1, c1), score), label in zip(
        found, expected, labels, strict=False
    ):
        assert child(group, "DCM", "112039").TextValue == OHIF_RECTANGLE
        tracking_uids.add(child(group, "DCM", "112040").UID)
        assert comments(group) == [label]  # the box is the finding's own outline: no note
        assert child(group, "DCM", "121071").ConceptCodeSequence[0].CodeValue == "52988006"
        evaluation = child(group, "SCT", "52988006").ConceptCodeSequence[0]
        assert evaluation.CodeValue == "52101004"  # Present
        nums = [c for c in group.ContentSequence if c.ValueType == "NUM"]
        assert [name(n) for n in nums] == [("DCM", "122157")]  # the first NUM holds the box
        assert float(nums[0].MeasuredValueSequence[0].NumericValue) == pytest.approx(score)
        (scoord,) = [c for c in nums[0].ContentSequence if c.ValueType == "SCOORD"]
        assert (scoord.ValueType, scoord.RelationshipType) == ("SCOORD", "INFERRED FROM")
        assert scoord.GraphicType == "POLYLINE"
        points = np.array(scoord.GraphicData, dtype=float).reshape(-1, 2)  # (column, row)
        corners = [[c0, r0], [c1 + 1, r0], [c1 + 1, r1 + 1], [c0, r1 + 1], [c0, r0]]
        assert np.allclose(points, corners)
        assert referenced_sops(group) == {sop_uid}
    assert len(tracking_uids) == 3
    absent = found[3]
    assert child(absent, "DCM", "112039").TextValue == OHIF_RECTANGLE
    assert (
        comments(absent)[0]
        == {
            "en": "AI · Lesion · 0.20 · below threshold",
            "fr": "IA · Lésion · 0,20 · sous le seuil",
        }[lang]
    )
    assert referenced_sops(absent) == set(uids)
    again = build_sr(slices, detection_result(slices, manifest), manifest, lang)
    assert [str(child(g, "DCM", "112040").UID) for g in groups(again)][:3] == [
        str(child(g, "DCM", "112040").UID) for g in found[:3]
    ]


def outlines(group: Dataset) -> list[tuple[str, np.ndarray]]:
    """(SOP Instance UID, closed (column, row) points) of each SCOORD the group's first NUM
    is INFERRED FROM: the outlines OHIF draws and hydrates."""
    first = next(c for c in group.ContentSequence if c.ValueType == "NUM")
    found = []
    for c in first.ContentSequence:
        if c.ValueType == "SCOORD":
            assert (c.RelationshipType, c.GraphicType) == ("INFERRED FROM", "POLYLINE")
            (image,) = c.ContentSequence
            assert image.RelationshipType == "SELECTED FROM"
            sop = str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            found.append((sop, np.array(c.GraphicData, dtype=float).reshape(-1, 2)))
    return found


def corners(r0: float, c0: float, r1: float, c1: float) -> list[list[float]]:
    """The closed rectangle (column, row) around inclusive pixel indices r0..r1, c0..c1:
    pixel (r, c) covers [c, c+1) x [r, r+1) in SR 2-D coordinates."""
    return [[c0, r0], [c1 + 1, r0], [c1 + 1, r1 + 1], [c0, r1 + 1], [c0, r0]]


def model_boxes(result: InferenceResult) -> list[tuple[ImageRef, tuple[float, ...], float]]:
    """The model's boxes in source pixels, in the order of the findings and images."""
    return [
        (ref, tuple(float(v) for v in box), float(score))
        for f in result.findings
        for ref, where in f.per_image.items()
        for box, score in where
    ]
