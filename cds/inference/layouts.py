"""Tensor layouts: what each dimension of a model's input and outputs means.

Every tensor of a manifest names its layout, one letter per dimension:

| letter | dimension |
|---|---|
| N | batch: the images of one run (kind slice, projection); 1 for a volume |
| D | depth: the slices of a volume, in the order cds sorted them |
| C | channels (input) or classes (outputs: one per label index) |
| H, W | rows and columns of the image |
| K | boxes (detection) |
| 4 | the four coordinates of a box (see ``output.tensors[].box``) |

Allowed layouts, by tensor and input kind:

| tensor | slice / projection | volume |
|---|---|---|
| input | NCHW, NHWC | NCDHW, NDHWC |
| scores, value | NC | NC (N = 1: one value per series) |
| mask, probabilities | NCHW, NHWC, NHW (1 class) | NCDHW, NDHWC, DCHW, NDHW, DHW (1 class) |
| mask, label map | NHW, NCHW (C = 1) | NDHW, DHW, NCDHW (C = 1) |
| boxes | NK4, K4 (unbatched: batch_size 1) | - |
| box_scores | NK, K, NKC, KC (a score per class) | - |
| box_labels | NK, K | - |

``canonical`` turns an output array into cds's working form, checking its shape
against the layout (every error names the tensor and what to change):
scores/value [N, C]; probability masks [S, C, h, w]; label maps [S, h, w];
boxes [S, K, 4]; box scores [S, K] or [S, K, C]; box labels [S, K] — S being the
images (slices) of the run, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cds.errors import ModelError

INPUT = {"slice": ("NCHW", "NHWC"), "projection": ("NCHW", "NHWC"), "volume": ("NCDHW", "NDHWC")}
_PLANE = {"slice": "2d", "projection": "2d", "volume": "3d"}
OUTPUT: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("scores", "2d", "probabilities"): ("NC",),
    ("scores", "3d", "probabilities"): ("NC",),
    ("value", "2d", "probabilities"): ("NC",),
    ("value", "3d", "probabilities"): ("NC",),
    ("mask", "2d", "probabilities"): ("NCHW", "NHWC", "NHW"),
    ("mask", "3d", "probabilities"): ("NCDHW", "NDHWC", "DCHW", "NDHW", "DHW"),
    ("mask", "2d", "labelmap"): ("NHW", "NCHW"),
    ("mask", "3d", "labelmap"): ("NDHW", "DHW", "NCDHW"),
    ("boxes", "2d", "probabilities"): ("NK4", "K4"),
    ("box_scores", "2d", "probabilities"): ("NK", "K", "NKC", "KC"),
    ("box_labels", "2d", "probabilities"): ("NK", "K"),
}


def allowed_outputs(role: str, kind: str, encoding: str = "probabilities") -> tuple[str, ...]:
    return OUTPUT.get((role, _PLANE[kind], encoding), ())


def suggest(shape: Sequence[int | str], allowed: Sequence[str]) -> str:
    """'set layout: X' (or 'one of X, Y') for the allowed layouts of the shape's rank."""
    fit = [a for a in allowed if len(a) == len(shape)]
    if not fit:
        ranks = sorted({len(a) for a in allowed})
        dims = " or ".join(str(r) for r in ranks)
        return f"the tensor needs {dims} dimensions ({', '.join(allowed)})"
    return f"set layout: {fit[0]}" if len(fit) == 1 else f"set layout: one of {', '.join(fit)}"


def dim(layout: str, shape: Sequence[int | str], letter: str) -> int | None:
    """The fixed size of ``letter`` in ``shape`` (None when free or absent)."""
    if letter not in layout or len(shape) != len(layout):
        return None
    v = shape[layout.index(letter)]
    return v if isinstance(v, int) and v >= 0 else None


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def _want(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ModelError(f"{where}: {msg}")


def canonical(
    role: str,
    layout: str,
    array: np.ndarray,
    *,
    images: int,
    volume: bool,
    where: str,
) -> np.ndarray:
    """``array`` (one run's output) in cds's working form for ``role``.

    scores, value: [N, C]; mask: [S, C, h, w] (a label map or a one-class map has
    C = 1); boxes: [S, K, 4]; box_scores: [S, K] or [S, K, C]; box_labels: [S, K].
    ``images``: the images of the run (the slices of a volume). Raises ModelError
    naming ``where`` (the manifest path of the tensor) when the array does not fit.
    """
    a = np.asarray(array)
    _want(
        a.ndim == len(layout),
        where,
        f"the model returned shape {_fmt(a.shape)} ({a.ndim} dimensions), layout {layout} "
        f"has {len(layout)}; {suggest(list(a.shape), _all_for(role, volume))}",
    )
    if "N" in layout:
        n, expect = a.shape[layout.index("N")], 1 if volume else images
        run = "one volume" if volume else f"{images} image(s)"
        _want(n == expect, where, f"dimension N of layout {layout} is {n}, the run had {run}")
    elif not volume and layout[0] == "K":
        _want(images == 1, where, f"layout {layout} has no batch: set input.batch_size: 1")
    if "D" in layout:
        d = a.shape[layout.index("D")]
        _want(
            d == images,
            where,
            f"dimension D of layout {layout} is {d}, the volume has {images} slices "
            "(cds does not resample along the slices)",
        )
    if "4" in layout:
        _want(a.shape[-1] == 4, where, f"the last dimension of layout {layout} must be 4")
    if role in ("scores", "value"):
        return a
    if role == "mask":
        if volume:
            b = a[0] if layout[0] == "N" else a
            rest = layout[1:] if layout[0] == "N" else layout
            if "C" not in rest:
                b, rest = b[:, None], "DCHW"
            return np.transpose(b, [rest.index(ch) for ch in "DCHW"])
        if "C" not in layout:
            return a[:, None]
        return np.transpose(a, [layout.index(ch) for ch in "NCHW"])
    if role in ("boxes", "box_scores", "box_labels"):
        return a if layout[0] == "N" else a[None]
    raise ValueError(f"unknown role {role!r}")


def _all_for(role: str, volume: bool) -> tuple[str, ...]:
    plane = "3d" if volume else "2d"
    out: list[str] = []
    for (r, p, _), layouts in OUTPUT.items():
        if r == role and p == plane:
            out += [x for x in layouts if x not in out]
    return tuple(out)
