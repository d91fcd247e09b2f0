"""Where a model-input pixel lies on its source image: one axis-aligned map per image.

Every coordinate here is continuous, with its origin at the top left corner of the top
left pixel: pixel (column c, row r) covers [c, c+1) x [r, r+1) and its centre is
(c + 0.5, r + 0.5). That is DICOM's convention for GSPS PIXEL annotations and SR 2-D
coordinates, so a box mapped here is written as it is.

The preprocessing steps that move pixels (orient's flips, resize, letterbox,
crop_or_pad, resample_spacing) each contribute an affine map per axis from their
output to their input; ``Geometry`` composes them, so for one image

    x_source = x.scale * x_model + x.offset      (columns)
    y_source = y.scale * y_model + y.offset      (rows)

with a negative scale for a flip. Boxes and masks both go through this one map:
``Geometry.box`` for a box's corners, ``Geometry.mask`` for a map sampled at every
source pixel centre. Resampling (``resample``) uses the same per-axis maps, so what
the model sees and where its answers land cannot disagree.

Resize formulas, for an axis of n_in pixels resized to n_out (output -> input):

- align_corners false (half-pixel: PyTorch, OpenCV, PIL): x_in = x_out * n_in / n_out;
- align_corners true: pixel centres of the first and last pixels coincide:
  x_in - 0.5 = (x_out - 0.5) * (n_in - 1) / (n_out - 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

Interpolation = Literal["nearest", "bilinear", "bicubic", "area"]
_CUBIC_A = -0.75  # Keys' cubic convolution with a = -0.75 (PyTorch, OpenCV)


@dataclass(frozen=True, slots=True)
class Axis:
    """x_in = scale * x_out + offset: from a step's output to its input, on one axis."""

    scale: float = 1.0
    offset: float = 0.0

    def __call__(self, v: float) -> float:
        return self.scale * v + self.offset

    def inverse(self, v: np.ndarray | float) -> np.ndarray | float:
        return (v - self.offset) / self.scale

    def then(self, inner: Axis) -> Axis:
        """self after inner: x -> self(inner(x))."""
        return Axis(self.scale * inner.scale, self.scale * inner.offset + self.offset)


IDENTITY = Axis()


def resize_axis(n_in: int, n_out: int, align_corners: bool) -> Axis:
    """The map from a resized axis (n_out pixels) back to the original (n_in)."""
    if align_corners and n_in > 1 and n_out > 1:
        s = (n_in - 1) / (n_out - 1)
        return Axis(s, 0.5 * (1.0 - s))
    return Axis(n_in / n_out, 0.0)


def flip_axis(n: int) -> Axis:
    return Axis(-1.0, float(n))


def shift_axis(start: int) -> Axis:
    """The map of a crop starting at input pixel ``start`` (negative: padding before)."""
    return Axis(1.0, float(start))


# --- resampling ---------------------------------------------------------------------
def _taps(axis: Axis, n_in: int, n_out: int, method: Interpolation) -> tuple[np.ndarray, ...]:
    """(indices [n_out, T], weights [n_out, T]) of each output pixel on an input axis.

    nearest: the input pixel holding the output pixel's centre; bilinear: the two
    nearest centres (clamped at the edges); bicubic: Keys' kernel (a = -0.75) on four
    (edges replicated); area: the mean of the input interval the output pixel covers."""
    o = np.arange(n_out, dtype=np.float64)
    if method == "area":
        lo = axis(0.0) + axis.scale * o  # input interval [lo, hi) of each output pixel
        hi = lo + axis.scale
        first = np.floor(lo).astype(np.intp)
        width = int(np.ceil(abs(axis.scale))) + 1
        idx = first[:, None] + np.arange(width)[None, :]
        overlap = np.clip(
            np.minimum(hi[:, None], idx + 1.0) - np.maximum(lo[:, None], idx.astype(np.float64)),
            0.0,
            None,
        )
        weights = overlap / np.maximum(overlap.sum(axis=1, keepdims=True), 1e-12)
        return np.clip(idx, 0, n_in - 1), weights.astype(np.float32)
    u = axis.scale * (o + 0.5) + axis.offset - 0.5  # output centre in input index space
    if method == "nearest":
        idx = np.clip(np.floor(u + 0.5), 0, n_in - 1).astype(np.intp)[:, None]
        return idx, np.ones_like(idx, dtype=np.float32)
    if method == "bilinear":
        u = np.clip(u, 0.0, n_in - 1.0)
        lo = np.floor(u).astype(np.intp)
        hi = np.minimum(lo + 1, n_in - 1)
        w = u - lo
        return np.stack([lo, hi], axis=1), np.stack([1 - w, w], axis=1).astype(np.float32)
    base = np.floor(u).astype(np.intp)
    t = u - base
    offsets = np.arange(-1, 3)
    d = np.abs(t[:, None] - offsets[None, :])
    a = _CUBIC_A
    w = np.where(
        d <= 1,
        ((a + 2) * d - (a + 3)) * d * d + 1,
        np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0),
    )
    idx = np.clip(base[:, None] + offsets[None, :], 0, n_in - 1)
    return idx, w.astype(np.float32)


