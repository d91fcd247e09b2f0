"""Detection boxes: from the model's format to edges, non-maximum suppression, and the
form findings carry.

Model side (``output.tensors[].box``): xyxy, yxyx, xywh or cxcywh, in pixels of the
model input or normalised to its W and H, the far edge exclusive or inclusive.
``to_edges`` turns any of them into (x1, y1, x2, y2) edges in model-input pixels
(origin at the top left corner of the top left pixel), which ``Geometry.box`` maps
onto the source image.

Finding side: a box is ``(row0, col0, row1, col1)`` with row1 = bottom edge - 1 and
col1 = right edge - 1 (floats), so that ``cds.results.common.rectangle`` (which draws
inclusive pixel indices r0..r1, c0..c1 as [c0, c1 + 1] x [r0, r1 + 1]) draws exactly the
source edges. ``finding_box`` and ``edges_of`` convert between the two.
"""

from __future__ import annotations

import numpy as np

from cds.inference import manifest as mf

#: (row0, col0, row1, col1): row1 = bottom edge - 1, col1 = right edge - 1 (source pixels)
FindingBox = tuple[float, float, float, float]


def to_edges(boxes: np.ndarray, spec: mf.BoxSpec, rows: int, columns: int) -> np.ndarray:
    """[K, 4] boxes as the model writes them -> [K, 4] (x1, y1, x2, y2) model-input edges,
    ordered so that x1 <= x2 and y1 <= y2. ``rows``, ``columns``: the input's H and W."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    a0, a1, a2, a3 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    if spec.format == "xyxy":
        x1, y1, x2, y2 = a0, a1, a2, a3
    elif spec.format == "yxyx":
        y1, x1, y2, x2 = a0, a1, a2, a3
    elif spec.format == "xywh":
        x1, y1, x2, y2 = a0, a1, a0 + a2, a1 + a3
    else:  # cxcywh
        x1, y1, x2, y2 = a0 - a2 / 2, a1 - a3 / 2, a0 + a2 / 2, a1 + a3 / 2
    if spec.units == "normalized":
        x1, x2, y1, y2 = x1 * columns, x2 * columns, y1 * rows, y2 * rows
    lo_x, hi_x = np.minimum(x1, x2), np.maximum(x1, x2)
    lo_y, hi_y = np.minimum(y1, y2), np.maximum(y1, y2)
    if spec.end == "inclusive":
        hi_x, hi_y = hi_x + 1, hi_y + 1
    return np.stack([lo_x, lo_y, hi_x, hi_y], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each edge box of a [K, 4] with each of b [M, 4]: [K, M]."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: np.ndarray = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return out


def nms(edges: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first (ties: lower index)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if keep and iou(edges[i : i + 1], edges[keep]).max() > threshold:
            continue
        keep.append(int(i))
    return np.array(keep, dtype=np.intp)


def finding_box(x1: float, y1: float, x2: float, y2: float) -> FindingBox:
    """Source edges -> the box a Finding carries (module docstring)."""
    return (float(y1), float(x1), float(y2) - 1.0, float(x2) - 1.0)


def edges_of(box: FindingBox) -> tuple[float, float, float, float]:
    """A Finding's box -> its source edges (x1, y1, x2, y2)."""
    r0, c0, r1, c1 = box
    return (float(c0), float(r0), float(c1) + 1.0, float(r1) + 1.0)
