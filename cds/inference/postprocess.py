"""From model outputs to findings on the source images, per output kind.

Scores are reported as the model gave them (probabilities, per the manifest);
masks and boxes are mapped back onto the source pixel grid, so result
objects (SEG, GSPS, SR image regions) line up with the images they reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cds.errors import ModelError
from cds.inference import manifest as mf
from cds.inference.images import ImageStack
from cds.inference.preprocess import Geometry, to_source_box, to_source_mask


@dataclass(frozen=True, slots=True)
class ImageRef:
    sop_uid: str
    frame: int


@dataclass
class Finding:
    """One label's result on a series: score, presence, and where (per image)."""

    label: mf.Label
    score: float  # highest score over the series
    present: bool
    #: per image: score (classification), boolean mask on the source grid (segmentation),
    #: [((row0, col0, row1, col1), score), ...] in source pixels (detection), value (measurement)
    per_image: dict[ImageRef, Any] = field(default_factory=dict)
    measurement: float | None = None  # segmentation: area in mm2 summed over images


def _threshold(lb: mf.Label) -> float:
    return lb.threshold if lb.threshold is not None else 0.5


def _need(out: mf.OutputSpec, raw: dict[str, np.ndarray], role: str) -> np.ndarray:
    for t in out.tensors:
        if t.role == role:
            return raw[t.name]
    raise ModelError(f"output has no tensor with role {role!r}")


def _optional(out: mf.OutputSpec, raw: dict[str, np.ndarray], role: str) -> np.ndarray | None:
    return next((raw[t.name] for t in out.tensors if t.role == role), None)


Ctx = tuple[mf.OutputSpec, dict[str, np.ndarray], list[ImageRef], list[Geometry], ImageStack]


def _classification(ctx: Ctx) -> list[Finding]:
    out, raw, images, _, _ = ctx
    scores = _need(out, raw, "scores").reshape(len(images), -1)
    findings = []
    for lb in out.labels:
        col = scores[:, lb.index]
        best = float(col.max()) if col.size else 0.0
        per = {ref: float(v) for ref, v in zip(images, col, strict=True)}
        informational = lb.normal or lb.threshold is None
        findings.append(Finding(lb, best, not informational and best >= _threshold(lb), per))
    return findings


def _segmentation(ctx: Ctx) -> list[Finding]:
    out, raw, images, geometry, stack = ctx
    mask = _need(out, raw, "mask")
    findings = []
    for lb in out.labels:
        per: dict[ImageRef, Any] = {}
        area, best = 0.0, 0.0
        for i, ref in enumerate(images):
            prob = mask[i, lb.index] if mask.ndim == 4 else mask[i]
            best = max(best, float(prob.max()))
            binary = to_source_mask(prob, geometry[i]) >= _threshold(lb)
            if binary.any():
                per[ref] = binary
                sp = stack.meta[i].pixel_spacing
                if sp is not None:
                    area += float(binary.sum()) * sp[0] * sp[1]
        findings.append(Finding(lb, best, bool(per), per, area or None))
    return findings


def _detection(ctx: Ctx) -> list[Finding]:
    out, raw, images, geometry, _ = ctx
    boxes = _need(out, raw, "boxes")
    scores = _need(out, raw, "box_scores")
    labels = _optional(out, raw, "box_labels")
    findings = []
    for lb in out.labels:
        per: dict[ImageRef, Any] = {}
        best = 0.0
        for i, ref in enumerate(images):
            keep = scores[i] >= _threshold(lb)
            if labels is not None:
                keep &= labels[i] == lb.index
            if keep.any():
                per[ref] = [
                    (to_source_box(b, geometry[i]), float(s))
                    for b, s in zip(boxes[i][keep], scores[i][keep], strict=True)
                ]
            best = max(best, float(scores[i].max()) if scores[i].size else 0.0)
        findings.append(Finding(lb, best, bool(per), per))
    return findings


def _measurement(ctx: Ctx) -> list[Finding]:
    out, raw, images, _, _ = ctx
    values = _need(out, raw, "value").reshape(len(images), -1)
    findings = []
    for lb in out.labels:
        col = values[:, lb.index]
        per = {r: float(v) for r, v in zip(images, col, strict=True)}
        findings.append(Finding(lb, float(col.mean()), True, per, float(col.mean())))
    return findings


_BY_KIND: dict[str, Callable[[Ctx], list[Finding]]] = {
    "classification": _classification,
    "segmentation": _segmentation,
    "detection": _detection,
    "measurement": _measurement,
}


def postprocess(
    out: mf.OutputSpec,
    raw: dict[str, np.ndarray],
    images: list[ImageRef],
    geometry: list[Geometry],
    stack: ImageStack,
) -> list[Finding]:
    return _BY_KIND[out.kind]((out, raw, images, geometry, stack))
