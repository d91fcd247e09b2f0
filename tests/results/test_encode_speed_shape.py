"""issue 19 item 4: encoding a long series costs little, and says the same.

- The SEG of a CT or MR series is built in one pass (``cds.results.seg_frames.in_one_pass``):
  it must be the SEG highdicom builds from every source image, element for element
  (only the creation times and the random Dimension Organization UID differ), whatever
  the order of the images, gaps between the frames of a segment, an uneven spacing,
  one slice only or a spacing the images state.
- The SR stays small: a segmentation finding's group names its segment of the SEG,
  whose frames name each image it lies on, instead of one IMAGE item per slice; its
  rectangle keeps the image it is SELECTED FROM (what OHIF hydrates). Its content tree
  does not grow with the number of slices; its evidence still lists every analysed
  image and the SEG. Without a SEG, the group keeps naming the images the finding is on.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from cds.demo_study import synthetic_ct
from cds.findings import Code, Finding, ImageRef, InferenceRecord, InferenceResult, Label, Text
from cds.inference import manifest as mf
from cds.inference.readback import sr_groups
from cds.results import seg as seg_module
from cds.results.encode import encode
from cds.results.seg import build_seg

REPO = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef" * 4
SIZE = 32
DCIODVFY = "/usr/bin/dciodvfy"
#: what two constructions of one SEG may differ in: when, and highdicom's random UID
_MOMENT = {
    "InstanceCreationDate",
    "InstanceCreationTime",
    "ContentDate",
    "ContentTime",
    "ContributionDateTime",
    "DimensionOrganizationUID",
}
LESION = Label(
    index=1,
    code=Code(scheme="SCT", value="52988006", meaning="Lesion"),
    display=Text(en="Lesion", fr="Lésion"),
)


@pytest.fixture(scope="module")
def manifest() -> mf.Manifest:
    return mf.load_manifest(REPO / "models" / "cds-ref-ct-bone")


def ct(folder: Path, slices: int) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in synthetic_ct(folder, slices, SIZE).files]


def block(i: int, size: int = SIZE) -> np.ndarray:
    """A block whose place and size depend on the slice: a misplaced frame shows."""
    m = np.zeros((size, size), dtype=bool)
    m[2 + i % 7 : 9 + i % 11, 3 : 6 + i % 13] = True
    return m


def result_of(
    sources: Sequence[Dataset], manifest: mf.Manifest, masks: Sequence[dict[int, np.ndarray]]
) -> InferenceResult:
    """One finding per item of ``masks`` (slice index -> mask), the first the bone label."""
    refs = [ImageRef(str(ds.SOPInstanceUID), 1) for ds in sources]
    labels = [manifest.output.labels[0], LESION]
    findings = [
        Finding(labels[n], 0.9, True, {refs[i]: m for i, m in by_slice.items()})
        for n, by_slice in enumerate(masks)
    ]
    rec = InferenceRecord(
        model=manifest.name,
        version=manifest.version,
        sha256=SHA,
        provider="cpu",
        cds_version="0.1.0",
        series_uids=(str(sources[0].SeriesInstanceUID),),
        images=len(sources),
        seconds=0.1,
        timings={},
    )
    return InferenceResult(rec, "segmentation", findings, {}, refs)


def differences(a: Dataset, b: Dataset, path: str = "") -> Iterator[str]:
    """Where ``a`` and ``b`` differ, element by element, item by item (not in _MOMENT)."""
    tags = sorted(set(a.keys()) | set(b.keys()))
    for tag in tags:
        x, y = a.get(tag), b.get(tag)
        where = f"{path}{x.keyword if x is not None else y.keyword}"
        if where.rsplit(".", 1)[-1] in _MOMENT:
            continue
        if x is None or y is None:
            yield f"{where}: only in {'the one-pass SEG' if y is None else 'highdicom'}"
        elif x.VR != y.VR:
            yield f"{where}: VR {x.VR} != {y.VR}"
        elif isinstance(x.value, DicomSequence):
            if len(x.value) != len(y.value):
                yield f"{where}: {len(x.value)} items != {len(y.value)}"
                continue
            for n, (i, j) in enumerate(zip(x.value, y.value, strict=True)):
                yield from differences(i, j, f"{where}[{n}].")
        elif where == "PixelData":
            same = len(x.value) // 2 * 2  # highdicom pads an odd length with b"0"
            if x.value[: same - 1] != y.value[: same - 1]:
                yield "PixelData differs"
        elif x.value != y.value:
            yield f"{where}: {x.value!r} != {y.value!r}"


def dciodvfy_errors(path: Path) -> list[str]:
    if not Path(DCIODVFY).exists():
        pytest.skip(f"{DCIODVFY} is not installed (Debian package dicom3tools)")
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    return [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("Error")]


def both_ways(
    sources: Sequence[Dataset],
    result: InferenceResult,
    manifest: mf.Manifest,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Dataset, Dataset]:
    """(the SEG built in one pass, the SEG highdicom builds from every source image)."""
    fast = build_seg(sources, result, manifest, "en", uid_root_seed="s")
    with monkeypatch.context() as m:
        m.setattr(seg_module, "in_patient_space", lambda _sources: False)
        slow = build_seg(sources, result, manifest, "en", uid_root_seed="s")
    return fast, slow


CASES = {
    # slice index -> mask, per segment
    "two segments with gaps": (
        12, [{i: block(i) for i in range(9) if i != 3}, {5: block(1), 10: block(2)}]
    ),
    "two segments apart": (4, [{0: block(0)}, {1: block(1)}]),
    "one slice": (4, [{2: block(2)}]),
    "shuffled images": (10, [{i: block(i) for i in range(10)}]),
    "uneven spacing": (10, [{i: block(i) for i in (0, 1, 2, 4, 7)}]),
    "spacing stated": (6, [{i: block(i) for i in range(6)}]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_the_one_pass_seg_is_the_seg_highdicom_builds(
    case: str, manifest: mf.Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slices, masks = CASES[case]
    sources = ct(tmp_path, slices)
    if case == "spacing stated":
        for ds in sources:
            ds.SpacingBetweenSlices = 2.5
    result = result_of(sources, manifest, masks)
    if case == "shuffled images":
        sources = random.Random(19).sample(sources, len(sources))
    fast, slow = both_ways(sources, result, manifest, monkeypatch)
    assert list(differences(fast, slow)) == []
    assert np.array_equal(fast.pixel_array, slow.pixel_array)
    path = tmp_path / "seg.dcm"
    fast.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    back = hd.seg.Segmentation.from_dataset(pydicom.dcmread(path))  # highdicom reads it
    assert back.number_of_segments == len(masks)
    # each frame is the mask of its segment on the slice it references
    pixels = fast.pixel_array if int(fast.NumberOfFrames) > 1 else fast.pixel_array[None]
    shared = fast.SharedFunctionalGroupsSequence[0]
    for n, frame in enumerate(fast.PerFrameFunctionalGroupsSequence):
        named = frame.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        segment = int(named[0].ReferencedSegmentNumber)
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        mask = result.findings[segment - 1].per_image[ImageRef(uid, 1)]
        assert np.array_equal(pixels[n].astype(bool), mask), n


#: the IMAGE items of a segmented finding's SR: the group's source (its segment, DCM
#: 121112 "Source of Measurement") and the image its rectangle is SELECTED FROM
SEGMENT_AND_RECTANGLE = [("121112", "CONTAINS", True), ("260753009", "SELECTED FROM", False)]


def _walk(items: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _images(sr: Dataset) -> list[tuple[str, str, bool]]:
    """(concept, relationship, names a segment) of every IMAGE item of the content tree."""
    return [
        (str(i.ConceptNameCodeSequence[0].CodeValue) if "ConceptNameCodeSequence" in i else "",
         str(i.RelationshipType), "ReferencedSegmentNumber" in i.ReferencedSOPSequence[0])
        for i in _walk(sr.ContentSequence)
        if i.ValueType == "IMAGE"
    ]  # fmt: skip


def _encoded(
    folder: Path, slices: int, manifest: mf.Manifest, kinds: Sequence[str]
) -> tuple[list[Dataset], InferenceResult, Dataset, Dataset | None]:
    sources = ct(folder, slices)
    result = result_of(sources, manifest, [{i: block(i) for i in range(slices)}])
    objects, notes = encode(sources, result, manifest, kinds, "en", seed="shape")
    assert notes == []
    by_kind = {str(o.Modality): o for o in objects}
    return sources, result, by_kind["SR"], by_kind.get("SEG")


def test_a_segmented_finding_names_its_segment_not_every_slice(
    manifest: mf.Manifest, tmp_path: Path
) -> None:
    sources, result, sr, seg = _encoded(tmp_path / "long", 40, manifest, ["SEG", "SR"])
    assert seg is not None
    # one IMAGE naming the segment and the image the rectangle is SELECTED FROM: none per slice
    assert sorted(_images(sr)) == SEGMENT_AND_RECTANGLE
    # the content tree does not grow with the series
    _, _, short, _ = _encoded(tmp_path / "short", 5, manifest, ["SEG", "SR"])
    assert len(list(_walk(sr.ContentSequence))) == len(list(_walk(short.ContentSequence)))
    # the SEG's frames name every image the finding is on
    framed = {
        str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert framed == {str(ds.SOPInstanceUID) for ds in sources}
    # the evidence: every analysed image and the SEG
    evidence = {
        str(r.ReferencedSOPInstanceUID)
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for se in s.ReferencedSeriesSequence
        for r in se.ReferencedSOPSequence
    }
    assert evidence == {str(ds.SOPInstanceUID) for ds in sources} | {str(seg.SOPInstanceUID)}
    # the rectangle: the mask's bounding box on the slice where it is largest, in pixels
    ((group),) = sr_groups(sr)
    ((outline),) = group.outlines
    (finding,) = result.findings
    largest = max(finding.per_image, key=lambda ref: int(finding.per_image[ref].sum()))
    rows, cols = np.nonzero(finding.per_image[largest])
    assert outline.sop_uid == largest.sop_uid
    assert outline.edges == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_without_a_seg_the_group_names_the_images_the_finding_is_on(
    manifest: mf.Manifest, tmp_path: Path
) -> None:
    sources, _, sr, seg = _encoded(tmp_path, 8, manifest, ["SR"])
    assert seg is None
    named = {
        str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for i in _walk(sr.ContentSequence)
        if i.ValueType == "IMAGE" and i.RelationshipType == "CONTAINS"
    }
    assert named == {str(ds.SOPInstanceUID) for ds in sources}
