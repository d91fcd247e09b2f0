"""The manifest's ``output``: what each output tensor holds and how findings are made of it.

Tensor layouts are explained in ``cds.inference.layouts``. Labels name what a class
is; ``Label.index`` is the class in the tensor: the channel of a score or probability
map, the value of a label map, the value of a box's label. ``Label``, ``Code`` and ``Text``
live in ``cds.findings``, with the findings that carry them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cds.findings import Code, Label

OutputLayout = Literal[
    "NC", "NCHW", "NHWC", "NHW", "NCDHW", "NDHWC", "DCHW", "NDHW", "DHW",
    "NK4", "K4", "NK", "K", "NKC", "KC",
]  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoxSpec(_Strict):
    """How a boxes tensor writes a box. In pixels, coordinates are continuous with the origin
    at the top left corner of the top left pixel of the model input (pixel (x, y) covers
    [x, x+1) x [y, y+1)); normalized divides x by the input's W and y by its H."""

    format: Literal["xyxy", "yxyx", "xywh", "cxcywh"] = Field(
        description="xyxy: (x1, y1, x2, y2); yxyx: (y1, x1, y2, x2); xywh: (x1, y1, width, "
        "height); cxcywh: (centre x, centre y, width, height). x runs along a row (columns), "
        "y down a column (rows)"
    )
    units: Literal["pixels", "normalized"] = Field(
        "pixels", description="pixels of the model input, or fractions of its W and H"
    )
    end: Literal["exclusive", "inclusive"] = Field(
        "exclusive",
        description="xyxy/yxyx in pixels: exclusive, x2 is the right edge; inclusive, x2 is "
        "the index of the last pixel inside (right edge = x2 + 1)",
    )

    @model_validator(mode="after")
    def _inclusive(self) -> BoxSpec:
        if self.end == "inclusive" and (self.format not in ("xyxy", "yxyx") or
                                        self.units != "pixels"):  # fmt: skip
            raise ValueError("end: inclusive applies to xyxy/yxyx in pixels only")
        return self


class Nms(_Strict):
    """Non-maximum suppression cds applies per label after the threshold: best score
    first, a box is dropped when its IoU with a kept box exceeds iou."""

    iou: float = Field(gt=0, le=1)


class OutputTensor(_Strict):
    name: str = Field(min_length=1)
    shape: list[int | str] = Field(
        description="dimensions; -1 or a name (e.g. 'batch') for a free dimension"
    )
    dtype: Literal["float32", "float16", "int64", "int32", "uint8", "bool"] = "float32"
    role: Literal["scores", "mask", "boxes", "box_scores", "box_labels", "value"] = Field(
        description="scores: a score per class; mask: a map per class (or a label map); "
        "boxes, box_scores, box_labels: detections; value: measurements"
    )
    layout: OutputLayout = Field(
        description="what each dimension is (N images of the run, D slices, C classes, H, W, "
        "K boxes, 4 coordinates); see docs/vendor-guide.md for the layouts of each role"
    )
    encoding: Literal["probabilities", "labelmap"] = Field(
        "probabilities",
        description="mask: probabilities (a map per class, thresholded at the label's "
        "threshold) or labelmap (one map whose value is the class: label index)",
    )
    activation: Literal["none", "softmax", "sigmoid"] = Field(
        "none",
        description="applied by cds to scores, probability masks and box scores: none (the "
        "model gives probabilities), softmax over C (one class), sigmoid (multi-label)",
    )
    box: BoxSpec | None = Field(None, description="role boxes: how a box is written")


class OutputSpec(_Strict):
    kind: Literal["classification", "segmentation", "detection", "measurement"]
    tensors: list[OutputTensor] = Field(min_length=1)
    labels: list[Label] = Field(min_length=1)
    results: list[Literal["SR", "SEG", "GSPS", "SC"]] = Field(
        min_length=1, description="result objects this model can produce"
    )
    unit: Code | None = Field(None, description="UCUM unit of measurements (kind: measurement)")
    nms: Nms | None = Field(None, description="detection: non-maximum suppression by cds")

    @model_validator(mode="after")
    def _roles_fit_kind(self) -> OutputSpec:
        roles = {t.role for t in self.tensors}
        need = {
            "classification": {"scores"},
            "segmentation": {"mask"},
            "detection": {"boxes", "box_scores"},
            "measurement": {"value"},
        }[self.kind]
        if not need <= roles:
            raise ValueError(f"kind {self.kind} needs output tensors with roles {sorted(need)}")
        indexes = [lb.index for lb in self.labels]
        if len(set(indexes)) != len(indexes):
            raise ValueError("labels: duplicate index")
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise ValueError("tensors: duplicate name")
        return self

    def tensor(self, role: str) -> OutputTensor | None:
        return next((t for t in self.tensors if t.role == role), None)
