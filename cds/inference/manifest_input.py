"""The manifest's ``input``: what a model accepts and how a series becomes its input tensor.

Preprocessing is a list of steps chosen from a closed, documented set (carried out by
``cds.inference.preprocess``); each step is typed, so an unknown step or a misspelt
parameter is refused with its path. Every step's description gives its formula; the
JSON Schema (``models/manifest.schema.json``) carries them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Interpolation = Literal["nearest", "bilinear", "bicubic", "area"]
_INTERPOLATION = (
    "how output pixels are computed: nearest (the input pixel holding the output pixel's "
    "centre), bilinear, bicubic (Keys, a = -0.75) or area (the mean of the input pixels the "
    "output pixel covers); the same formulas as ONNX Resize"
)
_ALIGN = (
    "true: the centres of the first and last pixels are kept (x_in - 0.5 = (x_out - 0.5) "
    "(n_in - 1) / (n_out - 1)); false: half-pixel, as PyTorch (align_corners=False), OpenCV "
    "and PIL resize (x_in = x_out n_in / n_out). Default: true, except for area (always "
    "false)"
)


class ModalityLut(_Strict):
    """x' = x * RescaleSlope + RescaleIntercept (per image): CT pixels become HU."""

    step: Literal["modality_lut"]


class Window(_Strict):
    """x' = clip((x - (center - width / 2)) / width, 0, 1): a plain linear window onto
    [0, 1] (deliberately not the DICOM VOI LUT formula with center - 0.5, width - 1)."""

    step: Literal["window"]
    center: float
    width: float = Field(gt=0)


class PercentileClip(_Strict):
    """x' = clip(x, P_low, P_high), P_q the q-th percentile (linear interpolation) of the
    image (per: image) or of the whole series (per: series); with rescale:
    x' = (x' - P_low) / (P_high - P_low), onto [0, 1]."""

    step: Literal["percentile_clip"]
    low: float = Field(ge=0, le=100, description="lower percentile, e.g. 0.5")
    high: float = Field(ge=0, le=100, description="upper percentile, e.g. 99.5")
    rescale: bool = Field(False, description="map [P_low, P_high] onto [0, 1]")
    per: Literal["image", "series"] = "image"

    @model_validator(mode="after")
    def _ordered(self) -> PercentileClip:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self


