"""What a model run says about a series, as the stages after inference read it.

Inference makes these; results, delivery, feedback, the observatory, the API and the
golden cases read them, so they live here, below all of those stages (issue 18). A
label's coded concept (``Code``) and its texts (``Text``) are the manifest's
(``cds.inference.manifest``), which declares its output labels with them.
"""

from __future__ import annotations

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


@dataclass
class Finding:
    """One label's result on a series: score, presence, and where (per image)."""

    label: Label
    score: float  # highest score over the series
    present: bool
    #: per image: score (classification), boolean mask on the source grid (segmentation),
    #: [((row0, col0, row1, col1), score), ...] in source pixels (detection; row1 and col1
    #: are the bottom and right edges - 1: see ``cds.inference.boxes``), value (measurement)
    per_image: dict[ImageRef, Any] = field(default_factory=dict)
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
