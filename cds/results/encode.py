"""Encode an inference as the result objects a pipeline asks for, and keep them durably.

The SEG comes first (the SR references it). Each object stands alone (issue 16): one
that cannot be encoded is recorded as not made, with its reason in words (never a data
value: ``cds.errors.safe_message``, and the source attributes pydicom finds invalid,
by tag and keyword), and the others are still made. A kind with nothing to encode
(a SEG when no mask is positive, a GSPS with nothing to draw) is not made either, and
said so, but is no failure. Objects are written to ``<home>/results/<study_key>/``
(temporary file, fsync, rename, folder fsync) before anything may send them: the
delivery stage reads them from there.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import validate_value

from cds.domain import ObjectOutcome, ResultRef
from cds.errors import CdsError, EncodingError, error_text, safe_message
from cds.findings import InferenceResult
from cds.inference import manifest as mf
from cds.logging import get_logger
from cds.results.common import content_seed, series_number
from cds.results.copied import Copied, copy_for_encoding
from cds.results.gsps import build_gsps
from cds.results.ps310 import file_bytes
from cds.results.sc import build_sc
from cds.results.seg import build_seg
from cds.results.sr import build_sr

log = get_logger("cds.results")

#: how many burned-in Secondary Captures at most per result (the images with findings)
MAX_SC = 20
#: text VRs whose values pydicom can check (length, characters, format)
_CHECKED_VRS = frozenset(
    ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI", "UC")
)
_SOURCES_CHECKED = 3
_ATTRIBUTES_NAMED = 6


@dataclass
class Encoded:
    """The objects made, what became of each object asked for, and a note per object
    not made (``"GSPS: <reason>"``). ``copied``: what of the source attributes was not
    copied as it was (``copy_for_encoding``), kept as the ``reason`` of each object made
    (the job's record) without making the job partial, after what its encoder noted of
    the object itself (a fallback the standard allows: a SEG without Frame of Reference,
    an SC with an empty PatientOrientation)."""

    objects: list[Dataset] = field(default_factory=list)
    outcomes: list[ObjectOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[ObjectOutcome]:
        return [o for o in self.outcomes if o.failed]

    def attempt(
        self,
        kind: str,
        build: Callable[[list[str]], Dataset],
        sources: Sequence[Dataset],
        *,
        nothing_to_encode: bool = False,
        what: str = "",
    ) -> Dataset | None:
        """Build one object (``build`` appends its notes to the list it gets); on any
        exception record it as not made (a failure, unless ``nothing_to_encode`` and the
        encoder said so with an EncodingError)."""
        said: list[str] = []
        try:
            ds = build(said)
        except Exception as exc:  # highdicom, pydicom, numpy raise their own types
            expected = nothing_to_encode and isinstance(exc, EncodingError)
            reason = safe_message(exc) if expected else error_text(exc)
            if not expected and _from_a_library(exc):
                bad = invalid_attributes(sources[:_SOURCES_CHECKED])
                if bad:
                    reason += f"; invalid in the source: {', '.join(bad)}"
            reason = f"{what}{reason}"
            self.outcomes.append(
                ObjectOutcome(kind, made=False, failed=not expected, reason=reason)
            )
            self.notes.append(f"{kind}: {reason}")
            if not expected:
                log.warning(
                    "results.object_not_made",
                    kind=kind,
                    error_type=type(exc).__name__,
                    reason=reason,
                )
            return None
        self.objects.append(ds)
        reason = "; ".join([*said, *self.copied])
        self.outcomes.append(ObjectOutcome(kind, made=True, reason=reason))
        return ds


def encode(
    sources: Sequence[Dataset],
    result: InferenceResult,
    manifest: mf.Manifest,
    kinds: Sequence[str],
    lang: str,
    *,
    seed: str = "",
    predecessors: Sequence[ResultRef] = (),
) -> tuple[list[Dataset], list[str]]:
    """The objects of ``kinds`` made, and a note per object not made (see
    ``encode_each``, which also says what became of each), and of the source attributes
    not copied as they were."""
    done = encode_each(sources, result, manifest, kinds, lang, seed=seed, predecessors=predecessors)
    return done.objects, [*done.copied, *done.notes]


def encode_each(
    sources: Sequence[Dataset],
    result: InferenceResult,
    manifest: mf.Manifest,
    kinds: Sequence[str],
    lang: str,
    *,
    seed: str = "",
    predecessors: Sequence[ResultRef] = (),
    ready: Sequence[Copied | None] | None = None,
) -> Encoded:
    """The objects of ``kinds`` (SEG, SR, GSPS, SC), each made or not on its own.

    ``predecessors``: the current result objects of an earlier run on the same
    series that these replace (the SR names them in its Predecessor Documents).
    ``seed`` is mixed with all the content depends on (``content_seed``: input SOP
    Instance UIDs, model and manifest hashes, language, encoder version): a changed
    threshold or language gives new UIDs, the same inputs the same UIDs.
    The encoders get a checked UTF-8 copy of the sources (``copy_for_encoding``); what
    was dropped or repaired is said in ``copied`` and in each object's outcome.
    """
    seed = content_seed(seed, sources, manifest, result.record.sha256, lang)
    sources, copied = copy_for_encoding(sources, ready)  # ``ready``: copies made ahead
    out = Encoded(copied=copied)
    seg: Dataset | None = None
    if "SEG" in kinds:
        seg = out.attempt(
            "SEG",
            lambda notes: build_seg(
                sources,
                result,
                manifest,
                lang,
                uid_root_seed=seed,
                series_number=series_number(manifest.name, "SEG"),
                notes=notes,
            ),
            sources,
            nothing_to_encode=not _has_positive_mask(result),
        )
    if "SR" in kinds:
        out.attempt(
            "SR",
            lambda _notes: build_sr(
                sources,
                result,
                manifest,
                lang,
                seg=seg,
                uid_root_seed=seed,
                predecessors=predecessors,
                series_number=series_number(manifest.name, "SR"),
            ),
            sources,
        )
    if "GSPS" in kinds:
        out.attempt(
            "GSPS",
            lambda _notes: build_gsps(
                sources,
                result,
                manifest,
                lang,
                uid_root_seed=seed,
                series_number=series_number(manifest.name, "GSPS"),
            ),
            sources,
            nothing_to_encode=not _has_something_to_draw(result),
        )
    if "SC" in kinds:
        _encode_sc(out, sources, result, manifest, lang, seed)
    return out


def _encode_sc(  # noqa: PLR0917 (the arguments of encode, passed on)
    out: Encoded,
    sources: Sequence[Dataset],
    result: InferenceResult,
    manifest: mf.Manifest,
    lang: str,
    seed: str,
) -> None:
    """One burned-in Secondary Capture per image with a finding present (at most MAX_SC)."""
    by_uid = {str(d.SOPInstanceUID): d for d in sources}
    refs = [r for f in result.findings if f.present for r in f.per_image]
    for n, ref in enumerate(dict.fromkeys(refs)):
        if n == MAX_SC:
            out.notes.append(f"SC: only the first {MAX_SC} images with findings")
            break
        if (src := by_uid.get(ref.sop_uid)) is None:
            continue

        def build(notes: list[str], src: Dataset = src, ref: Any = ref, n: int = n) -> Dataset:
            return build_sc(
                src,
                ref,
                result,
                manifest,
                lang,
                instance_number=n + 1,
                uid_root_seed=seed or None,
                series_number=series_number(manifest.name, "SC"),
                notes=notes,
            )

        out.attempt("SC", build, [src], what=f"image {n + 1} with a finding: ")


def _has_positive_mask(result: InferenceResult) -> bool:
    """Whether a SEG has anything to encode (as ``build_seg`` decides)."""
    return any(
        isinstance(m, np.ndarray) and bool(m.any())
        for f in result.findings
        for m in f.per_image.values()
    )


def _has_something_to_draw(result: InferenceResult) -> bool:
    """Whether a GSPS has anything to draw (as ``build_gsps`` decides): a score, a box,
    or a mask with a pixel set."""
    for f in result.findings:
        for where in f.per_image.values():
            if isinstance(where, np.ndarray):
                if where.any():
                    return True
            elif not isinstance(where, list) or where:
                return True
    return False


def _from_a_library(exc: BaseException) -> bool:
    """Whether a library refused something (the exception, or the cause our own error
    wraps, is not a CdsError): then a source value may be at fault."""
    inner: BaseException | None = exc
    while inner is not None:
        if not isinstance(inner, CdsError):
            return True
        inner = inner.__cause__
    return False


def invalid_attributes(sources: Sequence[Dataset]) -> list[str]:
    """The top-level attributes of ``sources`` whose values pydicom finds invalid for
    their VR (too long, bad characters, not a date), as "(gggg,eeee) Keyword": where an
    encoder failed on a source value, which one, never the value itself."""
    found: dict[int, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote the values
        for ds in sources:
            for elem in ds:
                if elem.VR not in _CHECKED_VRS or elem.tag in found or elem.tag.is_private:
                    continue
                values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
                try:
                    for v in values:
                        if v not in (None, ""):
                            validate_value(elem.VR, str(v), config.RAISE)
                except (ValueError, TypeError):
                    found[elem.tag] = (
                        f"({elem.tag.group:04X},{elem.tag.element:04X}) {elem.keyword}"
                    )
                if len(found) == _ATTRIBUTES_NAMED:
                    return list(found.values())
    return list(found.values())


def write_results(root: Path, study_key: str, objects: Sequence[Dataset]) -> list[Path]:
    """Write each object durably as ``<root>/<study_key>/<Modality>/<SOPInstanceUID>.dcm``."""
    paths = []
    for ds in objects:
        folder = root / study_key / str(ds.Modality)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{ds.SOPInstanceUID}.dcm"
        tmp = final.with_suffix(".part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(file_bytes(ds))  # as made in a worker, or encoded now
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        paths.append(final)
    return paths
