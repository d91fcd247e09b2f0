"""The finding's picture: its source image from the spool, windowed for display,
with the region the model reported drawn on it, as a PNG.

- a box or other spatial coordinate (SCOORD) is drawn on the image it was
  selected from;
- a segment of our SEG is drawn (translucent fill and outline) on the source
  image of the frame where the segment is largest;
- a classification is shown on the image it was computed from, with nothing drawn.

Grey images use the same windowing as the Secondary Capture results (the
source's first WindowCenter/Width, else the 1st-99th percentiles). An advisory
banner is burned in, so the picture says what it is even once saved elsewhere.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from cds.api.review.basis import Region
from cds.results.sc import drawable, windowed

MAX_SIDE = 1024
_REGION = (255, 200, 0)
_MASK = np.array([255, 64, 64], dtype=np.float64)
_MASK_ALPHA = 0.35
_BANNER_BG = (0, 0, 0)
_BANNER_FG = (255, 255, 0)


class NotRenderable(Exception):
    """The image cannot be shown (no pixels, an unknown photometric interpretation)."""


@dataclass(frozen=True, slots=True)
class Mask:
    """A segment's pixels on the source image (rows x columns, bool)."""

    pixels: np.ndarray


def _pixels(ds: Dataset, frame: int) -> Image.Image:
    if "PixelData" not in ds:
        raise NotRenderable(f"image {ds.SOPInstanceUID} has no pixel data")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= frames:
        raise NotRenderable(f"image {ds.SOPInstanceUID} has no frame {frame}")
    try:
        if samples == 1:
            return Image.fromarray(windowed(ds, frame), mode="L").convert("RGB")
        if samples == 3:
            rgb = ds.pixel_array  # pydicom converts YCbCr to RGB
            rgb = rgb[frame - 1] if frames > 1 else rgb
            if rgb.dtype != np.uint8:
                top = float(rgb.max()) or 1.0
                rgb = (rgb.astype(np.float64) / top * 255).round()
            return Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    except NotRenderable:
        raise
    except Exception as exc:  # a codec or value error: say it cannot be shown
        raise NotRenderable(
            f"image {ds.SOPInstanceUID} cannot be decoded: {type(exc).__name__}"
        ) from None
    raise NotRenderable(f"image {ds.SOPInstanceUID} has {samples} samples per pixel")


def _overlay(image: Image.Image, mask: np.ndarray) -> Image.Image:
    if mask.shape != (image.height, image.width):
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            image.size, Image.Resampling.NEAREST
        )
        mask = np.asarray(resized) > 0
    rgb = np.asarray(image).astype(np.float64)
    rgb[mask] = rgb[mask] * (1 - _MASK_ALPHA) + _MASK * _MASK_ALPHA
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    rgb[mask & ~inner] = _MASK
    return Image.fromarray(rgb.round().astype(np.uint8), mode="RGB")


def _draw(draw: ImageDraw.ImageDraw, region: Region, scale: float, width: int) -> None:
    pts = [(x * scale, y * scale) for x, y in region.points]
    if not pts:
        return
    kind = region.graphic_type
    r = max(3.0, 4 * width)
    if kind in ("POINT", "MULTIPOINT"):
        for x, y in pts:
            draw.ellipse((x - r, y - r, x + r, y + r), outline=_REGION, width=width)
    elif kind == "CIRCLE" and len(pts) >= 2:
        (cx, cy), (px, py) = pts[0], pts[1]
        rad = float(np.hypot(px - cx, py - cy))
        draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), outline=_REGION, width=width)
    elif kind == "ELLIPSE" and len(pts) >= 4:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        draw.ellipse((min(xs), min(ys), max(xs), max(ys)), outline=_REGION, width=width)
    elif len(pts) >= 2:  # POLYLINE, POLYGON
        closed = pts if kind != "POLYGON" or pts[0] == pts[-1] else [*pts, pts[0]]
        draw.line(closed, fill=_REGION, width=width, joint="curve")
    else:
        x, y = pts[0]
        draw.ellipse((x - r, y - r, x + r, y + r), outline=_REGION, width=width)


def render_png(
    source: Dataset,
    frame: int,
    *,
    regions: Sequence[Region] = (),
    mask: Mask | None = None,
    banner: str,
) -> bytes:
    """The PNG of ``frame`` of ``source`` with ``regions`` (and ``mask``) drawn."""
    image = _pixels(source, frame)
    if mask is not None:
        image = _overlay(image, mask.pixels)
    scale = min(1.0, MAX_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.LANCZOS,
        )
    width = max(2, round(max(image.size) / 256))
    draw = ImageDraw.Draw(image)
    for region in regions:
        _draw(draw, region, scale, width)
    height = max(14, image.height // 24)
    framed = Image.new("RGB", (image.width, image.height + height), _BANNER_BG)
    framed.paste(image, (0, height))
    ImageDraw.Draw(framed).text(
        (3, 1),
        drawable(banner),
        fill=_BANNER_FG,
        font=ImageFont.load_default(size=max(9, height - 4)),
    )
    out = io.BytesIO()
    framed.save(out, format="PNG")
    return out.getvalue()


def segment_frame(seg: Dataset, segment: int) -> tuple[str, int, Mask] | None:
    """(source SOP Instance UID, its frame, mask) of the SEG frame where ``segment``
    is largest; None when the segment covers no frame."""
    groups = seg.get("PerFrameFunctionalGroupsSequence", [])
    shared = seg.get("SharedFunctionalGroupsSequence", [])
    # with a single segment, highdicom names it once for all frames (shared group)
    shared_ids = shared[0].get("SegmentIdentificationSequence", []) if shared else []
    pixels = seg.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    best: tuple[int, int] | None = None  # (pixel count, frame index)
    for index, item in enumerate(groups):
        ids = item.get("SegmentIdentificationSequence", []) or shared_ids
        if not ids or int(ids[0].ReferencedSegmentNumber) != segment or index >= len(pixels):
            continue
        count = int(np.count_nonzero(pixels[index]))
        if best is None or count > best[0]:
            best = (count, index)
    if best is None:
        return None
    item = groups[best[1]]
    for derivation in item.get("DerivationImageSequence", []):
        for src in derivation.get("SourceImageSequence", []):
            frames = src.get("ReferencedFrameNumber")
            frame = int(frames[0] if isinstance(frames, Sequence) else frames) if frames else 1
            return (
                str(src.ReferencedSOPInstanceUID),
                frame,
                Mask(np.asarray(pixels[best[1]]) > 0),
            )
    return None
