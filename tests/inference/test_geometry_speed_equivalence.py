"""Issue 19 (fixed cost per study): ``Geometry.mask`` and ``resample`` made cheaper give
the same bits as before.

The taps of each axis are made once per geometry and map size, the products are summed
in place a block of rows at a time, and resampling goes a chunk of images at a time:
none of it may change a value. The reference below is a copy of the implementation these
replaced (``_back_taps``, ``mask``, ``_apply`` and ``resample`` as they were); every
result is compared with it byte for byte, so one ULP or the sign of one zero fails. The
taps of ``resample`` (``geo._taps``) did not change and are checked against ONNX Resize
in test_geometry.py.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from cds.inference import geometry as geo
from cds.inference.geometry import Axis, Geometry


# --- the reference: the implementation before, copied ------------------------------
def ref_back_taps(
    axis: Axis, n_src: int, n_map: int, n_model: int, method: str
) -> tuple[np.ndarray, np.ndarray]:
    centre = np.arange(n_src, dtype=np.float64) + 0.5
    p = np.asarray(axis.inverse(centre)) * (n_map / n_model)
    inside = (p >= 0) & (p < n_map)
    if method == "nearest":
        idx = np.clip(np.floor(p), 0, n_map - 1).astype(np.intp)[:, None]
        return idx, inside.astype(np.float32)[:, None]
    u = np.clip(p - 0.5, 0.0, n_map - 1.0)
    lo = np.floor(u).astype(np.intp)
    hi = np.minimum(lo + 1, n_map - 1)
    w = (u - lo)[:, None]
    weights = np.concatenate([1 - w, w], axis=1) * inside[:, None]
    return np.stack([lo, hi], axis=1), weights.astype(np.float32)


def ref_mask(g: Geometry, values: np.ndarray, method: str) -> np.ndarray:
    h, w = values.shape
    ry, wy = ref_back_taps(g.y, g.rows, h, g.model_rows, method)
    rx, wx = ref_back_taps(g.x, g.columns, w, g.model_columns, method)
    if method == "nearest":
        out = values[ry[:, 0][:, None], rx[:, 0][None, :]]
        keep = (wy[:, 0][:, None] * wx[:, 0][None, :]) > 0
        return np.where(keep, out, np.zeros((), dtype=values.dtype))
    v = values.astype(np.float32, copy=False)
    cols = (v[:, rx] * wx[None, :, :]).sum(axis=2)
    out = (cols[ry] * wy[:, :, None]).sum(axis=1)
    return np.ascontiguousarray(out, dtype=np.float32)


def ref_apply(stack: np.ndarray, taps: tuple[np.ndarray, ...], axis: int) -> np.ndarray:
    idx, w = taps
    out = np.zeros((*stack.shape[:axis], idx.shape[0], *stack.shape[axis + 1 :]), dtype=np.float32)
    shape = [1] * stack.ndim
    shape[axis] = idx.shape[0]
    for t in range(idx.shape[1]):
        out += np.take(stack, idx[:, t], axis=axis) * w[:, t].reshape(shape)
    return out


def ref_resample(
    stack: np.ndarray, rows: int, columns: int, method: geo.Interpolation, align_corners: bool
) -> np.ndarray:
    h, w = stack.shape[-2:]
    if (h, w) == (rows, columns):
        return stack.astype(np.float32, copy=False)
    corners = align_corners and method != "area"
    ay, ax = geo.resize_axis(h, rows, corners), geo.resize_axis(w, columns, corners)
    out = ref_apply(
        stack.astype(np.float32, copy=False), geo._taps(ay, h, rows, method), stack.ndim - 2
    )
    return ref_apply(out, geo._taps(ax, w, columns, method), stack.ndim - 1)


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    a, b = np.ascontiguousarray(got), np.ascontiguousarray(want)
    same = a.view(np.uint8).reshape(-1, a.itemsize) == b.view(np.uint8).reshape(-1, b.itemsize)
    differ = np.flatnonzero(~same.all(axis=1))
    assert differ.size == 0, f"{differ.size} values differ, the first at flat index {differ[0]}"


# --- geometries like preprocessing makes them ---------------------------------------
def aligned(n_in: int, n_out: int) -> Axis:
    return geo.resize_axis(n_in, n_out, align_corners=True)


GEOMETRIES = {
    "identity": Geometry(40, 56, 40, 56),
    "bone-512-to-256": Geometry(512, 512, 256, 256, aligned(512, 256), aligned(512, 256)),
    "half-pixel": Geometry(
        60, 44, 30, 22, geo.resize_axis(44, 22, False), geo.resize_axis(60, 30, False)
    ),
    "flip-rows": Geometry(48, 40, 32, 32, aligned(40, 32), geo.flip_axis(48).then(aligned(48, 32))),
    "flip-columns": Geometry(
        48, 40, 32, 32, geo.flip_axis(40).then(aligned(40, 32)), aligned(48, 32)
    ),
    "flip-both-non-square": Geometry(
        30, 70, 24, 40,
        geo.flip_axis(70).then(aligned(70, 40)), geo.flip_axis(30).then(aligned(30, 24)),
    ),
    "crop": Geometry(
        64, 64, 32, 32,
        aligned(64, 40).then(geo.shift_axis(4)), aligned(64, 40).then(geo.shift_axis(4)),
    ),
    "pad": Geometry(
        50, 50, 32, 32,
        aligned(50, 24).then(geo.shift_axis(-4)), aligned(50, 24).then(geo.shift_axis(-4)),
    ),
    "letterbox": Geometry(90, 60, 64, 64, Axis(90 / 64, -15.0), Axis(90 / 64, 0.0)),
    "flip-crop-pad": Geometry(
        45, 77, 36, 36,
        geo.flip_axis(77).then(aligned(77, 44)).then(geo.shift_axis(4)),
        geo.flip_axis(45).then(aligned(45, 30)).then(geo.shift_axis(-3)),
    ),
    "upscaled-model": Geometry(20, 24, 64, 80, aligned(24, 80), aligned(20, 64)),
    "one-pixel-source": Geometry(1, 1, 16, 16, aligned(1, 16), aligned(1, 16)),
}  # fmt: skip

#: map sizes over the model input: its own, coarser, finer, one pixel, one row
MAPS = [None, (0.5, 0.25), (2.0, 1.5), (1, 1), (1, 9)]


def map_shape(g: Geometry, size: tuple[float, float] | tuple[int, int] | None) -> tuple[int, int]:
    if size is None:
        return g.model_rows, g.model_columns
    if isinstance(size[0], int):
        return int(size[0]), int(size[1])
    return max(1, round(g.model_rows * size[0])), max(1, round(g.model_columns * size[1]))


def probabilities(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Float32 values with negatives, +0, -0, repeats and a wide range of magnitudes."""
    v = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(np.float32)
    v[rng.random(shape) < 0.15] = -0.0
    v[rng.random(shape) < 0.15] = 0.0
    v[rng.random(shape) < 0.1] = 1.0
    return v


