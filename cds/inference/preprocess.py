"""Preprocessing: the closed set of steps a manifest may name, vectorised with numpy.

Each step works on the whole run at once: [S, rows, cols] float32 (S images or the
slices of a volume), [S, C, rows, cols] once the channels step has run. The run is
converted from the stored dtype (``ImageStack``: integers as decoded) to float32 once,
into an array of its own, which the value steps (modality_lut, window, scale) then
change in place: a batch costs one float32 copy, and no step adds another. Steps that
move pixels record their map on each image's ``Geometry`` (``cds.inference.geometry``),
so findings land back on the source pixels they came from.

| step | what it does |
|---|---|
| (first) | MONOCHROME1: x' = max + min - x per image, unless input.invert: never |
| modality_lut | x * RescaleSlope + RescaleIntercept (CT: Hounsfield units) |
| window | clip((x - (center - width/2)) / width, 0, 1) |
| percentile_clip | clip to percentiles of the image (or series), optionally onto [0, 1] |
| resize | nearest, bilinear, bicubic or area; aligned corners or half-pixel; letterbox |
| resample_spacing | to a pixel spacing in mm (needs PixelSpacing) |
| crop_or_pad | centred crop or pad to [rows, cols] |
| orient | flip rows/cols to the LPS display frame |
| normalize | minmax or zscore per image (or series), or fixed (x - mean) / std (per channel) |
| scale | x * factor |
| channels | 1 or 3 (repeated) channels; input.tensor.layout places them |
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from cds.errors import ModelError
from cds.inference import geometry as geo
from cds.inference import manifest as mf
from cds.inference.geometry import Axis, Geometry
from cds.inference.images import ImageStack, subset

__all__ = ["Geometry", "in_batches", "preprocess", "resize_bilinear", "sort_slices"]


def resize_bilinear(stack: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Resize [S, H, W] to [S, rows, cols], bilinear with aligned corners."""
    return geo.resample(stack, rows, cols, method="bilinear", align_corners=True)


def sort_slices(stack: ImageStack, descending: bool = False) -> None:
    """Order a volume's slices along their normal (by ImagePositionPatient), increasing
    along the patient axis the normal is nearest to; ``stack.order`` keeps the old index.

    Raises ModelError when a slice has no position or orientation, or the slices are
    not parallel: a volume cannot be built from them."""
    metas = stack.meta
    if not all(m.orientation is not None and m.position is not None for m in metas):
        raise ModelError(
            "input.kind volume: every slice needs (0020,0032) ImagePositionPatient and "
            "(0020,0037) ImageOrientationPatient to be ordered"
        )
    o = np.array([m.orientation for m in metas], dtype=np.float64)
    if np.abs(o - o[0]).max() > 1e-3:
        raise ModelError(
            "input.kind volume: the slices are not parallel ((0020,0037) "
            "ImageOrientationPatient differs); a volume needs one orientation"
        )
    p = np.array([m.position for m in metas], dtype=np.float64)
    normal = np.cross(o[0, :3], o[0, 3:])
    if normal[int(np.argmax(np.abs(normal)))] < 0:
        normal = -normal  # increasing along the dominant patient axis
    order = np.argsort(p @ normal, kind="stable")
    if descending:
        order = order[::-1]
    if np.any(order != np.arange(len(order))):  # already in order: no copy of the series
        stack.pixels = stack.pixels[order]
    stack.meta = [metas[i] for i in order]
    stack.order = [stack.order[i] for i in order]


def slice_positions(stack: ImageStack) -> np.ndarray:
    """Positions (mm) of the stack's slices along their normal, in stack order."""
    o = np.array(stack.meta[0].orientation, dtype=np.float64)
    normal = np.cross(o[:3], o[3:])
    return np.array([np.dot(m.position, normal) for m in stack.meta])  # type: ignore[arg-type]


def _invert_monochrome1(stack: ImageStack, px: np.ndarray) -> np.ndarray:
    mono1 = np.array([m.photometric == "MONOCHROME1" for m in stack.meta])
    if mono1.any():
        sel = px[mono1]
        lo = sel.min(axis=(1, 2), keepdims=True)
        hi = sel.max(axis=(1, 2), keepdims=True)
        px[mono1] = hi + lo - sel  # px is the run's own copy (preprocess)
    return px


def _modality_lut(stack: ImageStack, px: np.ndarray) -> np.ndarray:
    if stack.lut_applied:
        return px
    slopes = np.array([m.slope for m in stack.meta], dtype=np.float32)
    intercepts = np.array([m.intercept for m in stack.meta], dtype=np.float32)
    if np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0]):
        px *= slopes[0]
        px += intercepts[0]
    else:
        px *= slopes[:, None, None]
        px += intercepts[:, None, None]
    return px


def _axes(px: np.ndarray, per: str) -> tuple[int, ...]:
    """Axes to reduce over: each image (all but the first) or the whole series."""
    return tuple(range(px.ndim)) if per == "series" else tuple(range(1, px.ndim))


