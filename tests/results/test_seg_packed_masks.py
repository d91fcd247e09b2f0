"""Issue 19, item 6 (memory): the SEG and SR of bit-packed masks (``cds.findings.Masks``).

A segmentation's masks reach the encoders bit-packed. The SEG's frames are their bits
as they are (a frame of whole bytes) or packed once from them (a frame that is not), so
the object is byte for byte the one made from boolean arrays; the SR unpacks only the
mask whose bounding box it draws. Frames are checked against the masks they came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from io import BytesIO

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cds.findings import (
    Code,
    Finding,
    ImageRef,
    InferenceRecord,
    InferenceResult,
    Label,
    Masks,
    PackedMask,
    Text,
)
from cds.inference import manifest as mf
from cds.inference.synthetic import ct_series
from cds.results.seg import build_seg
from cds.results.sr import build_sr
from tests.results.test_seg import MODELS, SHA

LESION = Label(
    index=1,
    code=Code(scheme="SCT", value="52988006", meaning="Lesion"),
    display=Text(en="Lesion", fr="Lésion"),
)
_TIMES = {"InstanceCreationTime", "ContentTime", "ContributionDateTime", "InstanceCreationDate",
          "ContentDate", "SeriesDate", "SeriesTime"}  # fmt: skip


@pytest.fixture(scope="module")
def manifest() -> mf.Manifest:
    return mf.load_manifest(MODELS / "cds-ref-ct-bone")


def _sources(rows: int, columns: int, slices: int = 5) -> list[Dataset]:
    return ct_series(np.zeros((slices, rows, columns)), f"test-seg-packed/{rows}x{columns}")


def _masks(sources: Sequence[Dataset], *, overlap: bool) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """Two findings' masks per image: bone on every slice but the third (empty there),
    a lesion on slice 1 that lies in the bone or beside it."""
    rng = np.random.default_rng(7)
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    refs = [ImageRef(str(ds.SOPInstanceUID), 1) for ds in sources]
    bone = {r: rng.random((rows, columns)) > 0.7 for r in refs}
    bone[refs[2]] = np.zeros((rows, columns), dtype=bool)
    lesion = np.zeros((rows, columns), dtype=bool)
    lesion[:, : columns // 3] = True
    if not overlap:
        bone[refs[1]][lesion] = False
    return bone, {refs[1]: lesion}


def _result(
    sources: Sequence[Dataset],
    manifest: mf.Manifest,
    bone: dict,
    lesion: dict,  # type: ignore[type-arg]
) -> InferenceResult:
    rec = InferenceRecord(manifest.name, manifest.version, SHA, "cpu", "0.1.0",
                          (str(sources[0].SeriesInstanceUID),), len(sources), 0.1, {})  # fmt: skip
    findings = [
        Finding(manifest.output.labels[0], 0.9, True, bone),
        Finding(LESION, 0.8, True, lesion),
    ]
    refs = [ImageRef(str(ds.SOPInstanceUID), 1) for ds in sources]
    return InferenceResult(rec, "segmentation", findings, {}, refs)


def _bytes(ds: Dataset) -> bytes:
    """The object as written, its creation dates and times blanked (the only values
    two builds of the same inputs differ in)."""

    def blank(item: Dataset) -> None:
        for elem in item:
            if elem.VR == "SQ":
                for inner in elem.value:
                    blank(inner)
            elif elem.keyword in _TIMES:
                elem.value = {"DA": "20000101", "TM": "000000"}.get(elem.VR, "20000101000000")

    blank(ds)
    out = BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _frames_are_the_masks(seg: Dataset, masks: Sequence[dict]) -> None:  # type: ignore[type-arg]
    """Each frame read back is the mask of its segment on the image it derives from."""
    back = pydicom.dcmread(BytesIO(_bytes(seg)))
    rows, columns, n = int(back.Rows), int(back.Columns), int(back.NumberOfFrames)
    bits = np.unpackbits(np.frombuffer(back.PixelData, np.uint8), bitorder="little")
    frames = bits[: n * rows * columns].reshape(n, rows, columns).astype(bool)
    shared = back.SharedFunctionalGroupsSequence[0]
    seen = 0
    for frame, item in zip(frames, back.PerFrameFunctionalGroupsSequence, strict=True):
        where = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        segment = int(where[0].ReferencedSegmentNumber)
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        ref = ImageRef(str(source.ReferencedSOPInstanceUID), 1)
        np.testing.assert_array_equal(frame, masks[segment - 1][ref])
        seen += 1
    assert seen == sum(1 for m in masks for a in m.values() if a.any())


@pytest.mark.parametrize("shape", [(64, 64), (37, 41)])  # whole bytes a frame, or not
@pytest.mark.parametrize("overlap", [True, False])
def test_the_seg_of_packed_masks_is_the_seg_of_boolean_arrays(
    shape: tuple[int, int], overlap: bool, manifest: mf.Manifest
) -> None:
    sources = _sources(*shape)
    bone, lesion = _masks(sources, overlap=overlap)
    arrays = build_seg(sources, _result(sources, manifest, bone, lesion), manifest, "en")
    packed = build_seg(
        sources, _result(sources, manifest, Masks(bone), Masks(lesion)), manifest, "en"
    )
    assert packed.SegmentsOverlap == ("YES" if overlap else "NO")
    assert int(packed.NumberOfFrames) == 5  # four bone slices, one lesion
    _frames_are_the_masks(packed, [bone, lesion])
    assert _bytes(packed) == _bytes(arrays)


def test_the_seg_of_images_without_a_frame_of_reference_from_packed_masks(
    manifest: mf.Manifest,
) -> None:
    """highdicom's own constructor (its mask array made from the packed masks)."""
    sources = _sources(32, 24)
    for ds in sources:
        for kw in ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient"):
            delattr(ds, kw)
    bone, lesion = _masks(sources, overlap=True)
    arrays = build_seg(sources, _result(sources, manifest, bone, lesion), manifest, "en")
    packed = build_seg(
        sources, _result(sources, manifest, Masks(bone), Masks(lesion)), manifest, "en"
    )
    assert "FrameOfReferenceUID" not in packed
    _frames_are_the_masks(packed, [bone, lesion])
    assert _bytes(packed) == _bytes(arrays)


def _counting_unpacks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    unpack: Callable[[PackedMask], np.ndarray] = PackedMask.unpack

    def counted(self: PackedMask) -> np.ndarray:
        calls.append(1)
        return unpack(self)

    monkeypatch.setattr(PackedMask, "unpack", counted)
    return calls


def test_the_seg_and_sr_unpack_only_what_they_draw(
    manifest: mf.Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SEG's frames of whole bytes are the masks' bits (only the first plane, which
    highdicom builds the object from, is unpacked); the SR unpacks the largest mask of
    each finding, for its bounding box."""
    sources = _sources(64, 64, slices=12)
    bone, lesion = _masks(sources, overlap=False)
    result = _result(sources, manifest, Masks(bone), Masks(lesion))
    calls = _counting_unpacks(monkeypatch)
    seg = build_seg(sources, result, manifest, "en")
    assert len(calls) <= 2  # the first plane's masks, one per segment
    calls.clear()
    sr = build_sr(sources, result, manifest, "en", seg=seg)
    assert len(calls) == 2  # one per finding
    assert sr.Modality == "SR"
    _frames_are_the_masks(seg, [bone, lesion])
