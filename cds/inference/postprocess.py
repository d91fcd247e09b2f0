"""From model outputs to findings on the source images, per output kind.

The runner hands over each output in its working form (``cds.inference.layouts``);
scores get the tensor's activation (none, softmax, sigmoid); masks and boxes are
mapped back onto the source pixel grid through each image's ``Geometry``, so
result objects (SEG, GSPS, SR image regions) line up with the images they reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cds.findings import Finding, ImageRef, Label, Masks
from cds.inference import manifest as mf
from cds.inference.boxes import finding_box, nms, to_edges
from cds.inference.geometry import Geometry
from cds.inference.images import ImageStack


@dataclass
class Outputs:
    """The outputs of a whole series in working form, by role (see ``layouts``)."""

    by_role: dict[str, np.ndarray] = field(default_factory=dict)  # scores, value, mask
    per_image: dict[str, list[np.ndarray]] = field(default_factory=dict)  # boxes, box_*


def _threshold(lb: Label) -> float:
    return lb.threshold if lb.threshold is not None else 0.5


def activate(values: np.ndarray, activation: str, axis: int) -> np.ndarray:
    """Scores as probabilities: softmax along ``axis``, sigmoid (both in float64), or as
    given (as they are, no copy)."""
    if activation not in ("softmax", "sigmoid"):
        return np.asarray(values)
    v = np.asarray(values, dtype=np.float64)
    out: np.ndarray = v
    if activation == "softmax":
        e = np.exp(v - v.max(axis=axis, keepdims=True))
        out = e / e.sum(axis=axis, keepdims=True)
    elif activation == "sigmoid":
        out = 1.0 / (1.0 + np.exp(-v))
    return out


@dataclass(frozen=True)
class Ctx:
    out: mf.OutputSpec
    outputs: Outputs
    images: list[ImageRef]
    geometry: list[Geometry]
    stack: ImageStack
    volume: bool
    slice_spacing: float | None  # volume: mm between neighbouring slices

    def tensor(self, role: str) -> mf.OutputTensor:
        t = self.out.tensor(role)
        assert t is not None  # the manifest requires it for the kind
        return t


def _per_image_values(ctx: Ctx, values: np.ndarray) -> np.ndarray:
    """[N, C] -> one row per image (a volume's single row repeated)."""
    return np.repeat(values, len(ctx.images), axis=0) if ctx.volume else values


def _classification(ctx: Ctx) -> list[Finding]:
    t = ctx.tensor("scores")
    scores = _per_image_values(ctx, activate(ctx.outputs.by_role["scores"], t.activation, 1))
    findings = []
    for lb in ctx.out.labels:
        col = scores[:, lb.index]
        best = float(col.max()) if col.size else 0.0
        per = {ref: float(v) for ref, v in zip(ctx.images, col, strict=True)}
        informational = lb.normal or lb.threshold is None
        findings.append(Finding(lb, best, not informational and best >= _threshold(lb), per))
    return findings


def _areas(ctx: Ctx, per: Masks, index: dict[ImageRef, int]) -> float | None:
    """The masks' area in mm2, summed in image order (from their counts: none unpacked)."""
    total, known = 0.0, False
    for ref, packed in per.packed_items():
        sp = ctx.stack.meta[index[ref]].pixel_spacing
        if sp is not None:
            total += float(packed.count) * sp[0] * sp[1]
            known = True
    return total if known else None


def _segmentation(ctx: Ctx) -> list[Finding]:
    t = ctx.tensor("mask")
    mask = ctx.outputs.by_role["mask"]  # [S, C, h, w]
    labelmap = t.encoding == "labelmap"
    index = {ref: i for i, ref in enumerate(ctx.images)}
    findings = []
    for lb in ctx.out.labels:
        per = Masks()  # bit-packed as each is made: the series' masks stay an eighth
        best = 0.0
        for i, ref in enumerate(ctx.images):
            if labelmap:
                values = np.rint(mask[i, 0]).astype(np.int64)
                binary = ctx.geometry[i].mask(values, "nearest") == lb.index
                best = max(best, 1.0 if binary.any() else 0.0)
            else:
                prob = _probabilities(mask, i, lb.index, t.activation)
                best = max(best, float(prob.max()))
                binary = _above(prob, ctx.geometry[i], _threshold(lb))
            if binary is not None and binary.any():
                per[ref] = binary
        area = _areas(ctx, per, index) if per else None
        volume = area * ctx.slice_spacing if area and ctx.slice_spacing else None
        present = bool(per) and not lb.normal
        findings.append(Finding(lb, best, present, per, area, volume))
    return findings


def _probabilities(mask: np.ndarray, i: int, label: int, activation: str) -> np.ndarray:
    """Image ``i``'s float32 probabilities of ``label`` ([h, w]): activated one image at a
    time (float64 for that image only, never a float64 copy of the series' masks); the
    same values as activating the whole mask and casting it to float32."""
    channel = label if mask.shape[1] > 1 else 0
    if activation == "softmax":
        out: np.ndarray = activate(mask[i], "softmax", 0)[channel].astype(np.float32)
        return out
    return np.asarray(activate(mask[i, channel], activation, 0), dtype=np.float32)


def _above(prob: np.ndarray, g: Geometry, threshold: float) -> np.ndarray | None:
    """The source pixels where the probability map, sampled bilinearly at their centres, is
    at least ``threshold``; None when none can be: a bilinear sample (weights >= 0, at most
    1 in all) never exceeds the map's highest value, so a map clearly below a positive
    threshold is not sampled at all."""
    if threshold > 0 and float(prob.max()) < threshold * (1 - 1e-5):
        return None
    return g.mask(prob, "bilinear") >= threshold  # its taps are made once per geometry


def _detection(ctx: Ctx) -> list[Finding]:
    t = ctx.tensor("boxes")
    assert t.box is not None
    st = ctx.tensor("box_scores")
    boxes = ctx.outputs.per_image["boxes"]
    scores = [activate(s, st.activation, -1) for s in ctx.outputs.per_image["box_scores"]]
    labels = ctx.outputs.per_image.get("box_labels")
    findings = []
    for lb in ctx.out.labels:
        per: dict[ImageRef, Any] = {}
        best = 0.0
        for i, ref in enumerate(ctx.images):
            g = ctx.geometry[i]
            s = scores[i][:, lb.index] if scores[i].ndim == 2 else scores[i]
            mine = np.ones(s.shape, dtype=bool)
            if labels is not None:
                mine = np.rint(labels[i]).astype(np.int64) == lb.index
            if (s[mine]).size:
                best = max(best, float(s[mine].max()))
            keep = np.flatnonzero(mine & (s >= _threshold(lb)))
            if not keep.size:
                continue
            edges = to_edges(boxes[i][keep], t.box, g.model_rows, g.model_columns)
            kept_scores = s[keep]
            if ctx.out.nms is not None:
                chosen = nms(edges, kept_scores, ctx.out.nms.iou)
                edges, kept_scores = edges[chosen], kept_scores[chosen]
            found = []
            for e, sc in sorted(zip(edges, kept_scores, strict=True), key=lambda es: -es[1]):
                x1, y1, x2, y2 = g.box(*(float(v) for v in e))
                if x2 > x1 and y2 > y1:  # a box wholly off the image (padding) is none
                    found.append((finding_box(x1, y1, x2, y2), float(sc)))
            if found:
                per[ref] = found
        findings.append(Finding(lb, best, bool(per) and not lb.normal, per))
    return findings


def _measurement(ctx: Ctx) -> list[Finding]:
    values = _per_image_values(ctx, ctx.outputs.by_role["value"])
    findings = []
    for lb in ctx.out.labels:
        col = values[:, lb.index].astype(np.float64)
        per = {r: float(v) for r, v in zip(ctx.images, col, strict=True)}
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
    outputs: Outputs,
    images: Sequence[ImageRef],
    geometry: Sequence[Geometry],
    stack: ImageStack,
    *,
    volume: bool = False,
    slice_spacing: float | None = None,
) -> list[Finding]:
    ctx = Ctx(out, outputs, list(images), list(geometry), stack, volume, slice_spacing)
    return _BY_KIND[out.kind](ctx)