def _normalize(px: np.ndarray, step: mf.Normalize, channels: bool) -> np.ndarray:
    out: np.ndarray
    if step.method == "fixed":
        mean, std = np.asarray(step.mean, np.float32), np.asarray(step.std, np.float32)
        if channels and mean.ndim:
            mean = mean.reshape(1, -1, 1, 1)
        if channels and std.ndim:
            std = std.reshape(1, -1, 1, 1)
        out = (px - mean) / std
        return out
    axes = _axes(px, step.per)
    if step.method == "minmax":
        lo = px.min(axis=axes, keepdims=True)
        hi = px.max(axis=axes, keepdims=True)
        out = (px - lo) / np.maximum(hi - lo, np.float32(1e-6))
    else:
        mean = px.mean(axis=axes, keepdims=True)
        std = px.std(axis=axes, keepdims=True)
        out = (px - mean) / np.maximum(std, np.float32(1e-6))
    return out


def _percentile_clip(px: np.ndarray, step: mf.PercentileClip) -> np.ndarray:
    axes = _axes(px, step.per)
    lo, hi = np.percentile(px, [step.low, step.high], axis=axes, keepdims=True)
    out: np.ndarray = np.clip(px, lo, hi)
    if step.rescale:
        out = (out - lo) / np.maximum(hi - lo, 1e-6)
    return out.astype(np.float32)


def _common_spacing(stack: ImageStack) -> tuple[float, float]:
    spacings = {m.pixel_spacing for m in stack.meta}
    if None in spacings or len(spacings) != 1:
        raise ModelError("resample_spacing: images need one common (0028,0030) PixelSpacing")
    sp = next(iter(spacings))
    assert sp is not None
    return sp


