"""issue 15: the one mapping from model-input pixels to source pixels, and the resampling
the preprocessing does, checked against independent references (ONNX Resize, formulas)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from cds.inference import geometry as geo
from cds.inference.boxes import edges_of, finding_box, nms, to_edges
from cds.inference.manifest import BoxSpec
from cds.results.common import rectangle


def onnx_resize(x: np.ndarray, rows: int, cols: int, mode: str, ctm: str) -> np.ndarray:
    """onnxruntime's Resize: the ONNX specification's formulas, not ours."""
    xi = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))
    yi = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [*x.shape[:2], rows, cols])
    node = helper.make_node(
        "Resize",
        ["x", "", "", "sizes"],
        ["y"],
        mode=mode,
        coordinate_transformation_mode=ctm,
        cubic_coeff_a=-0.75,
        nearest_mode="round_prefer_ceil",
    )
    graph = helper.make_graph([node], "r", [xi], [yi], initializer=[sizes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0])


@pytest.mark.parametrize(("rows", "cols"), [(7, 9), (26, 40), (13, 5)])
@pytest.mark.parametrize(
    ("method", "mode"), [("nearest", "nearest"), ("bilinear", "linear"), ("bicubic", "cubic")]
)
@pytest.mark.parametrize(("corners", "ctm"), [(False, "half_pixel"), (True, "align_corners")])
def test_resampling_equals_onnx_resize(
    rows: int, cols: int, *, method: str, mode: str, corners: bool, ctm: str
) -> None:
    x = np.random.default_rng(0).random((1, 1, 13, 17)).astype(np.float32)
    got = geo.resample(x, rows, cols, method=method, align_corners=corners)  # type: ignore[arg-type]
    np.testing.assert_allclose(got, onnx_resize(x, rows, cols, mode, ctm), atol=2e-6)


def test_area_is_the_mean_of_the_covered_pixels() -> None:
    x = np.arange(48, dtype=np.float32).reshape(1, 6, 8)
    got = geo.resample(x, 3, 4, method="area", align_corners=False)
    want = x.reshape(1, 3, 2, 4, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(got, want)
    # a non-integer factor: the output pixel covers 1.5 input pixels
    row = np.array([[[0, 3, 6]]], dtype=np.float32)
    np.testing.assert_allclose(geo.resample(row, 1, 2, method="area")[0, 0], [1.0, 5.0])


def test_resize_maps_pixel_edges_and_centres() -> None:
    half = geo.resize_axis(100, 50, align_corners=False)
    assert (half(0), half(50)) == (0, 100)  # edges onto edges
    aligned = geo.resize_axis(101, 51, align_corners=True)
    assert aligned(0.5) == pytest.approx(0.5)  # first centre onto first centre
    assert aligned(50.5) == pytest.approx(100.5)  # last onto last


def test_composition_flip_then_resize_then_crop() -> None:
    """A 10 x 20 source flipped left-right, resized x2, cropped by 4 columns at the left:
    model column 0 is source column 20 - (0 + 4) / 2 = 18 (its right edge)."""
    x = geo.flip_axis(20).then(geo.resize_axis(20, 40, False)).then(geo.shift_axis(4))
    g = geo.Geometry(10, 20, 10, 36, x, geo.IDENTITY)
    assert g.point(0, 0) == (18.0, 0.0)
    assert g.box(0, 0, 2, 5) == (17.0, 0.0, 18.0, 5.0)  # ordered, flipped back
    assert g.flip_columns
    assert not g.flip_rows


def test_boxes_are_clipped_to_the_source_image() -> None:
    g = geo.Geometry(10, 20, 10, 20)
    assert g.box(-5, -1, 25, 30) == (0.0, 0.0, 20.0, 10.0)


def test_mask_maps_back_with_nearest_and_bilinear() -> None:
    g = geo.Geometry(4, 6, 2, 3, geo.resize_axis(6, 3, False), geo.resize_axis(4, 2, False))
    labels = np.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(
        g.mask(labels, "nearest"), np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1)
    )
    probs = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    back = g.mask(probs, "bilinear")
    assert back.shape == (4, 6)
    assert (back[:, 2:4] >= 0.5).all()
    assert (back[:, [0, 5]] < 0.5).all()


def test_mask_on_a_coarser_grid_and_cropped_regions() -> None:
    """A map at half the model input's resolution covers the same area; source pixels
    a crop removed get 0."""
    g = geo.Geometry(8, 8, 4, 4, geo.shift_axis(2), geo.shift_axis(2))  # centre crop 4 x 4
    coarse = np.ones((2, 2), dtype=np.int64)
    back = g.mask(coarse, "nearest")
    assert back[2:6, 2:6].all()
    assert back.sum() == 16


@pytest.mark.parametrize(
    ("fmt", "box"),
    [
        ("xyxy", [2, 3, 6, 9]),
        ("yxyx", [3, 2, 9, 6]),
        ("xywh", [2, 3, 4, 6]),
        ("cxcywh", [4, 6, 4, 6]),
    ],
)
def test_box_formats_give_the_same_edges(fmt: str, box: list[float]) -> None:
    spec = BoxSpec(format=fmt)  # type: ignore[arg-type]
    np.testing.assert_allclose(to_edges(np.array([box]), spec, 10, 20), [[2, 3, 6, 9]])


def test_normalized_and_inclusive_boxes() -> None:
    norm = BoxSpec(format="xyxy", units="normalized")
    np.testing.assert_allclose(
        to_edges(np.array([[0.1, 0.3, 0.3, 0.9]]), norm, 10, 20), [[2, 3, 6, 9]]
    )
    inclusive = BoxSpec(format="yxyx", end="inclusive")
    np.testing.assert_allclose(
        to_edges(np.array([[3, 2, 8, 5]]), inclusive, 10, 20), [[2, 3, 6, 9]]
    )
    with pytest.raises(ValueError, match="inclusive applies to xyxy/yxyx in pixels"):
        BoxSpec(format="xywh", end="inclusive")


def test_finding_boxes_draw_exactly_the_source_edges() -> None:
    fb = finding_box(2.5, 3.0, 10.25, 7.0)
    assert edges_of(fb) == (2.5, 3.0, 10.25, 7.0)
    r = rectangle(*fb)  # what the SR and the GSPS write
    assert (r[:, 0].min(), r[:, 1].min(), r[:, 0].max(), r[:, 1].max()) == (2.5, 3.0, 10.25, 7.0)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    edges = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=float)
    kept = nms(edges, np.array([0.8, 0.9, 0.7]), 0.5)
    assert kept.tolist() == [1, 2]
