"""issue 16 item 6: every kind of SR cds makes passes pixelmed's SR validator with no error.

pixelmed (``tests/pixelmed.py``) checks the SR against the Comprehensive 3D SR IOD and
the PS3.16 templates (TID 1500, 1501, 300, 320, 4019, ...); dciodvfy checks it too. The
SRs are those the node makes (``cds.results.encode``):

- every bundled model on every corpus series (../shared/dicom) the example routing
  (deploy/routing.example.yaml) routes to it, as ``cds process`` plans it, on the first
  2 files of the series (the groups of an SR repeat one layout: more images only add
  groups and validation time). The language alternates from series to series, and
  so do the SEG reference and its absence for a pipeline that makes a SEG; a model's
  only series is encoded in both languages. Each model is thus validated in both
  languages, and the bone model in each language with and without its SEG: the
  language changes only texts and the language code, the same on every series; a
  series changes the attributes copied from it, the same in either language (one
  JVM for everything still takes some 30 s). A series the node does not run the
  model on (outside its declared use, no pixel data, not DICOM) gets no SR, as on
  the node; every other one must get its SR;
- the vendor-shaped models of tests/inference (``analytic``): a detector, a volume
  segmenter (with and without its SEG), a softmax classifier and a multi-label
  (sigmoid) classifier.

Errors must be none. Warnings must be only the ``pixelmed.KNOWN_WARNINGS``, each with
why it stays (items of the current standard, or that OHIF needs, which pixelmed's 2022
templates do not list). One deliberately invalid SR (a NUM INFERRED FROM both an IMAGE
and a SCOORD, TID 320) proves the validator's errors are seen. All files go through
one JVM.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cds.errors import CdsError
from cds.findings import InferenceResult
from cds.inference import manifest as mf
from cds.inference import synthetic
from cds.inference.images import decode
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.offline import Request, _load_models, plan_jobs
from cds.results.encode import encode
from tests import pixelmed
from tests.inference.analytic import (
    bbox_detector,
    label,
    load,
    manifest,
    mean_classifier,
    threshold_segmenter,
)
from tests.inference.test_detection_e2e import NEAREST_HALF, ct, detector_manifest
from tests.inference.test_segmentation_e2e import NEAREST, seg_manifest, series
from tests.inference.test_vendor_identity_uids import classifier_manifest

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "dicom"
MODELS = REPO / "models"
ROUTING = REPO / "deploy" / "routing.example.yaml"
IMAGES_PER_SERIES = 2
SEGMENT_REF = "ReferencedSegmentNumber"
#: a series the node does not run the model on: outside its declared use, or no pixel
#: data, not DICOM (the node's job fails): no SR there either
NOT_RUN = "not run"
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
#: what dciodvfy says of UIDs copied from a source whose UIDs are invalid
_INHERITED = re.compile(r"UID|invalid data values for Value Representations")


@dataclass(frozen=True)
class Case:
    """One SR: what made it (no data value: model, series folder, language, SEG)."""

    model: str
    where: str
    lang: str
    with_seg: bool
    path: Path
    #: a source's Study, Series or SOP Instance UID is not a valid UID (the malformed
    #: corpus): the SR repeats it to reference its study, and dciodvfy says so
    invalid_source_uids: bool = False

    @property
    def name(self) -> str:
        seg = "with its SEG" if self.with_seg else "without SEG"
        return f"{self.model} on {self.where}, {self.lang}, {seg}"


@dataclass
class Made:
    cases: list[Case]
    #: the routed (model, series) that got no SR: the reason, by (model, where)
    not_made: dict[tuple[str, str], str]
    models_not_loaded: set[str]
    invalid: Path  # the deliberately invalid SR


@dataclass(frozen=True)
class Run:
    """A model's result on one series, to encode."""

    model: str
    where: str
    manifest: mf.Manifest
    sources: list[Dataset]
    result: InferenceResult
    makes_seg: bool  # the pipeline makes a SEG (the SR may reference it)

    @property
    def invalid_source_uids(self) -> bool:
        keys = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        return not all(_UID.fullmatch(str(ds.get(k, ""))) for ds in self.sources for k in keys)


