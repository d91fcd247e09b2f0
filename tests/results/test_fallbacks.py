"""issue 16, build 3: fallbacks the standard allows, not silent skips.

Sources that lack what a result object would copy from them still give the object,
built the way the standard allows, valid (dciodvfy: no error), with the geometry the
model output, and a note in the job's record that says what was done differently:

- CT slices without a Frame of Reference: a SEG without one, each frame referencing the
  source image it lies on (PS3.3 A.51.3, A.51.5.1);
- images with neither PatientOrientation nor ImageOrientationPatient (CR/DX): an SC with
  an empty PatientOrientation (General Image, Type 2C);
- lossy compressed sources: the SEG and the SC say so, with the method (C.7.6.1.1.5,
  C.8.20.2.2); a presentation state holds no pixels and says nothing;
- the General Series Laterality (Type 2C) of the PR and the SC: the source's side,
  absent for an unpaired body part, never empty when the body part says it is unpaired.

The sources are corpus files changed in a temporary folder; the models are the bundled
reference models, run through the node's per-series step (``process_series``), and once
through ``cds process`` (``cds.offline.run``) for the job's status.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from cds.domain import ObjectOutcome
from cds.findings import Finding, ImageRef, InferenceResult
from cds.inference.registry import LoadedModel, ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.offline import Request
from cds.offline import run as process_offline
from cds.pipeline import SeriesOutcome, process_series
from cds.results.common import rectangle
from cds.results.encode import write_results
from cds.results.inherited import (
    METHOD_FROM_TRANSFER_SYNTAX,
    ORIENTATION_UNKNOWN,
    set_lossy_compression,
    set_series_laterality,
)
from cds.results.seg import NO_FRAME_OF_REFERENCE, build_seg
from tests.results.test_seg import MODELS, SERIES, dciodvfy_errors, record

DICOM = MODELS.parents[1] / "shared" / "dicom"
CT_SMALL = DICOM / "ct" / "CT_small.dcm"
DX = DICOM / "cr_dx" / "NIH_chestxray_DX_sample.dcm"
ENHANCED_CT = DICOM / "ct" / "eCT_Supplemental.dcm"
LOSSY_CT = DICOM / "compressed" / "CT1_JLSN_JPEG-LS_near_lossless.dcm"
#: what a source without a Frame of Reference has none of
NO_FOR = ("FrameOfReferenceUID", "PositionReferenceIndicator")
NO_ORIENTATION = ("PatientOrientation", "ImageOrientationPatient", "ImagePositionPatient")
FIRST_COLOUR = (255, 64, 64)  # the SC's outline of its first finding


@pytest.fixture(scope="module")
def models() -> dict[str, LoadedModel]:
    out = {}
    for name in ("cds-ref-ct-bone", "cds-ref-blob-detect", "cds-ref-cxr-triage"):
        (model,) = ModelRegistry([MODELS / name], "cpu", DeviceSlots(1, 1), warm=False).load()
        assert model.status == "ready", model.errors
        out[name] = model
    return out


def _without(path: Path, folder: Path, keywords: Sequence[str], **values: object) -> Path:
    """A copy of ``path`` in ``folder`` without ``keywords``, with ``values`` set."""
    if not path.exists():
        pytest.skip(f"corpus file missing: {path}")
    ds = pydicom.dcmread(path)
    for kw in keywords:
        if kw in ds:
            delattr(ds, kw)
    for kw, value in values.items():
        setattr(ds, kw, value)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / path.name
    ds.save_as(out)
    return out


def _run(model: LoadedModel, kinds: list[str], files: Sequence[Path]) -> SeriesOutcome:
    return process_series(ModelRunner(model, DeviceSlots(1, 1)), files, kinds, "en")


def _made(out: SeriesOutcome, kinds: Sequence[str], folder: Path) -> dict[str, list[Dataset]]:
    """Every object asked for made (the job is done, not partial), each written and
    without a dciodvfy error; read back, by kind."""
    assert [o.text for o in out.outcomes if not o.made or o.failed] == []
    back: dict[str, list[Dataset]] = {}
    for path in write_results(folder, "study", out.objects):
        errors, _ = dciodvfy_errors(path)
        assert errors == [], path.parent.name
        ds = pydicom.dcmread(path)
        kind = {"PR": "GSPS", "OT": "SC"}.get(str(ds.Modality), str(ds.Modality))
        back.setdefault(kind, []).append(ds)
    assert set(back) == set(kinds)
    return back


def _outcome(out: SeriesOutcome, kind: str) -> ObjectOutcome:
    return next(o for o in out.outcomes if o.kind == kind)


def _status(model: str, kinds: list[str], files: Sequence[Path], folder: Path) -> str:
    """The job's status as ``cds process --model`` records it in process.json."""
    req = Request(
        paths=list(files), out=folder, model_dirs=[MODELS], model=model, kinds=kinds, warm=False
    )
    assert process_offline(req).ok
    (study,) = json.loads((folder / "process.json").read_text())["studies"]
    (series,) = study["series"]
    return str(series["status"])


