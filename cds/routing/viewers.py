"""Which viewer shows which result kind, and what a pipeline makes for its site's viewer.

``SHOWS`` is the "shows" cells of the matrix in docs/viewers.md (viewer x kind, each cell
checked by a test); integration_tests/test_viewer_matrix.py keeps the two equal. A kind
a viewer shows only in part (DICOMscope's SR as a text report, Orthanc Explorer's SEG as a
bare black-and-white mask) counts as not shown.

A pipeline names fallbacks (``fallback: {GSPS: SC}``): the kind made in place of one that
cannot be made (its encoder refused it), or, with ``viewer: ohif``, in place of one the
site's viewer does not show, which is then not made at all. ``pipeline_kinds`` turns the
routing file's words into what the results stage is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

ResultKind = Literal["SR", "SEG", "GSPS", "SC"]
ViewerName = Literal["ohif", "orthanc-explorer", "dicomscope"]

#: the kinds each viewer shows correctly (docs/viewers.md)
SHOWS: dict[str, frozenset[str]] = {
    "ohif": frozenset({"SR", "SEG", "SC"}),
    "orthanc-explorer": frozenset({"SC"}),
    "dicomscope": frozenset({"GSPS"}),
}


@dataclass(frozen=True)
class PipelineKinds:
    """What a pipeline asks the results stage for.

    ``make``: the kinds to encode, in the pipeline's order, with each kind the viewer
    does not show replaced by its fallback (``replaced``: kind -> the kind asked in its
    place). ``fallback``: kind -> the kind to make when that kind cannot be made (only
    those whose fallback is not made anyway)."""

    make: list[str]
    replaced: dict[str, str] = field(default_factory=dict)
    fallback: dict[str, str] = field(default_factory=dict)


def pipeline_kinds(
    results: Sequence[ResultKind], fallback: Mapping[ResultKind, ResultKind], viewer: str | None
) -> PipelineKinds:
    """The kinds a pipeline makes (see ``PipelineKinds``); ``fallback_errors`` found none."""
    shown = SHOWS.get(viewer) if viewer is not None else None
    make: list[str] = []
    replaced: dict[str, str] = {}
    for kind in results:
        made = kind
        if shown is not None and kind not in shown:
            made = replaced[kind] = fallback[kind]
        if made not in make:
            make.append(made)
    later: dict[str, str] = {k: v for k, v in fallback.items() if k in make and v not in make}
    return PipelineKinds(make, replaced, later)


def fallback_errors(
    results: Sequence[ResultKind], fallback: Mapping[ResultKind, ResultKind], viewer: str | None
) -> list[tuple[str, str]]:
    """(path under the pipeline, message) of each fallback or viewer that cannot work."""
    errors: list[tuple[str, str]] = []
    shown = SHOWS.get(viewer) if viewer is not None else None
    for kind, instead in fallback.items():
        if kind not in results:
            why = f"the pipeline does not make {kind} (results: {', '.join(results)})"
        elif instead == kind:
            why = f"{kind} cannot stand in for itself"
        elif instead in fallback:
            why = (
                f"{instead} has a fallback of its own; fallbacks are not chained: "
                "name the kind to make directly"
            )
        elif shown is not None and instead not in shown:
            why = f"viewer {viewer} does not show {instead} either ({_shows(viewer, shown)})"
        else:
            continue
        errors.append((f"fallback.{kind}", why))
    for kind in results:
        if shown is not None and kind not in shown and kind not in fallback:
            why = (
                f"{viewer} does not show {kind} ({_shows(viewer, shown)}): name the kind to "
                f"make in its place (fallback: {{{kind}: ...}}) or leave {kind} out of results"
            )
            errors.append(("viewer", why))
    return errors


def _shows(viewer: str | None, shown: frozenset[str]) -> str:
    return f"{viewer} shows {', '.join(sorted(shown))}"
