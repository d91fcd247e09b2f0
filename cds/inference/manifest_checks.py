"""What one field of a manifest says against another, and against the ONNX graph.

``check_manifest`` runs when a manifest is parsed; ``validate`` runs it again with
the graph's declared shapes (``shapes``: tensor name -> dimensions), filling the
manifest's free dimensions with the graph's fixed ones. Every message names its
path and what to change, e.g.
``output.tensors[0]: shape [1, D, H, W] does not match layout NCDHW (5 dimensions);
set layout: one of DCHW, NDHW``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cds.findings import Code
from cds.inference import layouts
from cds.inference.manifest_input import (
    AFTER_CHANNELS,
    Channels,
    CropOrPad,
    Normalize,
    ResampleSpacing,
    Resize,
)

if TYPE_CHECKING:
    from cds.inference.manifest import Manifest

#: coding schemes every result object may use without declaring them
STANDARD_SCHEMES = ("SCT", "RADLEX", "DCM", "LN", "UCUM")
CDS_SCHEME = "99CDS"


def _shape_text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _merged(declared: Sequence[int | str], graph: Sequence[Any] | None) -> list[int | str]:
    """The manifest's shape with the graph's fixed sizes where the manifest leaves it free."""
    if graph is None or len(graph) != len(declared):
        return list(declared)
    out: list[int | str] = []
    for d, g in zip(declared, graph, strict=True):
        free = isinstance(d, str) or d == -1
        out.append(g if free and isinstance(g, int) and g >= 0 else d)
    return out


def final_size(steps: Sequence[Any]) -> tuple[tuple[int, int] | None, int | None]:
    """(rows, columns) the preprocessing ends at when fixed, and the index of the step
    that fixes it; (None, None) when the size follows the images."""
    size: tuple[int, int] | None = None
    where: int | None = None
    for i, s in enumerate(steps):
        if isinstance(s, Resize | CropOrPad):
            size, where = (int(s.size[0]), int(s.size[1])), i
        elif isinstance(s, ResampleSpacing):
            size, where = None, None
    return size, where


def _check_input(m: Manifest, shape: list[int | str], errors: list[str]) -> None:
    spec = m.input
    layout = spec.tensor.layout
    allowed = layouts.INPUT[spec.kind]
    if layout not in allowed:
        errors.append(
            f"input.tensor.layout: {layout} does not fit input.kind {spec.kind}; "
            f"set layout: {' or '.join(allowed)}"
        )
        return
    if len(shape) != len(layout):
        errors.append(
            f"input.tensor: shape {_shape_text(shape)} does not match layout {layout} "
            f"({len(layout)} dimensions); {layouts.suggest(shape, allowed)}"
        )
        return
    steps = list(spec.preprocessing)
    channels = next((i for i, s in enumerate(steps) if isinstance(s, Channels)), None)
    count = steps[channels].count if channels is not None else 1  # type: ignore[union-attr]
    c = layouts.dim(layout, shape, "C")
    if c is not None and c != count:
        other = {"NCHW": "NHWC", "NHWC": "NCHW", "NCDHW": "NDHWC", "NDHWC": "NCDHW"}[layout]
        hint = (
            f"if the channels are the other dimension, set layout: {other}"
            if c not in (1, 3)
            else f"make {c} channels: a channels step with count: {c}"
        )
        errors.append(
            f"input.tensor.shape: dimension C of layout {layout} is {c}, the preprocessing "
            f"makes {count} channel(s); {hint}"
        )
    size, at = final_size(steps)
    h, w = layouts.dim(layout, shape, "H"), layouts.dim(layout, shape, "W")
    if (
        (c is None or c == count)
        and size is not None
        and h is not None
        and w is not None
        and size != (h, w)
    ):
        errors.append(
            f"input.tensor.shape: H x W is {h} x {w}, input.preprocessing[{at}] makes "
            f"{size[0]} x {size[1]}; make them agree"
        )
    for i, s in enumerate(steps):
        where = f"input.preprocessing[{i}]"
        want = "NCHW" if layout in ("NCHW", "NCDHW") else "NHWC"
        if isinstance(s, Channels) and s.layout is not None and s.layout != want:
            errors.append(
                f"{where}.layout: {s.layout} contradicts input.tensor.layout {layout}; "
                "remove it (the tensor's layout decides)"
            )
        if channels is not None and i > channels and not isinstance(s, AFTER_CHANNELS):
            errors.append(
                f"{where}: step {s.step} after channels (input.preprocessing[{channels}]); "
                "only normalize and scale may follow channels: move channels down"
            )
        if isinstance(s, Normalize) and s.method == "fixed":
            for key in ("mean", "std"):
                v = getattr(s, key)
                if isinstance(v, list) and (channels is None or i < channels):
                    errors.append(
                        f"{where}.{key}: a value per channel needs the channels step before "
                        "this one: move it after channels"
                    )
                elif isinstance(v, list) and len(v) != count:
                    errors.append(
                        f"{where}.{key}: {len(v)} values for {count} channel(s); give {count}"
                    )
    if spec.kind != "volume" and spec.slice_spacing_mm is not None:
        errors.append(
            "input.slice_spacing_mm: only for input.kind volume; remove it or use pixel_spacing_mm"
        )


def _check_output(m: Manifest, shapes: Mapping[str, list[int | str]], errors: list[str]) -> None:
    out, kind = m.output, m.input.kind
    if out.kind == "detection" and kind == "volume":
        errors.append(
            "output.kind: detection takes 2D images (boxes); input.kind volume is not "
            "supported: use slice"
        )
        return
    top = max(lb.index for lb in out.labels)
    for i, t in enumerate(out.tensors):
        where = f"output.tensors[{i}]"
        shape = shapes[t.name]
        encoding = t.encoding if t.role == "mask" else "probabilities"
        allowed = layouts.allowed_outputs(t.role, kind, encoding)
        if t.encoding == "labelmap" and t.role != "mask":
            errors.append(f"{where}.encoding: labelmap is for role mask only; remove it")
        if t.activation != "none" and (
            t.role in ("boxes", "box_labels") or t.encoding == "labelmap"
        ):
            errors.append(f"{where}.activation: {t.role} has no scores to activate; remove it")
        if (t.role == "boxes") != (t.box is not None):
            errors.append(
                f"{where}.box: required for role boxes (format: xyxy, yxyx, xywh or cxcywh)"
                if t.role == "boxes"
                else f"{where}.box: only for role boxes; remove it"
            )
        if t.layout not in allowed:
            errors.append(
                f"{where}.layout: {t.layout} is not a layout of a {t.role} "
                f"({encoding}) for input.kind {kind}; "
                f"{layouts.suggest(shape, allowed) if shape else 'use ' + ', '.join(allowed)}"
            )
            continue
        if len(shape) != len(t.layout):
            errors.append(
                f"{where}: shape {_shape_text(shape)} does not match layout {t.layout} "
                f"({len(t.layout)} dimensions); {layouts.suggest(shape, allowed)}"
            )
            continue
        if t.layout[0] == "K" and m.input.batch_size != 1:
            errors.append(
                f"{where}.layout: {t.layout} has no batch dimension; set input.batch_size: 1"
            )
        four = layouts.dim(t.layout, shape, "4")
        if "4" in t.layout and four is not None and four != 4:
            errors.append(f"{where}.shape: the last dimension of layout {t.layout} must be 4")
        c = layouts.dim(t.layout, shape, "C")
        per_class = t.role in ("scores", "value", "box_scores") or (
            t.role == "mask" and t.encoding == "probabilities"
        )
        if per_class and c is not None and top >= c:
            errors.append(
                f"{where}.shape: {c} classes (dimension C), output.labels has index {top}; "
                "a label's index is its class (channel) in this tensor"
            )
        if t.role == "mask" and t.encoding == "probabilities" and "C" not in t.layout and top:
            errors.append(
                f"{where}.layout: {t.layout} holds one class, output.labels has index {top}; "
                "use a layout with C or encoding: labelmap"
            )
        if t.role == "mask" and t.encoding == "labelmap" and c not in (None, 1):
            errors.append(f"{where}.shape: a label map has one channel, not {c}")


def _codes(m: Manifest) -> list[tuple[str, Code]]:
    found: list[tuple[str, Code]] = []
    if m.algorithm_family is not None:
        found.append(("algorithm_family", m.algorithm_family))
    found += [(f"output.labels[{i}].code", lb.code) for i, lb in enumerate(m.output.labels)]
    if m.output.unit is not None:
        found.append(("output.unit", m.output.unit))
    return found


def _check_codes(m: Manifest, errors: list[str]) -> None:
    declared = {s.designator for s in m.coding_schemes}
    for i, s in enumerate(m.coding_schemes):
        if s.designator == CDS_SCHEME:
            errors.append(
                f"coding_schemes[{i}].designator: 99CDS is the cds project's own scheme; "
                "declare yours (99 then your name, e.g. 99ACME)"
            )
    for where, code in _codes(m):
        ok = code.scheme in STANDARD_SCHEMES or code.scheme in declared
        if not ok and code.scheme != CDS_SCHEME:
            errors.append(
                f"{where}.scheme: {code.scheme} is not declared; add it to coding_schemes "
                f"(designator, name, organization) or use {', '.join(STANDARD_SCHEMES)}"
            )


def check_manifest(m: Manifest, graph: Mapping[str, Sequence[Any]] | None = None) -> list[str]:
    """Every inconsistency of ``m`` (and with ``graph``: tensor name -> the ONNX graph's
    dimensions), each as 'path: what is wrong; what to change'."""
    errors: list[str] = []
    g = graph or {}
    _check_input(m, _merged(m.input.tensor.shape, g.get(m.input.tensor.name)), errors)
    shapes = {t.name: _merged(t.shape, g.get(t.name)) for t in m.output.tensors}
    _check_output(m, shapes, errors)
    _check_codes(m, errors)
    return errors