def _seg_masks(seg: Dataset) -> dict[tuple[int, str, int], np.ndarray]:
    """Each frame of ``seg`` by (segment, referenced SOP Instance UID, frame number)."""
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns).astype(bool)
    out = {}
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        # highdicom puts the segment of a one-segment SEG in the shared groups
        where = item if "SegmentIdentificationSequence" in item else shared
        segment = int(where.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        key = (
            segment,
            str(source.ReferencedSOPInstanceUID),
            int(source.get("ReferencedFrameNumber", 1)),
        )
        assert key not in out
        out[key] = frame
        assert "PlanePositionSequence" not in item
    return out


def _model_masks(result: InferenceResult) -> dict[tuple[int, str, int], np.ndarray]:
    """The model's positive masks by (segment number, as build_seg numbers them, image)."""
    with_mask = [f for f in result.findings if any(np.any(m) for m in f.per_image.values())]
    return {
        (n, ref.sop_uid, ref.frame): np.asarray(mask, dtype=bool)
        for n, f in enumerate(with_mask, start=1)
        for ref, mask in f.per_image.items()
        if np.any(mask)
    }


def test_ct_without_frame_of_reference_gets_a_seg_referencing_its_source_images(
    models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    if not SERIES.is_dir():
        pytest.skip(f"test series not found: {SERIES}")
    files = [_without(p, tmp_path / "src", NO_FOR) for p in sorted(SERIES.glob("*.dcm"))[:3]]
    out = _run(models["cds-ref-ct-bone"], ["SEG", "SR"], files)
    back = _made(out, ["SEG", "SR"], tmp_path / "out")
    assert NO_FRAME_OF_REFERENCE in _outcome(out, "SEG").reason
    assert _outcome(out, "SEG").text.startswith("SEG made (made without Frame of Reference")
    (seg,) = back["SEG"]
    assert "FrameOfReferenceUID" not in seg
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert "PlaneOrientationSequence" not in shared
    assert "PixelMeasuresSequence" not in shared
    # the sources' orientation (from their ImageOrientationPatient), Type 2C without a plane
    assert list(seg.PatientOrientation) == ["L", "P"]
    # the mask read back, frame by frame with the source image it references, is the model's
    expected = _model_masks(out.result)
    assert len(expected) >= 2  # several slices, the case highdicom does not handle
    got = _seg_masks(seg)
    assert got.keys() == expected.keys()
    for key, mask in expected.items():
        assert np.array_equal(got[key], mask), key
    # and so it is for a reader that maps the frames by their references (highdicom)
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    volume = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(uids)
    for (segment, uid, _), mask in expected.items():
        assert np.array_equal(volume[uids.index(uid), :, :, segment - 1].astype(bool), mask)
    # the job is done, not partial
    assert _status("cds-ref-ct-bone", ["SEG", "SR"], files, tmp_path / "process") == "done"


def test_a_multiframe_source_without_frame_of_reference_gets_a_seg_of_its_frames(
    models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    src = pydicom.dcmread(_without(ENHANCED_CT, tmp_path, NO_FOR))
    manifest = models["cds-ref-ct-bone"].manifest
    assert manifest is not None
    masks = {}
    for frame, (r, c) in ((1, (5, 10)), (2, (40, 60))):
        m = np.zeros((int(src.Rows), int(src.Columns)), dtype=bool)
        m[r : r + 15, c : c + 25] = True
        masks[ImageRef(str(src.SOPInstanceUID), frame)] = m
    finding = Finding(manifest.output.labels[0], 0.9, True, masks)
    result = InferenceResult(
        record(manifest, str(src.SeriesInstanceUID)), "segmentation", [finding], {}, list(masks)
    )
    positions = [
        list(f.PlanePositionSequence[0].ImagePositionPatient)
        for f in src.PerFrameFunctionalGroupsSequence
    ]
    notes: list[str] = []
    seg = build_seg([src], result, manifest, "en", notes=notes)
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    assert dciodvfy_errors(path)[0] == []
    got = _seg_masks(pydicom.dcmread(path))
    assert got.keys() == {(1, ref.sop_uid, ref.frame) for ref in masks}
    for ref, mask in masks.items():
        assert np.array_equal(got[(1, ref.sop_uid, ref.frame)], mask)
    assert NO_FRAME_OF_REFERENCE in notes
    # the source is left as it came (the stand-in geometry was put on a copy)
    assert "FrameOfReferenceUID" not in src
    assert positions == [
        list(f.PlanePositionSequence[0].ImagePositionPatient)
        for f in src.PerFrameFunctionalGroupsSequence
    ]


def test_a_ct_without_orientation_gets_its_sc_and_gsps_with_the_boxes_in_place(
    models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    src = _without(CT_SMALL, tmp_path / "src", (*NO_FOR, *NO_ORIENTATION))
    kinds = ["GSPS", "SR", "SC"]
    out = _run(models["cds-ref-blob-detect"], kinds, [src])
    back = _made(out, kinds, tmp_path / "out")
    assert ORIENTATION_UNKNOWN in _outcome(out, "SC").reason
    (sc,) = back["SC"]
    assert "PatientOrientation" in sc
    assert sc.PatientOrientation in ("", None, [])  # present, empty: unknown (Type 2)
    (finding,) = [f for f in out.result.findings if f.per_image]
    (boxes,) = finding.per_image.values()
    assert isinstance(boxes, list)
    assert boxes
    # the SC: each box's outline, below the banner, is drawn in the finding's colour
    pixels = sc.pixel_array
    banner = max(24, int(sc.Rows) // 12)  # the SC's banner covers these rows
    for (r0, c0, r1, c1), _ in boxes:
        top, left, bottom, right = int(r0), int(c0), int(r1), int(c1)
        if top < banner:
            continue
        outline = np.concatenate(
            [
                pixels[top, left : right + 1],
                pixels[bottom, left : right + 1],
                pixels[top : bottom + 1, left],
                pixels[top : bottom + 1, right],
            ]
        )
        assert np.mean(np.all(outline == FIRST_COLOUR, axis=1)) > 0.9, (r0, c0)
    # the GSPS: each box is the rectangle the model gave, in source pixels
    (gsps,) = back["GSPS"]
    drawn = [
        np.asarray(g.GraphicData, dtype=float).reshape(-1, 2)
        for a in gsps.GraphicAnnotationSequence
        for g in a.get("GraphicObjectSequence", [])
    ]
    assert len(drawn) == len(boxes)
    for (box, _), graphic in zip(boxes, drawn, strict=True):
        assert graphic == pytest.approx(rectangle(*box))
    assert _status("cds-ref-blob-detect", kinds, [src], tmp_path / "process") == "done"


def test_a_dx_without_orientation_gets_its_sc(
    models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    """The CR/DX case of the issue: a chest DX with neither PatientOrientation nor
    ImageOrientationPatient (a low-contrast image, so the triage model reports it)."""
    if not DX.exists():
        pytest.skip(f"corpus file missing: {DX}")
    ds = pydicom.dcmread(DX)
    pixels = np.full_like(ds.pixel_array, 100)
    pixels[:60, :60] = 200
    src = _without(DX, tmp_path / "src", NO_ORIENTATION, PixelData=pixels.tobytes())
    kinds = ["SR", "GSPS", "SC"]
    out = _run(models["cds-ref-cxr-triage"], kinds, [src])
    back = _made(out, kinds, tmp_path / "out")
    assert ORIENTATION_UNKNOWN in _outcome(out, "SC").reason
    assert _outcome(out, "SC").text.startswith("SC made (PatientOrientation left empty")
    assert "PatientOrientation" in back["SC"][0]
    assert _status("cds-ref-cxr-triage", kinds, [src], tmp_path / "process") == "done"


def test_the_seg_and_sc_of_a_lossy_source_say_so_with_the_method(
    models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    """JPEG-LS near-lossless, LossyImageCompression 01 and a ratio, but no method."""
    if not LOSSY_CT.exists():
        pytest.skip(f"corpus file missing: {LOSSY_CT}")
    out = _run(models["cds-ref-ct-bone"], ["SEG", "SC"], [LOSSY_CT])
    back = _made(out, ["SEG", "SC"], tmp_path / "out")
    for kind in ("SEG", "SC"):
        obj = back[kind][0]
        assert obj.LossyImageCompression == "01", kind
        assert float(obj.LossyImageCompressionRatio) == 6.0
        assert obj.LossyImageCompressionMethod == "ISO_14495_1"
        assert METHOD_FROM_TRANSFER_SYNTAX in _outcome(out, kind).reason
    out = _run(models["cds-ref-blob-detect"], ["GSPS"], [LOSSY_CT])
    (gsps,) = _made(out, ["GSPS"], tmp_path / "gsps")["GSPS"]
    # a presentation state has no pixels: no module of its IOD holds these
    assert "LossyImageCompression" not in gsps
    assert _outcome(out, "GSPS").reason == ""


def _source(ts: str = ExplicitVRLittleEndian, **values: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    for kw, value in values.items():
        setattr(ds, kw, value)
    return ds


def test_lossy_compression_is_inherited_from_any_source() -> None:
    # a source that names its method and ratios: copied as they are, no note
    named = _source(
        LossyImageCompression="01",
        LossyImageCompressionRatio=["10", "2.5"],
        LossyImageCompressionMethod=["ISO_10918_1", "ISO_15444_1"],
    )
    obj, notes = Dataset(), []
    obj.LossyImageCompression = "00"  # as highdicom copies it from the first source
    set_lossy_compression(obj, [_source(), named], notes)
    assert obj.LossyImageCompression == "01"  # any source: C.8.20.2.2
    assert [float(v) for v in obj.LossyImageCompressionRatio] == [10.0, 2.5]
    assert list(obj.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_15444_1"]
    assert notes == []
    # JPEG baseline is lossy whatever the header says: the method from the syntax, said
    obj, notes = Dataset(), []
    jpeg = _source(JPEGBaseline8Bit)
    tag = Tag(tag_for_keyword("LossyImageCompressionRatio"))  # as a scanner wrote it
    jpeg[tag] = RawDataElement(tag, "DS", 4, b"six ", 0, False, True)
    set_lossy_compression(obj, [jpeg], notes)
    assert (obj.LossyImageCompression, obj.LossyImageCompressionMethod) == ("01", "ISO_10918_1")
    assert "LossyImageCompressionRatio" not in obj  # not a valid DS: left out
    assert notes == [METHOD_FROM_TRANSFER_SYNTAX]
    # nothing lossy: nothing changes
    obj, notes = Dataset(), []
    set_lossy_compression(obj, [_source(LossyImageCompression="00")], notes)
    assert "LossyImageCompression" not in obj
    assert notes == []


@pytest.mark.parametrize(
    ("source", "laterality", "body_part"),
    [
        ({"BodyPartExamined": "HEAD"}, None, "HEAD"),  # unpaired: absent, and why
        ({"BodyPartExamined": "chest "}, None, "CHEST"),
        ({"BodyPartExamined": "KNEE", "Laterality": "R"}, "R", None),
        ({"BodyPartExamined": "BREAST", "ImageLaterality": "L"}, "L", None),
        ({"BodyPartExamined": "KNEE", "ImageLaterality": "B"}, "", None),  # paired, side unknown
        ({"Laterality": ""}, "", None),  # body part unknown
        ({}, "", None),
    ],
)
def test_series_laterality_is_the_side_absent_for_an_unpaired_body_part(
    source: dict[str, str], laterality: str | None, body_part: str | None
) -> None:
    obj = Dataset()
    obj.Laterality = ""  # what an encoder may have put there
    set_series_laterality(obj, _source(**source))
    assert obj.get("Laterality") == laterality
    assert obj.get("BodyPartExamined") == body_part


def test_the_pr_and_sc_of_a_head_ct_carry_no_empty_laterality(
    models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    """The validator's finding: an empty Laterality in the PR of an unpaired body part."""
    src = _without(CT_SMALL, tmp_path / "src", ("Laterality",), BodyPartExamined="HEAD")
    out = _run(models["cds-ref-blob-detect"], ["GSPS", "SC"], [src])
    back = _made(out, ["GSPS", "SC"], tmp_path / "out")
    for obj in (*back["GSPS"], *back["SC"]):
        assert "Laterality" not in obj
        assert obj.BodyPartExamined == "HEAD"
    for path in (tmp_path / "out" / "study").rglob("*.dcm"):
        _, warnings = dciodvfy_errors(path)
        assert not [w for w in warnings if "Laterality" in w], path.parent.name
