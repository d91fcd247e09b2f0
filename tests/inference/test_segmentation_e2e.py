"""issue 15: a segmentation lands on the slice and pixels it was computed from, in every
mask layout: 2D probabilities (NCHW, NHWC, NHW) and label maps, 3D label maps
[1, D, H, W] (the vendor's case), 3D probabilities [1, C, D, H, W], slice-major
[D, C, H, W] and [D, H, W].

Each model thresholds its input (``analytic.threshold_segmenter``); the source slices
hold rectangles whose place depends on the slice, and the volumes' files are given
out of order. Masks are read back from the encoded SEG's frames (by the source image
each frame references) and the SR's outline of the mask, and compared with the
rectangles: exactly for nearest integer-factor resizing, by Dice otherwise.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from cds.inference import readback as rb
from cds.inference import synthetic

from .analytic import label, load, manifest, run_e2e, threshold_segmenter

SHAPE = (5, 40, 56)  # slices, rows, columns
#: (slice, x1, y1, x2, y2): a rectangle moving and growing with the slice; slice 0 empty
BLOBS = [(1, 4, 6, 20, 16), (2, 10, 8, 30, 24), (3, 20, 12, 44, 30), (4, 30, 20, 54, 40)]
WINDOW = {"step": "window", "center": 150, "width": 300}


def series(tmp: Path, seed: str, *, shuffle: bool) -> tuple[list[Path], list[str]]:
    hu = np.zeros(SHAPE)
    for s, x1, y1, x2, y2 in BLOBS:
        hu[s, y1:y2, x1:x2] = 300
    datasets = synthetic.ct_series(hu, seed, spacing=(0.6, 0.9), slice_spacing=3.0, z0=-40)
    files = synthetic.write(datasets, tmp / "in")
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    if shuffle:
        random.Random(15).shuffle(files)
    return files, uids


def truth(uids: list[str]) -> dict[tuple[str, int], np.ndarray]:
    out = {}
    for s, x1, y1, x2, y2 in BLOBS:
        m = np.zeros(SHAPE[1:], dtype=bool)
        m[y1:y2, x1:x2] = True
        out[(uids[s], 1)] = m
    return out


def seg_manifest(
    *,
    volume: bool,
    layout: str,
    encoding: str,
    classes: int,
    index: int,
    steps: list[Any],
    channels_last: bool = False,
) -> Any:
    shape: list[Any] = ["n", 1, "d", "h", "w"] if volume else ["n", 1, "h", "w"]
    in_layout = "NCDHW" if volume else "NCHW"
    if channels_last:
        shape, in_layout = [shape[0], *shape[2:], 1], in_layout.replace("C", "") + "C"
    out_shape = [{"N": "n", "C": classes, "D": "d", "H": "h", "W": "w"}[ch] for ch in layout]
    if volume:
        shape[0] = 1
        out_shape = [1 if ch == "N" else d for ch, d in zip(layout, out_shape, strict=True)]
    tensor = {
        "name": "mask",
        "role": "mask",
        "shape": out_shape,
        "layout": layout,
        "encoding": encoding,
        "dtype": "uint8" if encoding == "labelmap" else "float32",
    }
    return manifest(
        name="acme-segmenter",
        kind="volume" if volume else "slice",
        input_spec={
            "modality": ["CT"],
            "tensor": {"name": "image", "shape": shape, "layout": in_layout},
            "preprocessing": [{"step": "modality_lut"}, WINDOW, *steps],
            "batch_size": 2,
        },
        output={
            "kind": "segmentation",
            "tensors": [tensor],
            "labels": [label(index, "Dense region")],
            "results": ["SEG", "SR"],
        },
    )


def check(objects: dict[str, pydicom.Dataset], want: dict[Any, np.ndarray]) -> float:
    """Dice of the SEG's masks with ``want``; the SR outlines the largest mask."""
    (masks,) = rb.seg_masks(objects["SEG"]).values()
    assert set(masks) == set(want), "the SEG's frames reference other images"
    inter = sum(int((masks[k] & want[k]).sum()) for k in want)
    total = sum(int(masks[k].sum() + want[k].sum()) for k in want)
    (group,) = rb.sr_groups(objects["SR"])
    assert group.present
    (outline,) = group.outlines
    key = (outline.sop_uid, outline.frame)
    assert key == max(want, key=lambda k: int(want[k].sum()))
    assert rb.box_iou(outline.edges, rb.mask_edges(masks[key])) > 0.999  # type: ignore[arg-type]
    return 2 * inter / total


NEAREST = {"step": "resize", "size": [20, 28], "interpolation": "nearest", "align_corners": False}
BILINEAR = {"step": "resize", "size": [32, 32], "interpolation": "bilinear", "align_corners": True}