@pytest.fixture(params=["default", "one-row", "odd"])
def blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocks of rows and chunks of images as set, one row or image at a time, and odd
    sizes that leave a short last block."""
    if request.param == "one-row":
        monkeypatch.setattr(geo, "_BLOCK", 1)
        monkeypatch.setattr(geo, "_CHUNK", 1)
    elif request.param == "odd":
        monkeypatch.setattr(geo, "_BLOCK", 7 * 41)
        monkeypatch.setattr(geo, "_CHUNK", 3 * 41 * 37)


@pytest.mark.usefixtures("blocks")
@pytest.mark.parametrize("name", GEOMETRIES)
def test_mask_bilinear_gives_the_same_bits(name: str) -> None:
    g = GEOMETRIES[name]
    rng = np.random.default_rng(sorted(GEOMETRIES).index(name))
    for size in MAPS:  # one geometry, several map sizes: the taps are made per map size
        v = probabilities(rng, map_shape(g, size))
        for values in (v, v.astype(np.float64), rng.random(v.shape, dtype=np.float32)):
            assert_same_bits(g.mask(values, "bilinear"), ref_mask(g, values, "bilinear"))
        assert_same_bits(g.mask(v[:, ::-1], "bilinear"), ref_mask(g, v[:, ::-1], "bilinear"))


@pytest.mark.parametrize("name", GEOMETRIES)
def test_mask_nearest_gives_the_same_values(name: str) -> None:
    g = GEOMETRIES[name]
    rng = np.random.default_rng(100 + sorted(GEOMETRIES).index(name))
    for size in MAPS:
        shape = map_shape(g, size)
        labels = rng.integers(0, 5, shape)
        for values in (labels, labels.astype(np.uint8), labels == 3, probabilities(rng, shape)):
            got = g.mask(values, "nearest")
            assert_same_bits(got, ref_mask(g, values, "nearest"))
            assert not np.shares_memory(got, values)


def test_mask_propagates_infinities_and_nan_as_before() -> None:
    """inf * 0 outside the model input is NaN, as before; NaN stays NaN."""
    g = GEOMETRIES["flip-crop-pad"]
    v = probabilities(np.random.default_rng(7), (36, 36))
    v[0, 0], v[5, 9], v[35, 35], v[20, 0] = np.inf, -np.inf, np.nan, np.inf
    with np.errstate(invalid="ignore"):
        got, want = g.mask(v, "bilinear"), ref_mask(g, v, "bilinear")
    assert np.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert_same_bits(np.where(np.isnan(got), 0, got), np.where(np.isnan(want), 0, want))


RESIZES = [((40, 56), (20, 28)), ((33, 17), (64, 50)), ((1, 9), (5, 1)), ((12, 12), (12, 30))]


@pytest.mark.usefixtures("blocks")
@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic", "area"])
@pytest.mark.parametrize("corners", [True, False])
def test_resample_gives_the_same_bits(method: geo.Interpolation, corners: bool) -> None:
    rng = np.random.default_rng(3)
    for (h, w), (rows, cols) in RESIZES:
        hu = rng.integers(-1024, 3000, (5, h, w)).astype(np.int16)
        stacks = [
            hu,
            hu.astype(np.uint16),
            probabilities(rng, (5, h, w)),
            rng.standard_normal((2, 3, h, w)),  # float64, [S, C, H, W]
            probabilities(rng, (h, w)),  # one image
            np.zeros((0, h, w), dtype=np.int16),  # no image
        ]
        for stack in stacks:
            got = geo.resample(stack, rows, cols, method=method, align_corners=corners)
            assert_same_bits(got, ref_resample(stack, rows, cols, method, corners))


def test_the_comparison_sees_one_ulp_and_the_sign_of_zero() -> None:
    """The checks above fail on the smallest difference a float32 result can have."""
    want = ref_mask(
        GEOMETRIES["crop"], probabilities(np.random.default_rng(9), (32, 32)), "bilinear"
    )
    assert (want == 0).any()
    one_ulp = want.copy()
    one_ulp[3, 4] = np.nextafter(one_ulp[3, 4], np.float32(np.inf))
    minus_zero = want.copy()
    minus_zero[want == 0] = -0.0
    for changed in (one_ulp, minus_zero):
        with pytest.raises(AssertionError, match="values differ"):
            assert_same_bits(changed, want)


def test_cached_taps_cannot_be_changed_by_a_caller() -> None:
    g = GEOMETRIES["crop"]
    for taps in (
        geo._bilinear_taps(g.x, g.columns, 32, g.model_columns),
        geo._nearest_taps(g.x, g.columns, 32, g.model_columns)[:1],
    ):
        for a in taps:
            with pytest.raises(ValueError, match="read-only"):
                a[0] = 1
    index, outside = geo._nearest_taps(g.x, g.columns, 32, g.model_columns)
    removed = [c for c in range(64) if not 0 <= g.x.inverse(c + 0.5) < g.model_columns]
    assert removed == [*range(6), *range(58, 64)]  # what the crop removed, on each side
    assert outside == (slice(0, 6), slice(58, 64))
    assert index.shape == (64,)


def peak_bytes(run: Callable[[], np.ndarray]) -> tuple[int, int]:
    run()  # the taps made and cached before measuring
    tracemalloc.start()
    try:
        out = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, out.nbytes


def test_mask_holds_no_temporaries_the_size_of_its_result() -> None:
    """Mapping a bone model's 256 x 256 map onto a 512 x 512 image holds the result, the
    map resampled along its rows (half the result) and a block of 64 rows: no [h, columns,
    2] product arrays, whose allocation and first touch cost more than the arithmetic."""
    g = GEOMETRIES["bone-512-to-256"]
    prob = np.random.default_rng(5).random((256, 256), dtype=np.float32)
    peak, result = peak_bytes(lambda: g.mask(prob, "bilinear"))
    assert peak <= result * 1.5 + 64 * 512 * 4 + 65536, (peak, result)  # before: 4.6 x
    labels = (prob > 0.5).astype(np.int64)
    peak, result = peak_bytes(lambda: g.mask(labels, "nearest"))
    assert peak <= result * 1.5 + 65536, (peak, result)


def test_resample_holds_temporaries_of_one_chunk() -> None:
    """Resizing a series holds its result and the buffers of one chunk of images, not
    float32 copies of the whole series."""
    stack = np.random.default_rng(6).integers(-1024, 3000, (24, 256, 256)).astype(np.int16)
    peak, result = peak_bytes(lambda: geo.resample(stack, 128, 128))
    chunk = geo._CHUNK * 4  # float32 bytes of the source in one chunk
    assert peak <= result + 3 * chunk + 65536, (peak, result, chunk)