#: float32 elements of the source resampled at a time (one 512 x 512 image): a chunk's
#: buffers are made once and stay in the processor's cache, never the size of a series
_CHUNK = 1 << 18
#: float32 elements of the one temporary of ``Geometry.mask`` (64 rows of 512): fresh
#: image-sized temporaries per slice cost more in page faults than their arithmetic
_BLOCK = 1 << 15


def _per_tap(taps: tuple[np.ndarray, ...], axis: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``_taps`` as (indices, weights) of each tap, contiguous, the weights shaped to
    multiply along ``axis`` of a [N, H, W] stack."""
    idx, w = taps
    shape = [1, 1, 1]
    shape[axis] = idx.shape[0]
    return [
        (np.ascontiguousarray(idx[:, t]), np.ascontiguousarray(w[:, t]).reshape(shape))
        for t in range(idx.shape[1])
    ]


def _apply(
    stack: np.ndarray,
    taps: list[tuple[np.ndarray, np.ndarray]],
    axis: int,
    out: np.ndarray,
    part: np.ndarray,
) -> None:
    """``out`` = ``stack`` resampled along ``axis``: per output pixel 0, plus each tap's
    product in turn, in float32; ``part``: a temporary of ``out``'s shape."""
    (index, weight), *rest = taps
    np.take(stack, index, axis=axis, out=out, mode="clip")  # indices are in range
    out *= weight
    out += np.float32(0.0)  # 0 + the first product, -0 included
    for index, weight in rest:
        np.take(stack, index, axis=axis, out=part, mode="clip")
        out += np.multiply(part, weight, out=part)


def resample(
    stack: np.ndarray,
    rows: int,
    columns: int,
    *,
    method: Interpolation = "bilinear",
    align_corners: bool = True,
) -> np.ndarray:
    """Resize the last two axes of ``stack`` ([..., H, W]) to [..., rows, columns]."""
    h, w = stack.shape[-2:]
    if (h, w) == (rows, columns):
        return stack.astype(np.float32, copy=False)
    corners = align_corners and method != "area"
    ay, ax = resize_axis(h, rows, corners), resize_axis(w, columns, corners)
    ty, tx = _per_tap(_taps(ay, h, rows, method), 1), _per_tap(_taps(ax, w, columns, method), 2)
    images = stack.reshape(-1, h, w)  # a view of a contiguous stack
    out = np.empty((images.shape[0], rows, columns), dtype=np.float32)
    step = max(1, min(_CHUNK // max(1, h * w), images.shape[0]))
    # a chunk's buffers, made once: resized along the rows, temporaries, in float32
    mid = np.empty((step, rows, w), dtype=np.float32)
    part_mid, part_out = np.empty_like(mid), np.empty((step, rows, columns), dtype=np.float32)
    src = images if images.dtype == np.float32 else np.empty((step, h, w), dtype=np.float32)
    for i in range(0, images.shape[0], step):
        n = min(step, images.shape[0] - i)
        chunk = images[i : i + n]
        if src is not images:
            np.copyto(src[:n], chunk, casting="unsafe")  # astype's conversion
            chunk = src[:n]
        _apply(chunk, ty, 1, mid[:n], part_mid[:n])  # along the rows, then the columns
        _apply(mid[:n], tx, 2, out[i : i + n], part_out[:n])
    return out.reshape(*stack.shape[:-2], rows, columns)


def place(
    stack: np.ndarray, rows: int, columns: int, *, top: int, left: int, value: float
) -> np.ndarray:
    """[..., rows, columns] whose pixel (r, c) is stack's (r + top, c + left), else value."""
    out = np.full((*stack.shape[:-2], rows, columns), value, dtype=np.float32)
    h, w = stack.shape[-2:]
    r0, c0 = max(0, -top), max(0, -left)
    r1, c1 = min(rows, h - top), min(columns, w - left)
    if r1 > r0 and c1 > c0:
        out[..., r0:r1, c0:c1] = stack[..., r0 + top : r1 + top, c0 + left : c1 + left]
    return out


# --- model -> source ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Geometry:
    """How one image of the model input lies on its source image."""

    rows: int  # source image size
    columns: int
    model_rows: int  # model input size (H, W of the input tensor)
    model_columns: int
    x: Axis = IDENTITY  # model input column coordinate -> source column coordinate
    y: Axis = IDENTITY  # model input row coordinate -> source row coordinate

    @property
    def flip_rows(self) -> bool:
        return self.y.scale < 0

    @property
    def flip_columns(self) -> bool:
        return self.x.scale < 0

    def point(self, x: float, y: float) -> tuple[float, float]:
        """(x, y) of the model input -> (column, row) coordinates on the source."""
        return self.x(x), self.y(y)

    def box(
        self, x1: float, y1: float, x2: float, y2: float, *, grid: tuple[int, int] | None = None
    ) -> tuple[float, float, float, float]:
        """A box (x1, y1, x2, y2) of the model input -> the same box on the source image.

        ``grid`` (rows, columns): the box is on an output grid of that size covering the
        model input (a coarser or finer map). The result is ordered (x1 <= x2) and
        clipped to the source image."""
        if grid is not None:
            sy, sx = self.model_rows / grid[0], self.model_columns / grid[1]
            x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
        (a, b), (c, d) = self.point(x1, y1), self.point(x2, y2)
        xs = sorted((min(max(a, 0.0), self.columns), min(max(c, 0.0), self.columns)))
        ys = sorted((min(max(b, 0.0), self.rows), min(max(d, 0.0), self.rows)))
        return xs[0], ys[0], xs[1], ys[1]

    def mask(self, values: np.ndarray, method: Literal["nearest", "bilinear"]) -> np.ndarray:
        """A map over the model input ([h, w], any resolution covering it) sampled at every
        source pixel centre: [rows, columns]. ``nearest`` keeps values (label maps);
        ``bilinear`` interpolates (probabilities). Source pixels the model never saw
        (cropped away) get 0."""
        h, w = values.shape
        if method == "nearest":
            ry, outside_y = _nearest_taps(self.y, self.rows, h, self.model_rows)
            rx, outside_x = _nearest_taps(self.x, self.columns, w, self.model_columns)
            out = values.take(rx, axis=1).take(ry, axis=0)
            for run in outside_y:  # the source rows, then columns, the model never saw
                out[run] = 0
            for run in outside_x:
                out[:, run] = 0
            return out
        ty = _bilinear_taps(self.y, self.rows, h, self.model_rows)
        tx = _bilinear_taps(self.x, self.columns, w, self.model_columns)
        v = values.astype(np.float32, copy=False)
        cols = np.empty((h, self.columns), dtype=np.float32)
        out = np.empty((self.rows, self.columns), dtype=np.float32)
        step = max(1, _BLOCK // max(1, self.columns))
        part = np.empty((step, self.columns), dtype=np.float32)
        for r in range(0, h, step):  # along each row of the map, then down each column
            _lerp(v[r : r + step], tx, slice(None), axis=1, out=cols[r : r + step], part=part)
        for r in range(0, self.rows, step):
            _lerp(cols, ty, slice(r, r + step), axis=0, out=out[r : r + step], part=part)
        return out


def _lerp(
    v: np.ndarray,
    taps: tuple[np.ndarray, ...],
    at: slice,
    *,
    axis: int,
    out: np.ndarray,
    part: np.ndarray,
) -> None:
    """out = (0 + v[lo] * w_lo) + v[hi] * w_hi along ``axis`` for the source pixels ``at``
    (float32, in that order: what ``.sum`` of the two products makes, -0 + -0 included),
    with ``part`` as the temporary."""
    lo, hi, w_lo, w_hi = (a[at] for a in taps)
    if axis == 0:
        w_lo, w_hi = w_lo[:, None], w_hi[:, None]
    p = part[: out.shape[0]]
    np.take(v, lo, axis=axis, out=out, mode="clip")  # indices are in range
    out *= w_lo
    out += np.float32(0.0)
    np.take(v, hi, axis=axis, out=p, mode="clip")
    out += np.multiply(p, w_hi, out=p)


def _back_taps(
    axis: Axis, n_src: int, n_map: int, n_model: int, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per source pixel on one axis: the map pixels to sample and their weights."""
    centre = np.arange(n_src, dtype=np.float64) + 0.5
    p = np.asarray(axis.inverse(centre)) * (n_map / n_model)  # in map pixel coordinates
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


@lru_cache(maxsize=64)
def _nearest_taps(
    axis: Axis, n_src: int, n_map: int, n_model: int
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """``_back_taps`` of nearest, made once per axis map and map size (every image of a
    series shares them): the map pixel of each source pixel (read-only), and the runs of
    source pixels outside the model input."""
    idx, w = _back_taps(axis, n_src, n_map, n_model, "nearest")
    index = np.ascontiguousarray(idx[:, 0])
    index.flags.writeable = False
    outside = np.concatenate([[False], w[:, 0] == 0, [False]])
    edges = np.flatnonzero(outside[1:] != outside[:-1])  # where each run starts, then stops
    runs = zip(edges[::2], edges[1::2], strict=True)
    return index, tuple(slice(int(start), int(stop)) for start, stop in runs)


@lru_cache(maxsize=64)
def _bilinear_taps(
    axis: Axis, n_src: int, n_map: int, n_model: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``_back_taps`` of bilinear per tap, made once per axis map and map size, read-only:
    the low and high map pixels of each source pixel, their weights."""
    idx, w = _back_taps(axis, n_src, n_map, n_model, "bilinear")
    lo, hi, w_lo, w_hi = (np.ascontiguousarray(a) for a in (idx[:, 0], idx[:, 1], w[:, 0], w[:, 1]))
    for a in (lo, hi, w_lo, w_hi):
        a.flags.writeable = False
    return lo, hi, w_lo, w_hi