class Resize(_Strict):
    """Resample each 2D image to size [rows, columns]. With keep_aspect (letterbox): scaled
    by k = min(rows / H, columns / W) to [round(H k), round(W k)], centred, the rest filled
    with pad_value (in the units the earlier steps produce)."""

    step: Literal["resize"]
    size: tuple[int, int] = Field(description="[rows, columns]")
    interpolation: Interpolation = Field("bilinear", description=_INTERPOLATION)
    align_corners: bool | None = Field(None, description=_ALIGN)
    keep_aspect: bool = Field(False, description="letterbox: keep the aspect ratio, pad")
    pad_value: float = Field(0.0, description="value of the padding (keep_aspect)")

    @field_validator("size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1:
            raise ValueError("rows and columns must be >= 1")
        return v

    @model_validator(mode="after")
    def _area(self) -> Resize:
        if self.interpolation == "area" and self.align_corners:
            raise ValueError("align_corners: area interpolation has no aligned corners; remove it")
        return self

    @property
    def corners(self) -> bool:
        return (
            self.align_corners if self.align_corners is not None else (self.interpolation != "area")
        )


class ResampleSpacing(_Strict):
    """Resample each 2D image in-plane to a pixel spacing in mm: [round(H row_spacing /
    spacing_mm[0]), round(W column_spacing / spacing_mm[1])] pixels (needs one common
    PixelSpacing in the series)."""

    step: Literal["resample_spacing"]
    spacing_mm: tuple[float, float] = Field(description="[row spacing, column spacing] in mm")
    interpolation: Interpolation = Field("bilinear", description=_INTERPOLATION)
    align_corners: bool | None = Field(None, description=_ALIGN)

    @property
    def corners(self) -> bool:
        return (
            self.align_corners if self.align_corners is not None else (self.interpolation != "area")
        )


class CropOrPad(_Strict):
    """Centre each image in [rows, columns]: cropped where larger, padded with value where
    smaller; an odd remainder goes to the bottom or right. Source pixels cropped away are
    never part of a finding."""

    step: Literal["crop_or_pad"]
    size: tuple[int, int] = Field(description="[rows, columns]")
    value: float = Field(0.0, description="value of the padding")


class Orient(_Strict):
    """Flip each image to the LPS display frame: rows run anterior->posterior (axial) or
    superior->inferior, columns right->left of the patient, as ImageOrientationPatient
    requires (flips only: an oblique or transposed plane is kept as its nearest axis
    says). Findings are flipped back onto the source images."""

    step: Literal["orient"]
    frame: Literal["LPS"] = "LPS"


class Normalize(_Strict):
    """minmax: x' = (x - min) / max(max - min, 1e-6); zscore: x' = (x - mean) / max(std,
    1e-6), min/max/mean/std of the image (per: image) or of the series (per: series);
    fixed: x' = (x - mean) / std, with one mean and std per channel when given as lists
    (then after the channels step)."""

    step: Literal["normalize"]
    method: Literal["minmax", "zscore", "fixed"]
    mean: float | list[float] | None = None
    std: float | list[float] | None = None
    per: Literal["image", "series"] = "image"

    @model_validator(mode="after")
    def _fixed_needs_values(self) -> Normalize:
        if self.method == "fixed" and (self.mean is None or self.std is None):
            raise ValueError("method 'fixed' needs mean and std")
        stds = self.std if isinstance(self.std, list) else [self.std]
        if any(s is not None and s <= 0 for s in stds):
            raise ValueError("std must be > 0")
        return self


class Channels(_Strict):
    """Make count channels: 1, or the grey level repeated in 3. Where the channel axis
    goes is input.tensor.layout (the old layout parameter must agree with it)."""

    step: Literal["channels"]
    count: Literal[1, 3] = 1
    layout: Literal["NCHW", "NHWC"] | None = Field(
        None, description="deprecated: say it in input.tensor.layout"
    )


class Scale(_Strict):
    """x' = x * factor (e.g. 255 for models trained on 8-bit images)."""

    step: Literal["scale"]
    factor: float


PreprocessStep = Annotated[
    ModalityLut
    | Window
    | PercentileClip
    | Resize
    | ResampleSpacing
    | CropOrPad
    | Orient
    | Normalize
    | Channels
    | Scale,
    Field(discriminator="step"),
]
PREPROCESSING_STEPS = (
    "modality_lut",
    "window",
    "percentile_clip",
    "resize",
    "resample_spacing",
    "crop_or_pad",
    "orient",
    "normalize",
    "channels",
    "scale",
)
#: steps that may follow ``channels`` (they work per channel)
AFTER_CHANNELS = (Normalize, Scale)


class Bounds(_Strict):
    """An inclusive range; a missing end is open."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self

    def holds(self, v: float) -> bool:
        return (self.min is None or v >= self.min) and (self.max is None or v <= self.max)

    def text(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min:g} to {self.max:g}"
        return f">= {self.min:g}" if self.min is not None else f"<= {self.max:g}"


class InputTensor(_Strict):
    name: str = Field(min_length=1)
    shape: list[int | str] = Field(
        description="dimensions; -1 or a name (e.g. 'batch') for a free dimension"
    )
    dtype: Literal["float32", "float16", "int64", "int32", "uint8", "bool"] = "float32"
    layout: Literal["NCHW", "NHWC", "NCDHW", "NDHWC"] = Field(
        description="what each dimension is: N images of a run (1 for a volume), C channels, "
        "D slices of a volume (sorted along the slice normal, see slice_order), H rows, "
        "W columns. 2D kinds take NCHW or NHWC; a volume NCDHW or NDHWC"
    )


class InputSpec(_Strict):
    kind: Literal["slice", "volume", "projection"] = Field(
        description="2D slices of a series (batched), a whole 3D volume, or a projection image"
    )
    modality: list[str] = Field(min_length=1, description="DICOM Modality values accepted")
    body_part: list[str] = Field(
        default_factory=list,
        description="BodyPartExamined values accepted (case-insensitive); empty = any. A "
        "series without BodyPartExamined is outside a model that lists body parts",
    )
    photometric: list[Literal["MONOCHROME1", "MONOCHROME2", "RGB"]] = Field(
        ["MONOCHROME2"], description="PhotometricInterpretation values accepted, every image"
    )
    invert: Literal["auto", "never"] = Field(
        "auto",
        description="MONOCHROME1 images: auto inverts them (x' = max + min - x per image, so "
        "higher is brighter as in MONOCHROME2); never gives the model the stored values",
    )
    slices: Bounds | None = Field(
        None, description="images per series (frames of multi-frame instances count each)"
    )
    pixel_spacing_mm: Bounds | None = Field(
        None, description="PixelSpacing (row and column, mm) every image must have"
    )
    slice_spacing_mm: Bounds | None = Field(
        None,
        description="volume: distance (mm) between neighbouring slices along the normal, "
        "every pair",
    )
    slice_order: Literal["increasing", "decreasing"] = Field(
        "increasing",
        description="volume: slices are sorted by ImagePositionPatient along the slice normal, "
        "increasing (or decreasing) along the patient axis the normal is nearest to (L, P "
        "or S: feet to head for axial). Arrival order never matters",
    )
    tensor: InputTensor
    preprocessing: list[PreprocessStep] = Field(default_factory=list)
    batch_size: int = Field(16, ge=1, le=1024, description="images per run (2D kinds)")
