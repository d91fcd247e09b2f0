"""The offline mode (``cds process``): route, infer and encode DICOM files on disk.

No network and no spool: the files are read where they are and routed as the node
routes a study (``route``, with the node's disabled models, loaded models and declared
use), or handed to one model with ``model=``; each selected series then goes through
the node's own series run (``cds.offline_node``: a ``SeriesWork`` to the compute seam,
the objects written with ``write_results`` under
``<out>/<StudyInstanceUID>/<Modality>/``, the results recorded in a temporary state
store removed at the end), so a node given the same files makes the same objects: the
same bytes but for the creation times and a SEG's Dimension Organization UID, which
highdicom makes at random (issue 18, ``tests/test_offline_node.py``).

The study folder is the Study Instance UID itself, not the node's pseudonymous
study key: that key is an HMAC under a per-node secret, which an offline run on a
vendor's or a tester's machine does not have, and the result objects carry the
Study Instance UID anyway. A UID that is not a valid folder name (not digits and
dots) gets ``study-<SHA-256 of the UID, 16 hex digits>`` instead.

``<out>/process.json`` (``cds.offline_record``) records what a later run needs to
reproduce the result and check it is the same: cds version, and per series the input
SOP Instance UIDs, the model (name, version, SHA-256, provider), the kinds asked, the
objects written, the kinds not produced and why, the findings and the timings. No
patient attribute (name, ID, birth date, accession number) and no input file path
goes into it, and no error quotes a data value (``cds.errors.safe_message``). A series
some of whose objects could not be made is ``partial``: the others are written. Each
object's notes are kept, as in the node's job record. A series the node refuses
(0xC221: a UID not valid) is skipped, naming its file (under the input given) and
attribute (issue 16).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from cds.compute import SeriesOutcome, SeriesWork, run_work
from cds.config import IngestLimits
from cds.errors import CdsError, ModelError, RoutingError, error_text
from cds.inference import manifest as mf
from cds.inference.constraints import status_of
from cds.inference.preread import PreRead
from cds.inference.registry import LoadedModel, ModelRegistry, declared_use_of, find_packages
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots, ProviderChoice
from cds.ingest.instance import is_valid_uid
from cds.offline_node import OfflineNode
from cds.offline_record import kind_of, record_done, run_record, series_entry, write_record
from cds.routing.router import PipelinePlan, SeriesHeader, read_headers, route
from cds.routing.rules import RoutingFile, load_routing

#: result object kinds, in the order the encoder makes them
KINDS = ("SEG", "SR", "GSPS", "SC")
#: the run's record (``cds.offline_record``), in the output folder
RECORD_NAME = "process.json"
_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")  # as the node checks


class InputError(CdsError):
    """The files or options given to ``cds process`` cannot be processed."""


@dataclass
class Request:
    """What ``cds process`` was asked to do."""

    paths: list[Path]
    out: Path
    model_dirs: list[Path]
    providers: ProviderChoice = "cpu"
    lang: str = "en"
    routing: Path | None = None
    model: str | None = None
    kinds: list[str] | None = None  # with ``model`` only; None = what the model declares
    model_sha256: str | None = None  # with ``model`` only: refuse another model.onnx
    disabled_models: list[str] = field(default_factory=list)
    calling_ae: str = ""
    sessions_per_gpu: int = 1
    sessions_cpu: int = 1
    gpus: list[int] = field(default_factory=list)  # the GPU ids sessions are placed on
    warm: bool = True


@dataclass
class Job:
    """The node's routing plan of one pipeline (``PipelinePlan``: model, results,
    fallbacks) for one series; ``--model`` makes a plan of its own. Not the node's job
    row: the series run makes that (``OfflineNode.run_series``)."""

    study_uid: str
    series: SeriesHeader
    plan: PipelinePlan
    origin: dict[str, str]  # {"rule", "pipeline"} or {"model": "--model"}
    status: str = "run"  # or "skipped: ...", for this series

    @property
    def model(self) -> str:
        return self.plan.model

    @property
    def kinds(self) -> list[str]:
        return list(self.plan.results)


@dataclass
class Outcome:
    """What the run did: ``written`` (path relative to ``out``, object), and every
    asked thing that was not produced, one message each."""

    written: list[tuple[str, Dataset]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def study_folder(study_uid: str) -> str:
    """The folder name of a study under the output folder (see the module docstring)."""
    if is_valid_uid(study_uid):
        return study_uid
    return "study-" + hashlib.sha256(study_uid.encode("utf-8", "replace")).hexdigest()[:16]


def parse_kinds(text: str) -> list[str]:
    """``"SR,seg"`` -> ``["SR", "SEG"]``; ValueError names the unknown kind."""
    kinds = [k.strip().upper() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"must be a comma-separated list of {', '.join(KINDS)}, not {text!r}")
    return list(dict.fromkeys(kinds))


# --- inputs, routing and models --------------------------------------------------
def _read_inputs(paths: Sequence[Path]) -> tuple[dict[str, list[SeriesHeader]], list[str]]:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"no such file or folder: {', '.join(missing)}")
    studies, skipped = read_headers(paths, limits=IngestLimits())  # local files: bounded
    if not studies:
        why = (
            f" ({len(skipped)} file(s) not readable as DICOM, e.g. {skipped[0]})"
            if skipped
            else " (no file)"
        )
        raise InputError(f"no DICOM study found in {', '.join(map(str, paths))}{why}")
    return studies, skipped


def _packages(dirs: Sequence[Path]) -> tuple[dict[str, Path], list[str]]:
    """Model name -> package folder (first found wins, as in the registry); and the
    packages whose manifest cannot be read."""
    by_name: dict[str, Path] = {}
    broken: list[str] = []
    for path in find_packages(dirs):
        try:
            name = mf.load_manifest(path).name
        except ModelError as exc:
            broken.append(str(exc).splitlines()[0])
            continue
        by_name.setdefault(name, path)
    return by_name, broken


def _load_models(req: Request, names: set[str], slots: DeviceSlots) -> dict[str, LoadedModel]:
    """Load (validate, open, warm up) only the packages of ``names``, through the
    node's registry. A name with no package is simply absent from the result."""
    missing_dirs = [str(d) for d in req.model_dirs if not d.exists()]
    if missing_dirs:
        raise InputError(f"model folder not found: {', '.join(missing_dirs)} (--models)")
    by_name, _ = _packages(req.model_dirs)
    paths = [by_name[n] for n in sorted(names) if n in by_name]
    registry = ModelRegistry(paths, req.providers, slots, warm=req.warm)
    return {m.name: m for m in registry.load()}


