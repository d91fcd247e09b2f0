"""A model runs only on what its manifest says it takes: its declared use.

Two checks, the same constraints:

- ``header_violations``: on the header of a series' first instance, before anything
  runs (routing: a pipeline whose series is outside is ``skipped`` with the
  constraint named, and ``route explain`` shows it);
- ``stack_violations``: on the decoded series, every image (the runner: a model
  never runs outside its declared use, whoever calls it).

Constraints: input.modality, input.body_part, input.photometric, input.slices,
input.pixel_spacing_mm, input.slice_spacing_mm (volumes), a fixed slice count D of
input.tensor.shape. A reason names the manifest path and never quotes a value of the
data set (the values are the manifest's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cds.errors import ModelError
from cds.inference import layouts
from cds.inference import manifest as mf
from cds.inference.images import ImageStack

#: checks a series header (attributes, instance count) against one model's declared use
HeaderCheck = Callable[[Mapping[str, Any], int], list[str]]


class OutsideDeclaredUse(ModelError):
    """The series is outside the model's declared use; ``reasons`` names each constraint."""

    def __init__(self, model: str, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(f"outside the declared use of {model}: {'; '.join(reasons)}")


def _one_of(values: list[str]) -> str:
    return ", ".join(values)


def _body_part(spec: mf.InputSpec, value: object) -> list[str]:
    if not spec.body_part:
        return []
    wanted = [b.upper() for b in spec.body_part]
    text = str(value or "").strip().upper()
    if not text:
        return [f"input.body_part: the series has no BodyPartExamined; the model takes "
                f"{_one_of(wanted)}"]  # fmt: skip
    if text not in wanted:
        return [f"input.body_part: BodyPartExamined is not one of {_one_of(wanted)}"]
    return []


def _fixed_slices(spec: mf.InputSpec) -> int | None:
    return layouts.dim(spec.tensor.layout, spec.tensor.shape, "D")


def _count(spec: mf.InputSpec, images: int) -> list[str]:
    reasons = []
    if spec.slices is not None and not spec.slices.holds(images):
        reasons.append(f"input.slices: {images} image(s); the model takes {spec.slices.text()}")
    fixed = _fixed_slices(spec) if spec.kind == "volume" else None
    if fixed is not None and images != fixed:
        reasons.append(
            f"input.tensor.shape: the model takes exactly {fixed} slices (dimension D), "
            f"the series has {images}"
        )
    return reasons


def _spacing_ok(spec: mf.InputSpec, spacing: object) -> bool | None:
    """None: no PixelSpacing; else whether both values lie in input.pixel_spacing_mm."""
    assert spec.pixel_spacing_mm is not None
    try:
        values = [float(v) for v in spacing]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    if len(values) != 2:
        return None
    return all(spec.pixel_spacing_mm.holds(v) for v in values)


def header_violations(spec: mf.InputSpec, attrs: Mapping[str, Any], instances: int) -> list[str]:
    """The constraints a series breaks, from its first instance's header and its count."""
    reasons = []
    if str(attrs.get("Modality", "")).strip() not in spec.modality:
        reasons.append(f"input.modality: the series' Modality is not one of "
                       f"{_one_of(spec.modality)}")  # fmt: skip
    reasons += _body_part(spec, attrs.get("BodyPartExamined"))
    photometric = str(attrs.get("PhotometricInterpretation", "")).strip()
    if photometric and photometric not in spec.photometric:
        reasons.append(
            f"input.photometric: PhotometricInterpretation is not one of "
            f"{_one_of(list(spec.photometric))}"
        )
    try:
        frames = int(attrs.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    reasons += _count(spec, instances * max(frames, 1))
    if spec.pixel_spacing_mm is not None:
        ok = _spacing_ok(spec, attrs.get("PixelSpacing"))
        if ok is None:
            reasons.append("input.pixel_spacing_mm: the series has no PixelSpacing")
        elif not ok:
            reasons.append(
                f"input.pixel_spacing_mm: PixelSpacing is outside {spec.pixel_spacing_mm.text()} mm"
            )
    return reasons


def status_of(model: str, spec: mf.InputSpec, attrs: Mapping[str, Any], instances: int) -> str:
    """'run', or 'skipped: outside the declared use of MODEL (reasons)'."""
    reasons = header_violations(spec, attrs, instances)
    return (
        f"skipped: outside the declared use of {model} ({'; '.join(reasons)})" if reasons else "run"
    )


def header_check(spec: mf.InputSpec) -> HeaderCheck:
    def check(attrs: Mapping[str, Any], instances: int) -> list[str]:
        return header_violations(spec, attrs, instances)

    return check


def stack_violations(
    spec: mf.InputSpec, stack: ImageStack, positions: np.ndarray | None = None
) -> list[str]:
    """The constraints a decoded series breaks, checked on every image. ``positions``:
    a volume's slice positions along the normal, in sorted order."""
    reasons = []
    if stack.modality not in spec.modality:
        reasons.append(f"input.modality: the series' Modality is not one of "
                       f"{_one_of(spec.modality)}")  # fmt: skip
    reasons += _body_part(spec, stack.body_part)
    bad = sum(m.photometric not in spec.photometric for m in stack.meta)
    if bad:
        reasons.append(
            f"input.photometric: {bad} image(s) have a PhotometricInterpretation other than "
            f"{_one_of(list(spec.photometric))}"
        )
    reasons += _count(spec, len(stack.meta))
    if spec.pixel_spacing_mm is not None:
        checks = [_spacing_ok(spec, m.pixel_spacing) for m in stack.meta]
        if None in checks:
            reasons.append(
                f"input.pixel_spacing_mm: {checks.count(None)} image(s) have no PixelSpacing"
            )
        if False in checks:
            reasons.append(
                f"input.pixel_spacing_mm: {checks.count(False)} image(s) have a PixelSpacing "
                f"outside {spec.pixel_spacing_mm.text()} mm"
            )
    if spec.slice_spacing_mm is not None and positions is not None and len(positions) > 1:
        gaps = np.abs(np.diff(positions))
        if not all(spec.slice_spacing_mm.holds(float(g)) for g in gaps):
            reasons.append(
                f"input.slice_spacing_mm: neighbouring slices are not "
                f"{spec.slice_spacing_mm.text()} mm apart"
            )
    return reasons
