"""issue 15: a detector's boxes land where the blob is, in every box layout.

Each model returns the box around the pixels above a threshold (``analytic.bbox_detector``).
The source images hold bright rectangles at known source pixels; the boxes are read
back from the encoded SR (SCOORD) and GSPS (graphic objects) files and compared with
those rectangles: exactly when the resize is an integer factor with nearest
interpolation, else within one model pixel (the bound of a thresholded interpolation).
Non-square images, anisotropic pixel spacing, letterbox, crop, flips, MONOCHROME1 and
multi-frame sources are covered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from cds.inference import readback as rb
from cds.inference import synthetic

from .analytic import bbox_detector, label, load, manifest, run_e2e

#: (slice, x1, y1, x2, y2) source edges of each bright rectangle; slice 2 has none
BLOBS = [(0, 8, 6, 30, 20), (1, 50, 24, 76, 44), (3, 2, 30, 14, 46)]
SHAPE = (4, 48, 80)  # slices, rows, columns: not square
WINDOW = {"step": "window", "center": 150, "width": 300}  # 0 HU -> 0, 300 HU -> 1


def scene(shape: tuple[int, int, int] = SHAPE, blobs: list[Any] = BLOBS) -> np.ndarray:
    hu = np.zeros(shape)
    for s, x1, y1, x2, y2 in blobs:
        hu[s, y1:y2, x1:x2] = 300
    return hu


def ct(tmp: Path, seed: str, **kw: Any) -> tuple[list[Path], dict[int, str]]:
    datasets = synthetic.ct_series(scene(), seed, spacing=(0.5, 1.2), **kw)
    files = synthetic.write(datasets, tmp / "in")
    return files, {i: str(ds.SOPInstanceUID) for i, ds in enumerate(datasets)}


def detector_manifest(
    box: dict[str, str],
    boxes_layout: str = "NK4",
    *,
    steps: list[dict[str, Any]],
    size: tuple[int, int],
    input_layout: str = "NCHW",
    scores_layout: str = "NK",
    labels: bool = True,
    batch: int = 4,
) -> Any:
    lead = ["n", 1] if boxes_layout == "NK4" else [1]
    scores_shape = [*lead, 3] if scores_layout.endswith("C") else lead
    tensors = [
        {"name": "boxes", "role": "boxes", "shape": [*lead, 4], "layout": boxes_layout, "box": box},
        {"name": "scores", "role": "box_scores", "shape": scores_shape, "layout": scores_layout},
    ]
    if labels:
        tensors.append(
            {
                "name": "labels",
                "role": "box_labels",
                "shape": lead,
                "dtype": "int64",
                "layout": scores_layout[:-1] if scores_layout.endswith("C") else scores_layout,
            }
        )
    shape = ["n", 1, *size] if input_layout == "NCHW" else ["n", *size, 1]
    return manifest(
        name="acme-detector",
        kind="slice",
        input_spec={
            "modality": ["CT"],
            "tensor": {"name": "image", "shape": shape, "layout": input_layout},
            "preprocessing": [{"step": "modality_lut"}, WINDOW, *steps],
            "batch_size": batch,
        },
        output={
            "kind": "detection",
            "tensors": tensors,
            "labels": [label(1)],
            "results": ["SR", "GSPS"],
        },
    )


def read_boxes(objects: dict[str, pydicom.Dataset]) -> tuple[dict[Any, list], dict[Any, list]]:
    sr: dict[Any, list] = {}
    for g in rb.sr_groups(objects["SR"]):
        if g.present:
            for o in g.outlines:
                sr.setdefault((o.sop_uid, o.frame), []).append(o.edges)
    gsps: dict[Any, list] = {}
    for o in rb.gsps_outlines(objects["PR"]) if "PR" in objects else []:
        gsps.setdefault((o.sop_uid, o.frame), []).append(o.edges)
    return sr, gsps


def expected(uids: dict[int, str], blobs: list[Any] = BLOBS) -> dict[Any, list]:
    return {
        (uids[s], 1): [(float(x1), float(y1), float(x2), float(y2))] for s, x1, y1, x2, y2 in blobs
    }


def assert_boxes(got: dict[Any, list], want: dict[Any, list], tol: tuple[float, float]) -> None:
    """Same images, one box each, every edge within ``tol`` (columns, rows) pixels."""
    assert set(got) == set(want), (sorted(got), sorted(want))
    for key, boxes in want.items():
        assert len(got[key]) == len(boxes), key
        for g, w in zip(got[key], boxes, strict=True):
            tx, ty = tol
            errors = np.abs(np.subtract(g, w))
            assert max(errors[0], errors[2]) <= tx, (key, g, w)
            assert max(errors[1], errors[3]) <= ty, (key, g, w)


NEAREST_HALF = {"interpolation": "nearest", "align_corners": False}
EXACT = (1e-3, 1e-3)  # SR and GSPS coordinates are 32-bit floats


@pytest.mark.parametrize(
    ("box", "units"),
    [
        ("xyxy", "pixels"),
        ("yxyx", "pixels"),
        ("xywh", "pixels"),
        ("cxcywh", "pixels"),
        ("xyxy", "normalized"),
        ("cxcywh", "normalized"),
    ],
)
def test_every_box_format_lands_exactly_on_the_source_blob(
    tmp_path: Path, box: str, units: str
) -> None:
    """Integer resize factor (80 x 48 -> 40 x 24, nearest): the boxes are exact."""
    files, uids = ct(tmp_path, f"fmt-{box}-{units}")
    m = detector_manifest(
        {"format": box, "units": units},
        steps=[{"step": "resize", "size": [24, 40], **NEAREST_HALF}],
        size=(24, 40),
    )
    model = bbox_detector(box_format=box, units=units, size=(24, 40))
    result, objects = run_e2e(load(model, m, tmp_path / "m"), files, ["SR", "GSPS"], tmp_path)
    sr, gsps = read_boxes(objects)
    assert_boxes(sr, expected(uids), EXACT)
    assert_boxes(gsps, expected(uids), EXACT)
    (finding,) = result.findings
    assert finding.present


def test_the_vendors_xyxy_detector_is_not_transposed(tmp_path: Path) -> None:
    """The vendor's case: separate boxes (x1, y1, x2, y2) / scores / int64 labels on a
    non-square image. Read as (row, col) the box would sit elsewhere: it must not."""
    files, uids = ct(tmp_path, "vendor")
    m = detector_manifest(
        {"format": "xyxy"},
        steps=[{"step": "resize", "size": [24, 40], **NEAREST_HALF}],
        size=(24, 40),
    )
    _, objects = run_e2e(
        load(bbox_detector(size=(24, 40)), m, tmp_path / "m"), files, ["SR"], tmp_path
    )
    sr, _ = read_boxes(objects)
    (x1, y1, x2, y2) = sr[(uids[1], 1)][0]
    assert (x1, y1, x2, y2) == (50, 24, 76, 44)
    assert (y1, x1, y2, x2) != (50, 24, 76, 44)


def test_unbatched_nhwc_yxyx_bilinear_aligned_corners(tmp_path: Path) -> None:
    """K4 boxes (batch_size 1), NHWC input, bilinear with aligned corners to 32 x 32 (a
    non-integer, different factor per axis): within one model pixel of the blob."""
    files, uids = ct(tmp_path, "k4")
    m = detector_manifest(
        {"format": "yxyx", "units": "normalized"},
        "K4",
        steps=[
            {"step": "resize", "size": [32, 32], "interpolation": "bilinear", "align_corners": True}
        ],
        size=(32, 32),
        input_layout="NHWC",
        scores_layout="K",
        batch=1,
    )
    model = bbox_detector(
        input_layout="NHWC", box_format="yxyx", units="normalized", batched=False, size=(32, 32)
    )
    _, objects = run_e2e(load(model, m, tmp_path / "m"), files, ["SR", "GSPS"], tmp_path)
    sr, gsps = read_boxes(objects)
    tol = (79 / 31, 47 / 31)  # one model pixel, in source pixels
    assert_boxes(sr, expected(uids), tol)
    assert_boxes(gsps, expected(uids), tol)


def test_score_matrix_and_letterbox(tmp_path: Path) -> None:
    """A per-class score matrix (NKC, no labels tensor) and a letterboxed input: the
    80 x 48 image scaled by 0.8 into 64 x 64, 12 rows of padding above and below."""
    files, uids = ct(tmp_path, "letterbox")
    m = detector_manifest(
        {"format": "xywh"},
        steps=[
            {
                "step": "resize",
                "size": [64, 64],
                "keep_aspect": True,
                "pad_value": 0,
                "interpolation": "bilinear",
                "align_corners": False,
            }
        ],
        size=(64, 64),
        scores_layout="NKC",
        labels=False,
    )
    model = bbox_detector(box_format="xywh", size=(64, 64), score_classes=3)
    _, objects = run_e2e(load(model, m, tmp_path / "m"), files, ["SR", "GSPS"], tmp_path)
    sr, gsps = read_boxes(objects)
    assert_boxes(sr, expected(uids), (1.25, 1.25))  # one model pixel = 1.25 source pixels
    assert_boxes(gsps, expected(uids), (1.25, 1.25))


def test_crop_and_orient_flip(tmp_path: Path) -> None:
    """Columns running to the patient's right (orientation -1, 0, 0): the orient step
    flips them; a centred crop to 40 x 72 then removes 4 columns and 4 rows per side.
    Boxes land back on the unflipped source exactly."""
    blobs = [(0, 8, 6, 30, 20), (1, 50, 24, 72, 40)]
    datasets = synthetic.ct_series(
        scene(blobs=blobs), "flip", spacing=(0.5, 1.2), orientation=(-1, 0, 0, 0, 1, 0)
    )
    files = synthetic.write(datasets, tmp_path / "in")
    uids = {i: str(ds.SOPInstanceUID) for i, ds in enumerate(datasets)}
    m = detector_manifest(
        {"format": "cxcywh"},
        steps=[{"step": "orient"}, {"step": "crop_or_pad", "size": [40, 72]}],
        size=(40, 72),
    )
    model = bbox_detector(box_format="cxcywh", size=(40, 72))
    result, objects = run_e2e(load(model, m, tmp_path / "m"), files, ["SR", "GSPS"], tmp_path)
    assert result.geometry[0].flip_columns
    sr, gsps = read_boxes(objects)
    assert_boxes(sr, expected(uids, blobs), EXACT)
    assert_boxes(gsps, expected(uids, blobs), EXACT)


def _cr(tmp: Path, seed: str) -> tuple[list[Path], str]:
    """A MONOCHROME1 radiograph, 60 x 100, anisotropic spacing: dark field (high stored
    values), a bright object (low stored values) at columns 60..90, rows 10..40."""
    img = np.full((60, 100), 3000.0)
    img[10:40, 60:90] = 400
    ds = synthetic.projection(img, seed, photometric="MONOCHROME1", spacing=(0.15, 0.3))
    return synthetic.write([ds], tmp / "in"), str(ds.SOPInstanceUID)


def _cr_manifest(invert: str) -> Any:
    return manifest(
        name="acme-cxr-detector",
        kind="projection",
        input_spec={
            "modality": ["CR"],
            "photometric": ["MONOCHROME1"],
            "invert": invert,
            "tensor": {"name": "image", "shape": ["n", 1, 30, 50], "layout": "NCHW"},
            "preprocessing": [
                {"step": "resize", "size": [30, 50], **NEAREST_HALF},
                {"step": "normalize", "method": "minmax"},
            ],
        },
        output={
            "kind": "detection",
            "tensors": [
                {
                    "name": "boxes",
                    "role": "boxes",
                    "shape": ["n", 1, 4],
                    "layout": "NK4",
                    "box": {"format": "xyxy"},
                },
                {"name": "scores", "role": "box_scores", "shape": ["n", 1], "layout": "NK"},
                {
                    "name": "labels",
                    "role": "box_labels",
                    "shape": ["n", 1],
                    "layout": "NK",
                    "dtype": "int64",
                },
            ],
            "labels": [label(1)],
            "results": ["SR", "GSPS"],
        },
    )


def test_monochrome1_is_inverted_as_the_manifest_states(tmp_path: Path) -> None:
    files, uid = _cr(tmp_path, "mono1")
    model = bbox_detector(size=(30, 50))
    _, objects = run_e2e(
        load(model, _cr_manifest("auto"), tmp_path / "a"), files, ["SR", "GSPS"], tmp_path / "auto"
    )
    sr, gsps = read_boxes(objects)
    assert sr == gsps == {(uid, 1): [(60.0, 10.0, 90.0, 40.0)]}
    # invert: never gives the stored values: the bright object is dark to the model
    _, objects = run_e2e(
        load(model, _cr_manifest("never"), tmp_path / "n"), files, ["SR"], tmp_path / "never"
    )
    sr, _ = read_boxes(objects)
    assert sr == {(uid, 1): [(0.0, 0.0, 100.0, 60.0)]}  # the whole field is above 0.5


def test_multiframe_boxes_name_their_frame(tmp_path: Path, corpus: Path) -> None:
    """An Enhanced CT instance (2 frames, 512 x 512) with a blob at a different place in
    each frame: each SR box names the right frame."""
    src = pydicom.dcmread(corpus / "ct" / "eCT_Supplemental.dcm")
    frames = np.full((2, 512, 512), 1024, dtype=np.uint16)  # stored: HU + 1024 -> 0 HU
    frames[0, 64:128, 32:96] = 1324
    frames[1, 320:400, 400:480] = 1324
    src.PixelData = frames.tobytes()
    path = tmp_path / "in" / "enhanced.dcm"
    path.parent.mkdir()
    src.save_as(path)
    m = detector_manifest(
        {"format": "xyxy"},
        steps=[{"step": "resize", "size": [64, 64], **NEAREST_HALF}],
        size=(64, 64),
    )
    _, objects = run_e2e(
        load(bbox_detector(size=(64, 64)), m, tmp_path / "m"), [path], ["SR"], tmp_path
    )
    sr, _ = read_boxes(objects)
    uid = str(src.SOPInstanceUID)
    assert sr == {(uid, 1): [(32.0, 64.0, 96.0, 128.0)], (uid, 2): [(400.0, 320.0, 480.0, 400.0)]}