class _Run:
    """The pixels of one run and, per image, the map from the current grid to the source."""

    def __init__(self, stack: ImageStack, px: np.ndarray) -> None:
        self.px = px
        h, w = px.shape[-2:]
        self.x = [Axis() for _ in stack.meta]
        self.y = [Axis() for _ in stack.meta]
        for i, (flip_rows, flip_cols) in enumerate(stack.flips or []):
            if flip_cols:  # already flipped by an earlier orient of the whole series
                self.x[i] = geo.flip_axis(w)
            if flip_rows:
                self.y[i] = geo.flip_axis(h)

    def moved(self, x: Axis, y: Axis) -> None:
        """A step whose output pixel (x, y) lies at (x(x), y(y)) of its input."""
        self.x = [a.then(x) for a in self.x]
        self.y = [a.then(y) for a in self.y]

    def resize(self, rows: int, cols: int, method: geo.Interpolation, corners: bool) -> None:
        h, w = self.px.shape[-2:]
        self.px = geo.resample(self.px, rows, cols, method=method, align_corners=corners)
        self.moved(geo.resize_axis(w, cols, corners), geo.resize_axis(h, rows, corners))

    def place(self, rows: int, cols: int, top: int, left: int, value: float) -> None:
        self.px = geo.place(self.px, rows, cols, top=top, left=left, value=value)
        self.moved(geo.shift_axis(left), geo.shift_axis(top))

    def letterbox(self, step: mf.Resize) -> None:
        (rows, cols), (h, w) = step.size, self.px.shape[-2:]
        k = min(rows / h, cols / w)
        inner = (max(1, min(rows, round(h * k))), max(1, min(cols, round(w * k))))
        self.resize(*inner, step.interpolation, step.corners)
        self.place(rows, cols, -((rows - inner[0]) // 2), -((cols - inner[1]) // 2), step.pad_value)

    def orient(self, stack: ImageStack) -> None:
        h, w = self.px.shape[-2:]
        desired = np.array([1.0, 1.0, -1.0])  # LPS display: +x, +y, superior at the top
        for i, m in enumerate(stack.meta):
            if m.orientation is None:
                continue
            row_dir, col_dir = np.array(m.orientation[:3]), np.array(m.orientation[3:])
            a, b = int(np.argmax(np.abs(row_dir))), int(np.argmax(np.abs(col_dir)))
            if np.sign(row_dir[a]) != desired[a]:
                self.px[i] = self.px[i][..., :, ::-1]
                self.x[i] = self.x[i].then(geo.flip_axis(w))
            if np.sign(col_dir[b]) != desired[b]:
                self.px[i] = self.px[i][..., ::-1, :]
                self.y[i] = self.y[i].then(geo.flip_axis(h))


def _centred(n_in: int, n_out: int) -> int:
    """First input pixel of a centred crop (negative: padding before)."""
    return (n_in - n_out) // 2 if n_in >= n_out else -((n_out - n_in) // 2)


def _resample_spacing(run: _Run, stack: ImageStack, step: mf.ResampleSpacing) -> None:
    row_sp, col_sp = _common_spacing(stack)
    h, w = run.px.shape[-2:]
    rows = max(1, round(h * row_sp / step.spacing_mm[0]))
    cols = max(1, round(w * col_sp / step.spacing_mm[1]))
    run.resize(rows, cols, step.interpolation, step.corners)


def _geometric(run: _Run, stack: ImageStack, step: mf.PreprocessStep) -> bool:
    """Carry out a step that moves pixels; False when ``step`` is not one."""
    if isinstance(step, mf.Resize) and step.keep_aspect:
        run.letterbox(step)
    elif isinstance(step, mf.Resize):
        run.resize(*step.size, step.interpolation, step.corners)
    elif isinstance(step, mf.ResampleSpacing):
        _resample_spacing(run, stack, step)
    elif isinstance(step, mf.CropOrPad):
        h, w = run.px.shape[-2:]
        rows, cols = step.size
        run.place(rows, cols, _centred(h, rows), _centred(w, cols), step.value)
    elif isinstance(step, mf.Orient):
        run.px = np.array(run.px, copy=True)
        run.orient(stack)
    else:
        return False
    return True


def _intensity(
    px: np.ndarray, stack: ImageStack, step: mf.PreprocessStep, channels: bool
) -> np.ndarray:
    """Carry out a step that changes values only; ``px`` is the run's own float32 array,
    which the affine steps change in place (same operations, same float32 results)."""
    if isinstance(step, mf.ModalityLut):
        return _modality_lut(stack, px)
    if isinstance(step, mf.Window):
        px -= np.float32(step.center - step.width / 2)
        px /= np.float32(step.width)
        return np.clip(px, 0, 1, out=px)
    if isinstance(step, mf.PercentileClip):
        return _percentile_clip(px, step)
    if isinstance(step, mf.Normalize):
        return _normalize(px, step, channels)
    if isinstance(step, mf.Scale):
        px *= np.float32(step.factor)
        return px
    raise ValueError(f"unknown preprocessing step {step!r}")


def preprocess(
    stack: ImageStack, steps: Sequence[mf.PreprocessStep], spec: mf.InputSpec
) -> tuple[np.ndarray, list[Geometry]]:
    """Apply the steps to the stack; return the model tensor and each image's geometry."""
    px = np.array(stack.pixels, dtype=np.float32)  # the run's own: steps work in place
    if spec.invert == "auto":
        px = _invert_monochrome1(stack, px)
    run = _Run(stack, px)
    channels = False
    for step in steps:
        if isinstance(step, mf.Channels):
            run.px = np.repeat(run.px[:, None], step.count, axis=1)
            channels = True
        elif not _geometric(run, stack, step):
            run.px = _intensity(run.px, stack, step, channels)
    px4 = run.px if channels else run.px[:, None]  # [S, C, H, W]
    tensor = _arrange(px4, spec.tensor.layout)
    _, _, mh, mw = px4.shape
    _check_size(spec, mh, mw)
    geometry = [
        Geometry(m.rows, m.columns, mh, mw, x, y)
        for m, x, y in zip(stack.meta, run.x, run.y, strict=True)
    ]
    return _cast(tensor, spec.tensor.dtype), geometry


#: a model's input, batch by batch (``in_batches``)
Batches = list[tuple[np.ndarray, list[Geometry]]]
#: the batches made ahead of a job for each model (by its manifest's digest), and the
#: seconds that took
Prepared = dict[str, tuple[Batches, float]]


def in_batches(
    stack: ImageStack, spec: mf.InputSpec
) -> Iterator[tuple[np.ndarray, list[Geometry]]]:
    """A model of slices' input, ``spec.batch_size`` images at a time, in order: the
    runner's batches, and the same ones made during the quiet time (cds.inference.preread)."""
    steps = list(spec.preprocessing)
    for i in range(0, len(stack), spec.batch_size):
        yield preprocess(subset(stack, slice(i, i + spec.batch_size)), steps, spec)


def _arrange(px: np.ndarray, layout: str) -> np.ndarray:
    """[S, C, H, W] in the input tensor's layout."""
    if layout == "NCHW":
        return px
    if layout == "NHWC":
        return px.transpose(0, 2, 3, 1)
    if layout == "NCDHW":
        return px.transpose(1, 0, 2, 3)[None]
    return px.transpose(0, 2, 3, 1)[None]  # NDHWC


def _check_size(spec: mf.InputSpec, rows: int, cols: int) -> None:
    layout, shape = spec.tensor.layout, spec.tensor.shape
    want = [shape[layout.index(ch)] for ch in "HW"]
    fixed = [w if isinstance(w, int) and w >= 0 else None for w in want]
    if any(f is not None and f != got for f, got in zip(fixed, (rows, cols), strict=True)):
        raise ModelError(
            f"input.tensor.shape: the model takes H x W = {want[0]} x {want[1]}, the "
            f"preprocessing gave {rows} x {cols}; add a resize step (input.preprocessing)"
        )


def _cast(tensor: np.ndarray, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        tensor = np.clip(np.rint(tensor), info.min, info.max)
    return np.ascontiguousarray(tensor, dtype=dt)