def _run(model: str, where: str, runner: ModelRunner, files: Sequence[Path], *,
         makes_seg: bool) -> Run | str:  # fmt: skip
    """The model on ``files``, or why the node would make nothing of them."""
    try:
        sources = [pydicom.dcmread(f) for f in files]
        result = runner.run(decode(list(files)))
    except (CdsError, OSError, pydicom.errors.InvalidDicomError) as exc:
        return f"{NOT_RUN}: {type(exc).__name__}"
    return Run(model, where, runner.manifest, sources, result, makes_seg)


def _encode(folder: Path, run: Run, variants: Sequence[tuple[str, bool]], made: Made) -> None:
    """The SR of ``run`` in each (language, with its SEG) of ``variants``."""
    for lang, with_seg in variants:
        kinds = ["SEG", "SR"] if with_seg else ["SR"]
        objects, notes = encode(run.sources, run.result, run.manifest, kinds, lang, seed="v")
        srs = [o for o in objects if o.Modality == "SR"]
        if not srs:
            made.not_made[(run.model, run.where)] = f"no SR: {notes}"
            return
        path = folder / f"{len(made.cases):03d}-{run.model.replace(' ', '-')}-{lang}.dcm"
        srs[0].save_as(path, enforce_file_format=True)
        made_seg = any(o.Modality == "SEG" for o in objects)
        case = Case(run.model, run.where, lang, made_seg, path, run.invalid_source_uids)
        made.cases.append(case)


#: the (language, with its SEG) of a model's n-th series: languages alternate, and so
#: do the SEG and its absence for a pipeline that makes one
_LANGS = (("en", False), ("fr", False))
_LANGS_AND_SEG = (("en", True), ("fr", False), ("en", False), ("fr", True))


#: bundled models the example routing does not route (the performance U-Net: no
#: clinical meaning), each run on the series routed to a model of the same input
NOT_ROUTED = {"cds-ref-perf-unet": "cds-ref-ct-bone"}


def _corpus(folder: Path, made: Made) -> None:
    """Every bundled model on every series the example routing routes to it."""
    slots = DeviceSlots(1, 1)
    req = Request(paths=[CORPUS], out=folder, model_dirs=[MODELS], routing=ROUTING)
    jobs, models, _ = plan_jobs(req, slots)
    runs: dict[str, list[Run]] = {}
    for job in jobs:
        model = models.get(job.model)
        files = sorted(job.series.files)[:IMAGES_PER_SERIES]
        where = files[0].relative_to(CORPUS).as_posix() + (" ..." if len(files) > 1 else "")
        if model is None or model.status != "ready":
            made.models_not_loaded.add(job.model)
            continue
        if job.status != "run":  # outside the model's declared use: the node skips it too
            made.not_made[(job.model, where)] = f"{NOT_RUN}: {job.status}"
            continue
        run = _run(job.model, where, ModelRunner(model, slots), files,
                   makes_seg="SEG" in job.kinds)  # fmt: skip
        if isinstance(run, str):
            made.not_made[(job.model, where)] = run
        else:
            runs.setdefault(job.model, []).append(run)
    unrouted = _load_models(req, set(NOT_ROUTED), slots)
    for name, like in NOT_ROUTED.items():  # on the first series routed to its like
        model = unrouted.get(name)
        if model is None or model.status != "ready":
            made.models_not_loaded.add(name)
            continue
        job = next(j for j in jobs if j.model == like and j.status == "run")
        files = sorted(job.series.files)[:IMAGES_PER_SERIES]
        where = files[0].relative_to(CORPUS).as_posix() + " ..."
        run = _run(name, where, ModelRunner(model, slots), files, makes_seg=True)
        assert not isinstance(run, str), run
        runs[name] = [run]
    for model_runs in runs.values():
        for k, run in enumerate(model_runs):
            cycle = _LANGS_AND_SEG if run.makes_seg else _LANGS
            # a model's only series is encoded in both languages
            alone = len(model_runs) == 1
            _encode(folder, run, cycle[:2] if alone else [cycle[k % len(cycle)]], made)


