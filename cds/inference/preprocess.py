"""Preprocessing: the closed set of steps a manifest may name, vectorised with numpy.

Each step works on a whole ImageStack ([S, rows, cols] float32) at once.
Geometry-changing steps (orient, resize, resample_spacing) are recorded on the
stack so results can be mapped back onto the source images
(``to_source_mask``, ``to_source_box``).

| step | what it does |
|---|---|
| modality_lut | x * RescaleSlope + RescaleIntercept (CT: Hounsfield units) |
| window | clip((x - (center - width/2)) / width, 0, 1) |
| resize | bilinear (align corners) to [rows, cols] |
| resample_spacing | bilinear to a pixel spacing in mm (needs PixelSpacing) |
| orient | sort along the slice normal; flip rows/cols to the LPS display frame |
| normalize | minmax or zscore per image, or fixed (x - mean) / std |
| scale | x * factor |
| channels | NCHW or NHWC, 1 or 3 (repeated) channels: the last step |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cds.errors import ModelError
from cds.inference import manifest as mf
from cds.inference.images import ImageStack


@dataclass(frozen=True, slots=True)
class Geometry:
    """How model-space pixels relate to one source image."""

    rows: int  # source image size
    columns: int
    model_rows: int  # size after resize/resample
    model_columns: int
    flip_rows: bool
    flip_columns: bool


def _bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if n_out == 1 or n_in == 1:
        pos = np.zeros(n_out, dtype=np.float64)
    else:
        pos = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (pos - lo).astype(np.float32)
    return lo, hi, w


def resize_bilinear(stack: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Resize [S, H, W] to [S, rows, cols], bilinear with aligned corners."""
    _, h, w = stack.shape
    if (h, w) == (rows, cols):
        return stack
    r_lo, r_hi, r_w = _bilinear_weights(h, rows)
    c_lo, c_hi, c_w = _bilinear_weights(w, cols)
    top = stack[:, r_lo, :]
    bottom = stack[:, r_hi, :]
    vert = top + (bottom - top) * r_w[None, :, None]
    left = vert[:, :, c_lo]
    right = vert[:, :, c_hi]
    out: np.ndarray = (left + (right - left) * c_w[None, None, :]).astype(np.float32, copy=False)
    return out


def _modality_lut(stack: ImageStack) -> None:
    if stack.lut_applied:
        return
    slopes = np.array([m.slope for m in stack.meta], dtype=np.float32)
    intercepts = np.array([m.intercept for m in stack.meta], dtype=np.float32)
    if np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0]):
        stack.pixels = stack.pixels * slopes[0] + intercepts[0]
    else:
        stack.pixels = stack.pixels * slopes[:, None, None] + intercepts[:, None, None]
    stack.lut_applied = True


def _invert_monochrome1(stack: ImageStack) -> None:
    mono1 = np.array([m.photometric == "MONOCHROME1" for m in stack.meta])
    if mono1.any():
        px = stack.pixels[mono1]
        lo = px.min(axis=(1, 2), keepdims=True)
        hi = px.max(axis=(1, 2), keepdims=True)
        stack.pixels[mono1] = hi + lo - px


def _orient(stack: ImageStack) -> None:
    metas = stack.meta
    if all(m.orientation is not None and m.position is not None for m in metas):
        o = np.array([m.orientation for m in metas], dtype=np.float64)
        p = np.array([m.position for m in metas], dtype=np.float64)
        normal = np.cross(o[0, :3], o[0, 3:])
        order = np.argsort(p @ normal, kind="stable")
        if normal[int(np.argmax(np.abs(normal)))] < 0:
            order = order[::-1]  # ascending along the dominant patient axis
        stack.pixels = stack.pixels[order]
        stack.meta = [metas[i] for i in order]
        stack.order = [stack.order[i] for i in order]
    flips = []
    desired = np.array([1.0, 1.0, -1.0])  # LPS display: +x, +y, superior at the top
    for i, m in enumerate(stack.meta):
        if m.orientation is None:
            flips.append((False, False))
            continue
        row_dir = np.array(m.orientation[:3])  # along a row: increasing column index
        col_dir = np.array(m.orientation[3:])  # along a column: increasing row index
        a, b = int(np.argmax(np.abs(row_dir))), int(np.argmax(np.abs(col_dir)))
        flip_cols = bool(np.sign(row_dir[a]) != desired[a])
        flip_rows = bool(np.sign(col_dir[b]) != desired[b])
        if flip_cols:
            stack.pixels[i] = stack.pixels[i][:, ::-1]
        if flip_rows:
            stack.pixels[i] = stack.pixels[i][::-1, :]
        flips.append((flip_rows, flip_cols))
    stack.flips = flips