def _unknown_model(req: Request, name: str) -> InputError:
    by_name, broken = _packages(req.model_dirs)
    dirs = ", ".join(str(d) for d in req.model_dirs) or "(none)"
    known = ", ".join(sorted(by_name)) or "none"
    extra = f"; unreadable packages: {'; '.join(broken)}" if broken else ""
    return InputError(
        f"--model: unknown model {name!r}: no package of that name in {dirs} "
        f"(models found: {known}){extra}"
    )


def _jobs_for_model(req: Request, studies: dict[str, list[SeriesHeader]]) -> list[Job]:
    """``--model``: the model runs on every series of a modality it accepts."""
    assert req.model is not None
    by_name, _ = _packages(req.model_dirs)
    if req.model not in by_name:
        raise _unknown_model(req, req.model)
    manifest = mf.load_manifest(by_name[req.model])
    declared = list(manifest.output.results)
    kinds = req.kinds if req.kinds is not None else declared
    extra = [k for k in kinds if k not in declared]
    if extra:
        raise InputError(
            f"--results: {req.model} makes {', '.join(declared)}, not {', '.join(extra)} "
            f"(manifest output.results of {by_name[req.model]})"
        )
    accepted = set(manifest.input.modality)
    plan = PipelinePlan("--model", req.model, list(kinds), [], "run")
    jobs = [
        Job(
            uid,
            s,
            plan,
            {"model": "--model"},
            status_of(req.model, manifest.input, s.attrs, s.instance_count),  # issue 15
        )
        for uid, series in studies.items()
        for s in series
        if s.attrs.get("Modality") in accepted
    ]
    if not jobs:
        found = sorted({str(s.attrs.get("Modality", "?")) for ss in studies.values() for s in ss})
        raise InputError(
            f"--model: {req.model} takes Modality {', '.join(sorted(accepted))} "
            f"(manifest input.modality); the inputs have {', '.join(found)}"
        )
    return jobs


def _status(p: PipelinePlan, series_uid: str) -> str:
    """The plan's status, or why the series is outside its model's declared use."""
    why = p.outside.get(series_uid)
    return f"skipped: outside the declared use of {p.model} ({why})" if why else p.status