def _vendor(folder: Path, tmp: Path, made: Made) -> None:
    """The vendor-shaped models of tests/inference."""
    detector = detector_manifest(
        {"format": "xyxy"},
        steps=[{"step": "resize", "size": [24, 40], **NEAREST_HALF}],
        size=(24, 40),
    )
    files, _ = ct(tmp / "det", "pixelmed-det")
    runners: list[tuple[str, mf.Manifest, bytes, list[Path], list[tuple[str, bool]]]] = [
        ("detector", detector, bbox_detector(size=(24, 40)), files, [("en", False)])
    ]
    volume = seg_manifest(
        volume=True, layout="NDHW", encoding="labelmap", classes=1, index=1, steps=[NEAREST]
    )
    model = threshold_segmenter(volume=True, output_layout="NDHW", encoding="labelmap")
    files, _ = series(tmp / "vol", "pixelmed-vol", shuffle=False)
    runners.append(("volume segmenter", volume, model, files, [("en", True), ("fr", False)]))
    img = np.full((40, 40), 100.0)
    img[:, :10] = 3000
    cxr = synthetic.write([synthetic.projection(img, "pixelmed", photometric="MONOCHROME2")],
                          tmp / "cxr")  # fmt: skip
    softmax = classifier_manifest()
    runners.append(("softmax classifier", softmax, mean_classifier(20), cxr, [("fr", False)]))
    runners.append(("sigmoid classifier", _multilabel(softmax), mean_classifier(20), cxr,
                    [("en", False)]))  # fmt: skip
    for name, m, onnx, paths, variants in runners:
        runner = load(onnx, m, tmp / "m" / name.replace(" ", "-"))
        run = _run(name, "synthetic images", runner, paths, makes_seg=True)
        assert not isinstance(run, str), (name, run)
        _encode(folder, run, variants, made)


def _multilabel(softmax: mf.Manifest) -> mf.Manifest:
    """The softmax classifier's tensor read as two independent (sigmoid) labels."""
    out = softmax.output.model_dump(mode="json", exclude_none=True)
    out["tensors"][0]["activation"] = "sigmoid"
    out["labels"] = [label(0, "Mostly dark", 0.3), label(1, "Mostly bright", 0.7)]
    return manifest(
        name="acme-multilabel",
        kind="projection",
        input_spec=softmax.input.model_dump(mode="json", exclude_none=True, exclude={"kind"}),
        output=out,
    )


def _invalid(sr: Path, folder: Path) -> Path:
    """``sr`` (with a segment) whose Probability is also INFERRED FROM the segment: a NUM
    with both an IMAGE and a SCOORD, which TID 320 forbids."""
    ds = pydicom.dcmread(sr)
    measurements = next(
        c for c in ds.ContentSequence
        if c.ValueType == "CONTAINER" and c.ConceptNameCodeSequence[0].CodeValue == "126010"
    )  # fmt: skip
    group = measurements.ContentSequence[0]
    segment = next(
        c for c in group.ContentSequence
        if c.ValueType == "IMAGE" and SEGMENT_REF in c.ReferencedSOPSequence[0]
    )  # fmt: skip
    num = next(c for c in group.ContentSequence if c.ValueType == "NUM")
    item = copy.deepcopy(segment)
    item.RelationshipType = "INFERRED FROM"
    num.ContentSequence.insert(0, item)
    path = folder / "invalid.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is missing: {CORPUS}")
    folder = tmp_path_factory.mktemp("sr")
    out = Made([], {}, set(), folder / "invalid.dcm")
    _corpus(folder, out)
    _vendor(folder, tmp_path_factory.mktemp("vendor"), out)
    with_segment = next(c for c in out.cases if c.with_seg)
    out.invalid = _invalid(with_segment.path, folder)
    return out


