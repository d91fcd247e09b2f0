"""issue 5: our SR, SEG and GSPS compared with objects other tools made
(`../shared/dicom/sr_seg_reference/`): the structure, codes and attributes that
viewers rely on are the same as in dcmqi's TID 1500 SR and SEG and in an AI vendor's
(Lunit) GSPS. Our objects come from the bundled models run on a real CT through the
node's own per-series step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.pipeline import process_series

REPO = Path(__file__).resolve().parents[2]
REF = REPO.parent / "shared" / "dicom" / "sr_seg_reference"
CT = REPO.parent / "shared" / "dicom" / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"


@pytest.fixture(scope="module")
def ours() -> dict[str, Dataset]:
    if not (REF.is_dir() and CT.is_dir()):
        pytest.skip("shared reference objects or CT series missing")
    registry = ModelRegistry([REPO / "models"], "cpu", DeviceSlots(1, 1), warm=False)
    registry.load()
    files = sorted(CT.iterdir())[10:14]
    out: dict[str, Dataset] = {}
    for name, kinds in (
        ("cds-ref-ct-bone", ["SEG", "SR"]),
        ("cds-ref-blob-detect", ["GSPS", "SR"]),
    ):
        model = registry.get(name)
        assert model is not None
        done = process_series(ModelRunner(model, registry.slots), files, kinds, "en")
        for ds in done.objects:
            key = f"{ds.Modality}:{name}"
            # written and read back, as the PACS will read them
            path = Path(pytest.importorskip("tempfile").mkdtemp()) / "x.dcm"
            ds.save_as(path, enforce_file_format=True)
            out[key] = pydicom.dcmread(path)
    return out


def _items(seq: list[Dataset]) -> Iterator[Dataset]:
    for item in seq:
        yield item
        yield from _items(item.get("ContentSequence", []))


def _codes(ds: Dataset) -> set[tuple[str, str]]:
    return {
        (item.ValueType, item.ConceptNameCodeSequence[0].CodeValue)
        for item in _items(ds.ContentSequence)
        if "ConceptNameCodeSequence" in item
    }


def test_sr_has_the_tid1500_skeleton_of_dcmqi(ours: dict[str, Dataset]) -> None:
    ref = pydicom.dcmread(REF / "dcmqi" / "sr.dcm")
    for key in ("SR:cds-ref-ct-bone", "SR:cds-ref-blob-detect"):
        sr = ours[key]
        assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        assert sr.ContentTemplateSequence[0].MappingResource == "DCMR"
        assert sr.ConceptNameCodeSequence[0].CodeValue == ref.ConceptNameCodeSequence[0].CodeValue
        top_ref = [
            (c.ValueType, c.ConceptNameCodeSequence[0].CodeValue) for c in ref.ContentSequence
        ]
        top = [(c.ValueType, c.ConceptNameCodeSequence[0].CodeValue) for c in sr.ContentSequence]
        # language, procedure reported, image library, imaging measurements: as dcmqi has them
        for item in [("CODE", "121049"), ("CODE", "121058"), ("CONTAINER", "126010")]:
            assert item in top_ref
            assert item in top, f"{key}: {item} missing at the top of the content tree"
        # observer: dcmqi names a person; ours is the model itself, a device (121005 = Device)
        assert ("CODE", "121005") in top
        assert ("UIDREF", "121012") in top  # Device Observer UID
        # each measurement group: tracking identifier and UID, finding, as in dcmqi's
        for code in (("TEXT", "112039"), ("UIDREF", "112040"), ("CODE", "121071")):
            assert code in _codes(ref) or code[1] == "121071"
            assert code in _codes(sr), f"{key}: {code} missing"
        assert sr.VerificationFlag == "UNVERIFIED"
        assert sr.CompletionFlag == "COMPLETE"
        # the evidence: the source images are referenced, as dcmqi references its own
        assert "CurrentRequestedProcedureEvidenceSequence" in sr
        assert "CurrentRequestedProcedureEvidenceSequence" in ref


def test_seg_carries_what_viewers_read_in_dcmqi_seg(ours: dict[str, Dataset]) -> None:
    ref = pydicom.dcmread(REF / "dcmqi" / "liver.dcm")
    seg = ours["SEG:cds-ref-ct-bone"]
    assert seg.SegmentationType == ref.SegmentationType == "BINARY"
    ours_seg, ref_seg = seg.SegmentSequence[0], ref.SegmentSequence[0]
    for kw in (
        "SegmentedPropertyCategoryCodeSequence",
        "SegmentedPropertyTypeCodeSequence",
        "SegmentLabel",
        "SegmentAlgorithmType",
        "RecommendedDisplayCIELabValue",  # OHIF warns without it
    ):
        assert kw in ref_seg
        assert kw in ours_seg, f"SEG segment lacks {kw}"
    assert ours_seg.SegmentAlgorithmType == "AUTOMATIC"  # dcmqi's is SEMIAUTOMATIC
    assert "SegmentAlgorithmName" in ours_seg
    frame_ref = {e.keyword for e in ref.PerFrameFunctionalGroupsSequence[0]}
    # per frame, or shared by every frame (highdicom shares it when there is one segment)
    frame = {e.keyword for e in seg.PerFrameFunctionalGroupsSequence[0]} | {
        e.keyword for e in seg.SharedFunctionalGroupsSequence[0]
    }
    for kw in ("DerivationImageSequence", "FrameContentSequence", "PlanePositionSequence",
               "SegmentIdentificationSequence"):  # fmt: skip
        assert kw in frame_ref
        assert kw in frame, f"SEG frames lack {kw}"
    assert "ReferencedSeriesSequence" in seg
    assert "ReferencedSeriesSequence" in ref


def test_gsps_is_shaped_like_an_ai_vendors_gsps(ours: dict[str, Dataset]) -> None:
    ref = pydicom.dcmread(REF / "other" / "Lunit_GSPS_Issue168.dcm")
    pr = ours["PR:cds-ref-blob-detect"]
    for kw in (
        "GraphicAnnotationSequence",
        "GraphicLayerSequence",
        "DisplayedAreaSelectionSequence",
        "ReferencedSeriesSequence",
        "PresentationLUTShape",
    ):
        assert kw in ref
        assert kw in pr, f"GSPS lacks {kw}"
    ann, ann_ref = pr.GraphicAnnotationSequence[0], ref.GraphicAnnotationSequence[0]
    for kw in (
        "ReferencedImageSequence",
        "GraphicLayer",
        "GraphicObjectSequence",
        "TextObjectSequence",
    ):
        assert kw in ann_ref
        assert kw in ann, f"GSPS annotation lacks {kw}"
    # every annotation sits on one of the source images of the series it references
    refs = {
        i.ReferencedSOPInstanceUID
        for s in pr.ReferencedSeriesSequence
        for i in s.ReferencedImageSequence
    }
    assert {
        a.ReferencedImageSequence[0].ReferencedSOPInstanceUID for a in pr.GraphicAnnotationSequence
    } <= refs