def _jobs_for_routing(
    req: Request,
    rf: RoutingFile,
    studies: dict[str, list[SeriesHeader]],
    loaded: set[str] | None,
) -> list[Job]:
    """The node's routing decision for each study: one job per selected series and
    matched pipeline, with the node's status (run, skipped: model disabled/not loaded)."""
    jobs: list[Job] = []
    for uid, series in studies.items():
        for s in series:
            s.calling_ae = req.calling_ae
        plan = route(
            series,
            rf,
            disabled_models=req.disabled_models,
            loaded_models=loaded,
            declared_use=declared_use_of(req.model_dirs),  # issue 15
        )
        for verdict, p in plan.runs:
            origin = {"rule": verdict.rule, "pipeline": p.pipeline}
            jobs.extend(
                Job(uid, s, p, origin, _status(p, s.series_uid))
                for s in series
                if s.series_uid in verdict.selected
            )
    return jobs


def plan_jobs(
    req: Request, slots: DeviceSlots
) -> tuple[list[Job], dict[str, LoadedModel], list[str]]:
    """Read the inputs, decide what runs, load the models needed.

    Returns the jobs, the loaded models by name, and the input files not read.
    Raises InputError, RoutingError (RoutingFileError: every problem of the file) or
    ModelError, naming the file or option at fault.
    """
    if (req.routing is None) == (req.model is None):
        raise InputError("give either a routing file (--routing) or a model (--model)")
    rf = None
    if req.routing is not None:
        if not req.routing.is_file():
            raise InputError(f"routing file not found: {req.routing}")
        rf = load_routing(req.routing)  # an invalid file is refused before any DICOM is read
    studies, skipped = _read_inputs(req.paths)
    if rf is None:
        assert req.model is not None
        jobs = _jobs_for_model(req, studies)
        models = _load_models(req, {req.model}, slots)
        m = models.get(req.model)
        if m is None or m.status != "ready":
            errors = "; ".join(m.errors) if m is not None else "not found"
            raise ModelError(f"--model: {req.model} cannot be loaded: {errors}")
        want = (req.model_sha256 or "").lower()
        if want and not (m.sha256 or "").startswith(want):
            raise ModelError(
                f"--sha256: model.onnx of {req.model} in {m.path} has SHA-256 {m.sha256}, "
                f"not {want}: another build of the model than the one asked for"
            )
        return jobs, models, skipped
    wanted = _jobs_for_routing(req, rf, studies, None)
    if not wanted:
        n = sum(len(s) for s in studies.values())
        raise RoutingError(
            f"{req.routing}: no rule matched any of the {n} series in {len(studies)} "
            f"study(ies); `cds route explain --routing {req.routing} PATH...` says why"
        )
    models = _load_models(req, {j.model for j in wanted if j.status == "run"}, slots)
    ready = {name for name, m in models.items() if m.status == "ready"}
    return _jobs_for_routing(req, rf, studies, ready), models, skipped