def _resample_spacing(stack: ImageStack, step: mf.ResampleSpacing) -> None:
    spacings = {m.pixel_spacing for m in stack.meta}
    if None in spacings or len(spacings) != 1:
        raise ModelError("resample_spacing: images need one common (0028,0030) PixelSpacing")
    (row_sp, col_sp) = next(iter(spacings))  # type: ignore[misc]
    _, h, w = stack.pixels.shape
    rows = max(1, round(h * row_sp / step.spacing_mm[0]))
    cols = max(1, round(w * col_sp / step.spacing_mm[1]))
    stack.pixels = resize_bilinear(stack.pixels, rows, cols)


def _normalize(px: np.ndarray, step: mf.Normalize) -> np.ndarray:
    out: np.ndarray
    if step.method == "fixed":
        out = (px - np.float32(step.mean)) / np.float32(step.std)
    elif step.method == "minmax":
        lo = px.min(axis=(1, 2), keepdims=True)
        hi = px.max(axis=(1, 2), keepdims=True)
        out = (px - lo) / np.maximum(hi - lo, np.float32(1e-6))
    else:
        mean = px.mean(axis=(1, 2), keepdims=True)
        std = px.std(axis=(1, 2), keepdims=True)
        out = (px - mean) / np.maximum(std, np.float32(1e-6))
    return out


def preprocess(
    stack: ImageStack, steps: Sequence[mf.PreprocessStep], spec: mf.InputSpec
) -> tuple[np.ndarray, list[Geometry]]:
    """Apply the steps to the stack; return the model tensor and each image's geometry."""
    _invert_monochrome1(stack)
    layout, count = "NCHW", 1
    for step in steps:
        if isinstance(step, mf.ModalityLut):
            _modality_lut(stack)
        elif isinstance(step, mf.Window):
            lo = step.center - step.width / 2
            stack.pixels = np.clip((stack.pixels - np.float32(lo)) / np.float32(step.width), 0, 1)
        elif isinstance(step, mf.Resize):
            stack.pixels = resize_bilinear(stack.pixels, *step.size)
        elif isinstance(step, mf.ResampleSpacing):
            _resample_spacing(stack, step)
        elif isinstance(step, mf.Orient):
            _orient(stack)
        elif isinstance(step, mf.Normalize):
            stack.pixels = _normalize(stack.pixels, step)
        elif isinstance(step, mf.Scale):
            stack.pixels = stack.pixels * np.float32(step.factor)
        elif isinstance(step, mf.Channels):
            layout, count = step.layout, step.count
    px = stack.pixels.astype(np.float32, copy=False)
    tensor = px[:, None] if layout == "NCHW" else px[..., None]
    if count == 3:
        tensor = np.repeat(tensor, 3, axis=1 if layout == "NCHW" else 3)
    if spec.kind == "volume":
        tensor = tensor[None]  # [1, S, C, H, W] -> one volume per run
        tensor = np.moveaxis(tensor, 1, 2) if layout == "NCHW" else tensor
    _, mh, mw = px.shape
    geometry = [
        Geometry(m.rows, m.columns, mh, mw, flip[0], flip[1])
        for m, flip in zip(
            stack.meta, stack.flips or [(False, False)] * len(stack.meta), strict=True
        )
    ]
    return np.ascontiguousarray(tensor, dtype=np.dtype(spec.tensor.dtype)), geometry


def to_source_mask(mask: np.ndarray, g: Geometry) -> np.ndarray:
    """A model-space [H', W'] map back onto the source image grid (bilinear, unflipped)."""
    out = resize_bilinear(mask[None].astype(np.float32), g.rows, g.columns)[0]
    if g.flip_rows:
        out = out[::-1, :]
    if g.flip_columns:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def to_source_box(box: Sequence[float], g: Geometry) -> tuple[float, float, float, float]:
    """(row0, col0, row1, col1) in model pixels -> the same box in source pixels."""
    sr = (g.rows - 1) / max(g.model_rows - 1, 1)
    sc = (g.columns - 1) / max(g.model_columns - 1, 1)
    r0, c0, r1, c1 = (
        float(box[0]) * sr,
        float(box[1]) * sc,
        float(box[2]) * sr,
        float(box[3]) * sc,
    )
    if g.flip_rows:
        r0, r1 = g.rows - 1 - r1, g.rows - 1 - r0
    if g.flip_columns:
        c0, c1 = g.columns - 1 - c1, g.columns - 1 - c0
    return (r0, c0, r1, c1)
