"""Decode a series into a stack of 2D images with the geometry the models need.

Pixel data are kept as stored, in the decoder's own dtype (uint8, int16, uint16... as
the instances store them): 2 bytes a pixel for a CT, not a float32 copy at twice that;
preprocessing converts each batch to float32 as it goes (issue 19, memory) and inverts
MONOCHROME1 images unless the manifest says ``input.invert: never``. Multi-frame instances
contribute one image per frame. Decoding uses pydicom with the
pylibjpeg/openjpeg plugins, so every common transfer syntax decodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cds.errors import ModelError


@dataclass(frozen=True, slots=True)
class ImageMeta:
    """Per-image attributes (one per slice or frame); no patient data."""

    sop_uid: str
    frame: int  # 1-based frame number within the instance
    rows: int
    columns: int
    slope: float
    intercept: float
    photometric: str
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) in mm
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (6 values)
    position: tuple[float, ...] | None  # ImagePositionPatient (3 values)


@dataclass(slots=True)
class ImageStack:
    """Images of one series as stored (not yet modality-LUT'd): [S, rows, cols] in the
    decoded dtype (integer for integer Pixel Data; float32 where floats are stored)."""

    series_uid: str
    modality: str
    pixels: np.ndarray
    meta: list[ImageMeta]
    lut_applied: bool = False
    #: per image: (flip rows, flip columns) applied by the orient step
    flips: list[tuple[bool, bool]] = field(default_factory=list)
    #: the order applied by sorting a volume's slices (indexes into the original meta)
    order: list[int] = field(default_factory=list)
    #: BodyPartExamined of the first instance ("" when absent); compared, never shown
    body_part: str = ""
    #: decoded for one model run: the runner frees ``pixels`` once it has made the
    #: model's input from them (``pixels`` is then [S, 0, 0]; ``meta`` stays)
    transient: bool = False

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def subset(stack: ImageStack, idx: slice, *, pixels: bool = True) -> ImageStack:
    """The images ``idx`` of ``stack``; without ``pixels`` (postprocessing needs only
    their attributes) it holds no view of the series' pixels, which can then be freed."""
    px = stack.pixels[idx] if pixels else no_pixels(len(stack.meta[idx]), stack.pixels.dtype)
    sub = ImageStack(stack.series_uid, stack.modality, px, stack.meta[idx], stack.lut_applied)
    sub.flips = stack.flips[idx]
    sub.order = stack.order[idx]
    sub.body_part = stack.body_part
    return sub


def no_pixels(images: int, dtype: np.dtype[Any]) -> np.ndarray:
    """[images, 0, 0]: a stack's length without its pixels."""
    return np.empty((images, 0, 0), dtype=dtype)


def _floats(ds: Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _frame_meta(ds: Dataset, frame_index: int) -> tuple[tuple[float, ...] | None, ...]:
    """(orientation, position, spacing) of one frame, from per-frame groups when present."""
    orientation = _floats(ds, "ImageOrientationPatient", 6)
    position = _floats(ds, "ImagePositionPatient", 3)
    spacing = _floats(ds, "PixelSpacing", 2)
    for seq_kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(seq_kw)
        if not seq:
            continue
        item = seq[0] if seq_kw.startswith("Shared") else seq[min(frame_index, len(seq) - 1)]
        if "PlaneOrientationSequence" in item:
            orientation = _floats(item.PlaneOrientationSequence[0], "ImageOrientationPatient", 6)
        if "PlanePositionSequence" in item:
            position = _floats(item.PlanePositionSequence[0], "ImagePositionPatient", 3)
        if "PixelMeasuresSequence" in item:
            spacing = _floats(item.PixelMeasuresSequence[0], "PixelSpacing", 2) or spacing
    return orientation, position, spacing


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope, intercept = ds.get("RescaleSlope", 1), ds.get("RescaleIntercept", 0)
    for seq_kw in ("SharedFunctionalGroupsSequence",):
        seq = ds.get(seq_kw)
        if seq and "PixelValueTransformationSequence" in seq[0]:
            t = seq[0].PixelValueTransformationSequence[0]
            slope, intercept = t.get("RescaleSlope", slope), t.get("RescaleIntercept", intercept)
    try:
        return float(slope or 1), float(intercept or 0)
    except (TypeError, ValueError):
        return 1.0, 0.0


def _name(item: Dataset | Path | str, ds: Dataset | None) -> str:
    """How an error names an instance: its file, else its SOP Instance UID. Never the
    data set itself (its text holds the patient's attributes)."""
    if not isinstance(item, Dataset):
        return str(item)
    filename = getattr(ds, "filename", None)
    if isinstance(filename, str) and filename:
        return filename
    try:
        return f"instance {ds.get('SOPInstanceUID', '?') if ds is not None else '?'}"
    except Exception:
        return "instance (unreadable SOP Instance UID)"


def read_source(path: Path) -> Dataset:
    """A file routing already read as DICOM; one without the 128-byte preamble and
    'DICM' prefix (an old or hand-made file) is read all the same, its transfer syntax
    the encoding it was read in."""
    try:
        ds = dcmread(path, force=True)
    except Exception as exc:  # malformed elements surface in many types
        raise ModelError(f"{path}: cannot read the data set ({type(exc).__name__})") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else ExplicitVRBigEndian
        )
    return ds


@dataclass(slots=True)
class Decoded:
    """One instance read and decoded ahead of its model run (``cds.inference.preread``):
    its data set (the encoders copy from it) and its frames, which ``decode`` takes into
    the series' stack and lets go (``px`` is then None)."""

    ds: Dataset
    px: np.ndarray | None
    metas: list[ImageMeta]
    series_uid: str
    modality: str
    #: what else was made of the data set ahead, for its encoding (opaque here)
    ready: object = None

    @property
    def nbytes(self) -> int:
        """About what it holds: the frames and the data set's Pixel Data."""
        stored = self.ds.get("PixelData")
        held = len(stored) if isinstance(stored, bytes | bytearray) else 0
        return held + (self.px.nbytes if self.px is not None else 0)


def decode_instance(item: Dataset | Path | str) -> Decoded:
    """Read (a path) and decode one instance; the errors of ``decode``."""
    ds: Dataset | None = None
    try:
        ds = item if isinstance(item, Dataset) else dcmread(item)
        return Decoded(ds, *_decode_one(ds, _name(item, ds)))
    except ModelError:
        raise
    except Exception as exc:  # malformed elements surface here in many types
        raise ModelError(
            f"{_name(item, ds)}: cannot read the data set ({type(exc).__name__})"
        ) from exc


def decode(
    datasets: Iterable[Dataset | Path | str | Decoded],
    *,
    count: int | None = None,
    transient: bool = False,
    drop_pixel_data: bool = False,
) -> ImageStack:
    """Decode instances of one series (in the given order) into an ImageStack;
    ``transient``: for one model run, which frees its pixels once used (``ImageStack``).
    A ``Decoded`` item (read ahead, during the quiet time) gives its frames up.
    ``datasets`` may be an iterator (each file read as its turn comes) of ``count`` items.
    ``drop_pixel_data``: each data set's Pixel Data is deleted once its frames are in the
    stack (no encoder will read it): the series is not held twice.

    Raises ModelError naming the instance (file or SOP Instance UID) and the
    attribute for anything it cannot use; a data set that does not even read
    (malformed elements) is a ModelError too, never another exception.
    """
    frames = _Frames(count if count is not None else len(cast(Sequence[object], datasets)))
    metas: list[ImageMeta] = []
    series_uid = modality = body_part = ""
    for item in datasets:
        one = item if isinstance(item, Decoded) else decode_instance(item)
        px, one.px = one.px, None  # the stack holds the frames from here on
        if px is None:
            raise ModelError(f"{_name(one.ds, one.ds)}: decoded twice")
        series_uid = series_uid or one.series_uid
        modality = modality or one.modality
        if not body_part:
            body_part = str(one.ds.get("BodyPartExamined", "") or "")
        metas.extend(one.metas)
        frames.add(px)
        del px
        if drop_pixel_data and "PixelData" in one.ds:
            del one.ds.PixelData
    stack = ImageStack(series_uid, modality, frames.array(), metas)
    stack.order = list(range(len(metas)))
    stack.flips = [(False, False)] * len(metas)
    stack.body_part = body_part
    stack.transient = transient
    return stack


def _next_of(px: np.ndarray, base: object, n: int) -> bool:
    """Whether ``px`` is frames ``n``... of ``base`` (a view of that array, in place)."""
    if not isinstance(base, np.ndarray) or px.base is not base or base.ndim != 3:
        return False
    if px.dtype != base.dtype or px.shape[1:] != base.shape[1:] or not base.flags.c_contiguous:
        return False
    at = px.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return bool(at == n * base.strides[0] and px.strides == base.strides)


class _Frames:
    """The decoded frames of a series, copied into one array as they come: no list of
    per-instance arrays joined at the end (which held the series twice)."""

    def __init__(self, instances: int) -> None:
        self._instances = max(1, instances)
        self._buf: np.ndarray | None = None
        self._n = 0
        #: ``_buf`` is the series' frames read ahead (``cds.inference.preread``), taken as
        #: they are while each instance's frames are the next of it: never written to
        self._adopted = False

    def add(self, px: np.ndarray) -> None:
        if self._adopted:
            if _next_of(px, self._buf, self._n):
                self._n += len(px)
                return
            assert self._buf is not None
            own = np.empty_like(self._buf)  # not in its order: copied from here on
            own[: self._n] = self._buf[: self._n]
            self._buf, self._adopted = own, False
        elif self._buf is None and _next_of(px, base := px.base, 0):
            assert isinstance(base, np.ndarray)
            if len(base) == self._instances:  # a frame per instance, all read ahead
                self._buf, self._n, self._adopted = base, len(px), True
                return
        buf = self._buf
        if buf is None:  # room for one frame per instance, as the first instance has
            shape = (self._instances * px.shape[0], *px.shape[1:])
            buf = self._buf = np.empty(shape, dtype=px.dtype.newbyteorder("="))
        if px.shape[1:] != buf.shape[1:]:
            sizes = sorted({tuple(buf.shape[1:]), tuple(px.shape[1:])})
            raise ModelError(f"images of different sizes in one series: {sizes}")
        dtype = np.result_type(buf.dtype, px.dtype)
        if dtype != buf.dtype or self._n + len(px) > len(buf):  # rare: grow or promote
            grown = np.empty((max(len(buf), self._n + len(px)) * 2, *buf.shape[1:]), dtype)
            grown[: self._n] = buf[: self._n]
            buf = self._buf = grown
        buf[self._n : self._n + len(px)] = px
        self._n += len(px)

    def array(self) -> np.ndarray:
        if self._buf is None:
            raise ModelError("no images to decode")
        if self._n == len(self._buf):
            return self._buf
        return self._buf[: self._n].copy()  # multi-frame instances of unequal counts


def _decode_one(ds: Dataset, name: str) -> tuple[np.ndarray, list[ImageMeta], str, str]:
    """One instance: its frames ([frames, rows, columns], as decoded) and their geometry."""
    if "PixelData" not in ds:
        raise ModelError(f"{name}: (7FE0,0010) Pixel Data missing")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ModelError(
            f"{name}: (0028,0004) PhotometricInterpretation {photometric[:16]} "
            "not supported (grayscale only)"
        )
    samples = ds.get("SamplesPerPixel", 1)
    if samples not in (None, "", 1):  # not a grayscale image, whatever it calls itself
        raise ModelError(
            f"{name}: (0028,0002) SamplesPerPixel is not 1 with PhotometricInterpretation "
            f"{photometric}: not a grayscale image"
        )
    try:
        # the functional decoder keeps no copy in the data set (ds.pixel_array would):
        # the same data sets are encoded from after inference (cds.compute)
        px = np.asarray(pixel_array(ds))
        if px.dtype.kind not in "iu":  # float Pixel Data (or anything else): as float32
            px = px.astype(np.float32)
    except Exception as exc:  # decoder errors come in many types
        raise ModelError(f"{name}: cannot decode Pixel Data ({type(exc).__name__})") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1 and px.ndim == 2:
        px = px[None]
    if px.ndim != 3 or px.shape[0] != frames:
        raise ModelError(f"{name}: (7FE0,0010) Pixel Data is not grayscale frames")
    slope, intercept = _rescale(ds)
    metas = []
    for f in range(px.shape[0]):
        orientation, position, spacing = _frame_meta(ds, f)
        metas.append(
            ImageMeta(
                sop_uid=str(ds.get("SOPInstanceUID", "")),
                frame=f + 1,
                rows=int(px.shape[1]),
                columns=int(px.shape[2]),
                slope=slope,
                intercept=intercept,
                photometric=photometric,
                pixel_spacing=spacing,  # type: ignore[arg-type]
                orientation=orientation,
                position=position,
            )
        )
    return px, metas, str(ds.get("SeriesInstanceUID", "")), str(ds.get("Modality", ""))