# --- running ----------------------------------------------------------------------
def _sop_uids(files: Sequence[Path]) -> list[str]:
    return [
        str(dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
        for f in files
    ]


def _refused(job: Job, uids: Sequence[str], paths: Sequence[Path]) -> tuple[Path, str] | None:
    """The first input file of ``job`` with a UID the node refuses (0xC221), and why."""
    for uid, f in zip(uids, job.series.files, strict=True):
        values = (job.study_uid, job.series.series_uid, uid)
        bad = [n for n, v in zip(_UIDS, values, strict=True) if not is_valid_uid(v.strip())]
        if bad:
            under = (f.relative_to(p).as_posix() for p in paths if f.is_relative_to(p) and f != p)
            return f, f"skipped: {', '.join(bad)} of input file {next(under, f.name)} not valid"
    return None


class _Compute:
    """The node's thread executor (``cds.compute.Compute``, kind thread) on the run's
    loaded models: ``SeriesWork`` in, ``SeriesOutcome`` out; keeps the last outcome and
    the time it took (decode, inference, encoding) for process.json."""

    workers = 0
    preread: PreRead | None = None  # one series, read by its job

    def __init__(self, models: dict[str, LoadedModel], slots: DeviceSlots) -> None:
        self._models = models
        self._slots = slots
        self.last: tuple[SeriesOutcome, float] | None = None

    def run(self, work: SeriesWork) -> SeriesOutcome:
        self.last = None
        t0 = time.perf_counter()
        done = run_work(work, ModelRunner(self._models[work.model], self._slots))
        self.last = (done, time.perf_counter() - t0)
        return done

    def describe(self) -> dict[str, object]:
        return {"kind": "thread", "workers": 0}

    def workers_info(self) -> list[dict[str, object]]:
        return []

    def shutdown(self) -> None:
        return None


def _node(req: Request, models: dict[str, LoadedModel], slots: DeviceSlots) -> OfflineNode:
    return OfflineNode(
        out=req.out,
        providers=req.providers,
        lang=req.lang,
        compute=_Compute(models, slots),
        routing=req.routing,
    )


def _run_job(
    job: Job,
    *,
    model: LoadedModel | None,
    req: Request,
    slots: DeviceSlots,
    out: Outcome,
    say: Callable[[str], None],
    node: OfflineNode | None = None,
) -> dict[str, Any]:
    """One planned job through the node's series run (``node``, or one of its own):
    its process.json entry; what was written and not made goes into ``out``."""
    s = job.series
    entry = series_entry(s, origin=job.origin, kinds=job.kinds, model=model, name=job.model)
    where = f"series {entry['series_instance_uid']}"  # no description, no invalid UID
    if job.status != "run" or model is None or model.status != "ready":
        reason = job.status if job.status != "run" else "skipped: model not loaded"
        if reason.endswith("not loaded"):
            dirs = ", ".join(map(str, req.model_dirs))
            why = "; ".join(model.errors) if model is not None else f"no such package in {dirs}"
            reason = f"{reason} ({why})"[:500]
        entry["status"] = reason
        out.problems.append(f"{where}: {job.model}: {reason}")
        return entry
    # routing read each file's SOP Instance UID (files without a preamble too)
    uids = s.sop_uids if len(s.sop_uids) == len(s.files) else _sop_uids(s.files)
    refused = _refused(job, uids, req.paths)
    if refused is not None:  # as the node refuses it at receive: never its values
        entry["status"] = refused[1]
        out.problems.append(f"{job.model}: {refused[1]}")
        say(f"{refused[0]}: {refused[1]} (the node refuses it at receive: 0xC221)")
        return entry
    entry["inputs"] = {"count": len(uids), "sop_instance_uids": sorted(uids)}
    folder = study_folder(job.study_uid)
    with ExitStack() as stack:
        if node is None:
            node = stack.enter_context(_node(req, {model.name: model}, slots))
        runner = node.compute
        assert isinstance(runner, _Compute)
        ran = node.run_series(folder, job.plan, model, replace(s, sop_uids=list(uids)))
    if ran.error is not None or runner.last is None:
        why = error_text(ran.error) if ran.error is not None else "no outcome"
        entry["status"] = f"failed: {why}"[:500]  # never a data value: process.json may travel
        out.problems.append(f"{where}: {job.model} failed: {why}")
        return entry
    done, run_s = runner.last
    written = [(f"{folder}/{ds.Modality}/{ds.SOPInstanceUID}.dcm", ds) for ds in done.objects]
    for rel, ds in written:
        out.written.append((rel, ds))
        say(f"wrote {rel}  {kind_of(ds)}  {ds.get('SeriesDescription', '')}")
    problems = record_done(
        entry,
        done,
        written,
        kinds=job.kinds,
        lang=req.lang,
        run_s=run_s,
        write_s=ran.seconds - run_s,  # writing and recording, as the node does
    )
    out.problems.extend(f"{where}: {job.model}: {p}" for p in problems)
    return entry


def run(req: Request, say: Callable[[str], None] = lambda _: None) -> Outcome:
    """Process the inputs as the node would, write the objects and ``process.json``.

    ``say`` receives one line per object written. Raises InputError, RoutingError
    (RoutingFileError lists every problem of the file) or ModelError before anything is
    written when the inputs, the routing file or the model are at fault.
    """
    t_start = time.perf_counter()
    slots = DeviceSlots(req.sessions_per_gpu, req.sessions_cpu, req.gpus)
    jobs, models, skipped = plan_jobs(req, slots)
    try:
        req.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out: cannot create the folder {req.out} ({exc.strerror})") from exc
    out = Outcome()
    studies: dict[str, dict[str, Any]] = {}
    with _node(req, models, slots) as node:
        for job in jobs:
            uid = job.study_uid if is_valid_uid(job.study_uid.strip()) else None  # not quoted
            study = studies.setdefault(
                job.study_uid, {"study_instance_uid": uid, "folder": study_folder(job.study_uid)}
            )
            study.setdefault("series", []).append(
                _run_job(
                    job,
                    model=models.get(job.model),
                    req=req,
                    slots=slots,
                    out=out,
                    say=say,
                    node=node,
                )
            )
    out.record = run_record(
        model=req.model,
        routing=req.routing,
        lang=req.lang,
        providers=req.providers,
        inputs_not_read=len(skipped),
        studies=list(studies.values()),
        problems=out.problems,
        seconds=time.perf_counter() - t_start,
    )
    write_record(req.out / RECORD_NAME, out.record)
    return out