@pytest.fixture(scope="module")
def reports(made: Made) -> dict[Path, pixelmed.Report]:
    pixelmed.require()
    paths = [c.path for c in made.cases] + [made.invalid]
    return dict(zip(paths, pixelmed.validate(paths), strict=True))


def test_every_sr_cds_makes_passes_pixelmed_with_no_error(
    made: Made, reports: dict[Path, pixelmed.Report]
) -> None:
    errors = {c.name: reports[c.path].errors for c in made.cases if reports[c.path].errors}
    assert errors == {}


def test_pixelmed_warns_only_of_items_its_2022_templates_do_not_list(
    made: Made, reports: dict[Path, pixelmed.Report]
) -> None:
    """Each warning left is one of ``pixelmed.KNOWN_WARNINGS`` (see the reason of each)."""
    unknown = {
        c.name: reports[c.path].unknown_warnings()
        for c in made.cases
        if reports[c.path].unknown_warnings()
    }
    assert unknown == {}


def test_the_validator_tells_an_invalid_sr(
    made: Made, reports: dict[Path, pixelmed.Report]
) -> None:
    errors = reports[made.invalid].errors
    assert errors, "the harness reads pixelmed's errors"
    assert all("Template 320" in e for e in errors), errors


def test_every_sr_passes_dciodvfy(made: Made) -> None:
    exe = shutil.which("dciodvfy")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI: dciodvfy missing (Debian package dicom3tools, installed by .ci/run)")
        pytest.skip("dciodvfy missing (Debian package dicom3tools)")
    errors = {}
    for c in made.cases:
        proc = subprocess.run([exe, str(c.path)], capture_output=True, text=True, check=False)
        found = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("Error")]
        if c.invalid_source_uids:  # the SR must name its study and sources as they are
            found = [x for x in found if not _INHERITED.search(x)]
        if found:
            errors[c.name] = found
    assert errors == {}


def test_the_srs_cover_every_model_language_and_seg_option(made: Made) -> None:
    """Every bundled model in both languages, the segmentation models in both with and
    without their SEG (read from the SR: a segment reference or none); every routed
    series the node decodes gets its SR."""
    if made.models_not_loaded and os.environ.get("CI") != "true":
        pytest.skip(f"models not loaded here: {', '.join(sorted(made.models_not_loaded))}")
    assert made.models_not_loaded == set()
    bundled = {p.name for p in MODELS.iterdir() if (p / "manifest.yaml").is_file()}
    seen: dict[str, set[tuple[str, bool]]] = {}
    for c in made.cases:
        ds = pydicom.dcmread(c.path)
        refs = [
            r for item in _walk(ds.ContentSequence) if item.ValueType == "IMAGE"
            for r in item.ReferencedSOPSequence
        ]  # fmt: skip
        seen.setdefault(c.model, set()).add((c.lang, any(SEGMENT_REF in r for r in refs)))
    assert bundled <= set(seen)
    for model, variants in seen.items():
        assert {lang for lang, _ in variants} >= ({"en", "fr"} if model in bundled else set())
    both = {(lang, s) for lang in ("en", "fr") for s in (True, False)}
    assert seen["cds-ref-ct-bone"] == both
    assert {s for _, s in seen["volume segmenter"]} == {True, False}
    not_encoded = {k: v for k, v in made.not_made.items() if not v.startswith(NOT_RUN)}
    assert not_encoded == {}


def _walk(items: Sequence[Dataset]) -> list[Dataset]:
    out = []
    for item in items:
        out.append(item)
        out.extend(_walk(item.get("ContentSequence", [])))
    return out
