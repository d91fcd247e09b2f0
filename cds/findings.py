"""What a model run says about a series, as the stages after inference read it.

Inference makes these; results, delivery, feedback, the observatory, the API and the
golden cases read them, so they live here, below all of those stages (issue 18). A
label's coded concept (``Code``) and its texts (``Text``) are the manifest's
(``cds.inference.manifest``), which declares its output labels with them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Strict):
    """A text for people, in both first-class languages."""

    en: str = Field(min_length=1)
    fr: str = Field(min_length=1)

    def get(self, lang: str) -> str:
        return self.fr if lang == "fr" else self.en


class Code(_Strict):
    """A coded concept (DICOM Code Sequence item)."""

    scheme: str = Field(
        pattern=r"^[A-Z0-9][A-Z0-9._-]{0,15}$",
        description="coding scheme designator: SNOMED CT (SCT), RadLex (RADLEX), DICOM "
        "(DCM), LOINC (LN), UCUM, or a private scheme declared in coding_schemes (99...). "
        "99CDS is the cds project's own scheme, for its reference packages",
    )
    value: str = Field(min_length=1, max_length=64)
    meaning: str = Field(min_length=1, max_length=64)


class Label(_Strict):
    index: int = Field(
        ge=0,
        description="the class in the output: the channel of scores or of a probability map, "
        "the value of a label map, the value a box_labels tensor gives",
    )
    code: Code = Field(description="finding (SNOMED CT or RadLex preferred)")
    display: Text
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="score at or above which the finding is reported present. For "
        "classification, null means informational: the score is shown, no finding is ever "
        "reported present. For masks and boxes, null means 0.5 (a label map has no score: "
        "its pixels of value index are the finding)",
    )
    normal: bool = Field(
        False, description="this class means 'no finding' (e.g. 'no tumour'): never a finding"
    )


@dataclass(frozen=True, slots=True)
class ImageRef:
    sop_uid: str
    frame: int


@dataclass(frozen=True, slots=True)
class PackedMask:
    """A boolean mask of ``shape`` as its bits: the C-order pixels packed eight to a byte,
    first pixel in the lowest bit (``np.packbits(..., bitorder="little")``: the bit order
    of a SEG's Pixel Data, PS3.5 8.1.1, so that a frame of whole bytes is these bytes),
    the last byte's unused bits zero; ``count``: how many pixels are set."""

    bits: bytes
    shape: tuple[int, ...]
    count: int

    @classmethod
    def of(cls, mask: np.ndarray) -> PackedMask:
        """``mask`` packed; a non-boolean one is true where it is not zero."""
        binary = np.asarray(mask).astype(bool, copy=False)
        bits = np.packbits(binary, axis=None, bitorder="little").tobytes()
        return cls(bits, binary.shape, int(np.count_nonzero(binary)))

    def unpack(self) -> np.ndarray:
        """The mask, a new boolean array of ``shape``."""
        size = int(np.prod(self.shape, dtype=np.int64))
        flat = np.unpackbits(
            np.frombuffer(self.bits, dtype=np.uint8), count=size, bitorder="little"
        )
        return flat.view(bool).reshape(self.shape)

    def overlaps(self, other: PackedMask) -> bool:
        """Whether a pixel is set in both (masks of one shape)."""
        a = np.frombuffer(self.bits, dtype=np.uint8)
        return bool(np.bitwise_and(a, np.frombuffer(other.bits, dtype=np.uint8)).any())


class Masks(MutableMapping[ImageRef, np.ndarray]):
    """A segmentation finding's masks per image, held bit-packed (``PackedMask``: an
    eighth of a boolean array, issue 19): each read gives a new boolean array, so that
    only the masks in use are ever whole. ``packed`` and ``counts`` read them without
    unpacking them. Images keep the order in which they were set."""

    __slots__ = ("_packed",)

    def __init__(self, masks: Mapping[ImageRef, np.ndarray] | None = None) -> None:
        self._packed: dict[ImageRef, PackedMask] = {}
        if masks is not None:
            self.join(masks)

    def __getitem__(self, ref: ImageRef) -> np.ndarray:
        return self._packed[ref].unpack()

    def __setitem__(self, ref: ImageRef, mask: np.ndarray) -> None:
        self._packed[ref] = PackedMask.of(mask)

    def __delitem__(self, ref: ImageRef) -> None:
        del self._packed[ref]

    def __contains__(self, ref: object) -> bool:
        return ref in self._packed  # Mapping's would unpack the mask

    def __iter__(self) -> Iterator[ImageRef]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Masks):
            return self._packed == other._packed
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dict

    def __repr__(self) -> str:
        return f"Masks({len(self)} images)"

    def packed(self, ref: ImageRef) -> PackedMask:
        return self._packed[ref]

    def packed_items(self) -> Iterator[tuple[ImageRef, PackedMask]]:
        return iter(self._packed.items())

    def join(self, masks: Mapping[ImageRef, np.ndarray]) -> None:
        """Set the masks of ``masks`` (another ``Masks``' without unpacking them)."""
        if isinstance(masks, Masks):
            self._packed.update(masks._packed)
        else:
            for ref, mask in masks.items():
                self[ref] = mask


def mask_counts(per_image: Mapping[ImageRef, Any]) -> dict[ImageRef, int]:
    """Per image that holds a mask, how many of its pixels are set (in image order);
    a ``Masks``' without unpacking them."""
    if isinstance(per_image, Masks):
        return {ref: p.count for ref, p in per_image.packed_items()}
    return {
        ref: int(np.count_nonzero(m)) for ref, m in per_image.items() if isinstance(m, np.ndarray)
    }


def has_positive_mask(per_image: Mapping[ImageRef, Any]) -> bool:
    """Whether a mask of ``per_image`` has a pixel set."""
    return any(n > 0 for n in mask_counts(per_image).values())


@dataclass
class Finding:
    """One label's result on a series: score, presence, and where (per image)."""

    label: Label
    score: float  # highest score over the series
    present: bool
    #: per image: score (classification), boolean mask on the source grid (segmentation:
    #: ``Masks``, held bit-packed, each read a new array), [((row0, col0, row1, col1),
    #: score), ...] in source pixels (detection; row1 and col1 are the bottom and right
    #: edges - 1: see ``cds.inference.boxes``), value (measurement)
    per_image: MutableMapping[ImageRef, Any] = field(default_factory=dict)
    measurement: float | None = None  # segmentation: area in mm2 summed over images
    volume_mm3: float | None = None  # segmentation of a volume: area x slice spacing


@dataclass(frozen=True, slots=True)
class InferenceRecord:
    model: str
    version: str
    sha256: str
    provider: str
    cds_version: str
    series_uids: tuple[str, ...]
    images: int
    seconds: float
    timings: dict[str, float]
    manifest_sha256: str = ""  # Manifest.digest(): thresholds, labels, preprocessing


@dataclass
class InferenceResult:
    record: InferenceRecord
    kind: str
    findings: list[Finding]
    #: model outputs over the whole series (runs joined on axis 0); only when asked
    #: (``ModelRunner.run(keep_raw=True)``), else empty
    raw: dict[str, np.ndarray]
    images: list[ImageRef]
    #: per image, how model-input pixels lie on the source image (same order as images):
    #: a ``cds.inference.geometry.Geometry`` each, which only inference reads (typed
    #: loosely so that this module stays below inference)
    geometry: list[Any] = field(default_factory=list)