@pytest.mark.parametrize(
    ("layout", "encoding", "classes", "index"),
    [
        ("NDHW", "labelmap", 1, 1),  # the vendor's [1, D, H, W] uint8 label map
        ("DHW", "labelmap", 1, 3),
        ("NCDHW", "probabilities", 2, 1),
        ("DCHW", "probabilities", 2, 1),
        ("NDHWC", "probabilities", 2, 1),
        ("NDHW", "probabilities", 1, 0),
    ],
)
def test_volume_masks_land_on_their_slices_whatever_the_arrival_order(
    tmp_path: Path, layout: str, encoding: str, classes: int, index: int
) -> None:
    files, uids = series(tmp_path, f"vol-{layout}-{encoding}", shuffle=True)
    m = seg_manifest(
        volume=True, layout=layout, encoding=encoding, classes=classes, index=index, steps=[NEAREST]
    )
    model = threshold_segmenter(
        volume=True, output_layout=layout, encoding=encoding, classes=classes, value=index
    )
    result, objects = run_e2e(load(model, m, tmp_path / "m"), files, ["SEG", "SR"], tmp_path)
    assert check(objects, truth(uids)) == 1.0
    (finding,) = result.findings
    area = sum((x2 - x1) * (y2 - y1) for _, x1, y1, x2, y2 in BLOBS) * 0.6 * 0.9
    assert finding.measurement == pytest.approx(area)
    assert finding.volume_mm3 == pytest.approx(area * 3.0)


@pytest.mark.parametrize(
    ("layout", "encoding", "classes", "index", "resize", "min_dice"),
    [
        ("NCHW", "probabilities", 1, 0, NEAREST, 1.0),
        ("NCHW", "probabilities", 2, 1, BILINEAR, 0.95),
        ("NHWC", "probabilities", 2, 1, NEAREST, 1.0),
        ("NHW", "probabilities", 1, 0, BILINEAR, 0.95),
        ("NHW", "labelmap", 1, 2, NEAREST, 1.0),
        ("NCHW", "labelmap", 1, 5, BILINEAR, 0.9),
    ],
)
def test_slice_masks_land_on_their_source_pixels(
    tmp_path: Path,
    *,
    layout: str,
    encoding: str,
    classes: int,
    index: int,
    resize: dict[str, Any],
    min_dice: float,
) -> None:
    files, uids = series(tmp_path, f"2d-{layout}-{encoding}", shuffle=False)
    m = seg_manifest(
        volume=False, layout=layout, encoding=encoding, classes=classes, index=index, steps=[resize]
    )
    model = threshold_segmenter(
        volume=False, output_layout=layout, encoding=encoding, classes=classes, value=index
    )
    _, objects = run_e2e(load(model, m, tmp_path / "m"), files, ["SEG", "SR"], tmp_path)
    assert check(objects, truth(uids)) >= min_dice


def test_a_multiframe_source_gets_one_seg_frame_per_source_frame(
    tmp_path: Path, corpus: Path
) -> None:
    src = pydicom.dcmread(corpus / "ct" / "eCT_Supplemental.dcm")
    frames = np.full((2, 512, 512), 1024, dtype=np.uint16)
    frames[0, 64:128, 32:96] = 1324
    frames[1, 320:400, 400:480] = 1324
    src.PixelData = frames.tobytes()
    path = tmp_path / "in" / "enhanced.dcm"
    path.parent.mkdir()
    src.save_as(path)
    resize = {**NEAREST, "size": [64, 64]}
    m = seg_manifest(
        volume=False, layout="NCHW", encoding="probabilities", classes=1, index=0, steps=[resize]
    )
    model = threshold_segmenter(volume=False, output_layout="NCHW", encoding="probabilities")
    _, objects = run_e2e(load(model, m, tmp_path / "m"), [path], ["SEG", "SR"], tmp_path)
    uid = str(src.SOPInstanceUID)
    want = {(uid, f + 1): frames[f] > 1174 for f in range(2)}
    # probabilities are interpolated back (bilinear): at 8 source pixels per model pixel
    # the rectangles' corner pixels fall under 0.5; the edges are exact
    assert check(objects, want) > 0.99
    (masks,) = rb.seg_masks(objects["SEG"]).values()
    assert {k: rb.mask_edges(v) for k, v in masks.items()} == {
        (uid, 1): (32, 64, 96, 128),
        (uid, 2): (400, 320, 480, 400),
    }


def test_a_volume_without_positions_is_refused_with_what_to_change(tmp_path: Path) -> None:
    from cds.errors import ModelError
    from cds.inference.images import decode

    files, _ = series(tmp_path, "nopos", shuffle=False)
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    m = seg_manifest(volume=True, layout="NDHW", encoding="labelmap", classes=1, index=1, steps=[])
    runner = load(
        threshold_segmenter(volume=True, output_layout="NDHW", encoding="labelmap"),
        m,
        tmp_path / "m",
    )
    with pytest.raises(ModelError, match=r"ImagePositionPatient"):
        runner.run(decode(files))


@pytest.mark.parametrize("volume", [True, False])
def test_channels_last_inputs_ndhwc_and_nhwc(tmp_path: Path, volume: bool) -> None:
    """The input tensor with its channel last: [1, D, H, W, 1] and [N, H, W, 1]."""
    files, uids = series(tmp_path, f"last-{volume}", shuffle=volume)
    layout = "NDHW" if volume else "NHW"
    m = seg_manifest(
        volume=volume,
        layout=layout,
        encoding="labelmap",
        classes=1,
        index=1,
        steps=[NEAREST],
        channels_last=True,
    )
    model = threshold_segmenter(
        volume=volume, output_layout=layout, encoding="labelmap", channels_last=True
    )
    _, objects = run_e2e(load(model, m, tmp_path / "m"), files, ["SEG", "SR"], tmp_path)
    assert check(objects, truth(uids)) == 1.0
