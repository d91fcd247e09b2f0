"""Run the routed pipelines of a completed study (on the executor).

route -> one job per pipeline: skipped (model disabled / not loaded), or run the
model on each selected series and record the inference. Encoding result
objects and delivering them (issue 5) plug in after the inference here.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset

from cds.audit import AuditEvent
from cds.compute import SeriesOutcome, SeriesWork, inputs_seed, process_series, seed_of
from cds.domain import (
    JobState,
    ObjectOutcome,
    ResultObject,
    ResultState,
    StudyState,
)
from cds.errors import CdsError, error_text
from cds.faults import failpoint
from cds.feedback.findings import findings_of
from cds.inference.registry import LoadedModel
from cds.logging import get_logger
from cds.observatory.drift import record_run
from cds.results.encode import write_results
from cds.results.kos import build_rejection_kos
from cds.results.text import job_summary
from cds.routing.headers import spool_headers
from cds.routing.router import (
    PipelinePlan,
    RuleVerdict,
    SeriesHeader,
    evaluate,
    route,
)
from cds.routing.rules import Rule
from cds.store.backfill import BACKFILL_PRIORITY_DROP, BACKFILL_RECHECK_S, backfill_mark

if TYPE_CHECKING:
    from cds.audit import AuditTrail
    from cds.compute import Runner
    from cds.config import Settings
    from cds.delivery.notify import Notifier
    from cds.delivery.worker import DeliveryWorker
    from cds.inference.registry import ModelRegistry
    from cds.ingest.spool import Spool
    from cds.routing.manager import RoutingManager
    from cds.store.base import StateStore


class Node(Protocol):
    """What the pipeline uses of the node: its parts, and two ways to hand a study back
    (``cds.orchestrator.Node`` is one). The model's own work crosses ``compute`` as a
    value (``SeriesWork``), so it may run in another process."""

    @property
    def settings(self) -> Settings: ...
    @property
    def spool(self) -> Spool: ...
    @property
    def store(self) -> StateStore: ...
    @property
    def routing(self) -> RoutingManager: ...
    @property
    def models(self) -> ModelRegistry: ...
    @property
    def compute(self) -> Runner: ...
    @property
    def audit(self) -> AuditTrail: ...
    @property
    def notifier(self) -> Notifier: ...
    @property
    def delivery(self) -> DeliveryWorker: ...
    def submit_study(self, study_key: str) -> None: ...
    def recheck_at(self, study_key: str, at: float) -> None: ...


__all__ = [  # the series step lives in cds.compute; these names stay importable from here
    "RERUN_EVENTS",
    "SeriesOutcome",
    "SeriesWork",
    "inputs_seed",
    "process_series",
    "run_study",
    "study_series",
]

log = get_logger("cds.pipeline")
_SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture (and its multi-frame variants)


def study_series(node: Node, study_key: str) -> list[SeriesHeader]:
    """The series of a spooled study, with the newest version of each instance."""
    folder = node.spool.root / "studies" / study_key
    studies = spool_headers(folder) if folder.is_dir() else {}
    detail = node.store.get_study(study_key)
    calling = detail.summary.calling_ae if detail else ""
    series = [s for group in studies.values() for s in group]
    for s in series:
        s.calling_ae = calling
        s.files.sort()
    return series


def _quiet_time_left(node: Node, study_key: str, rules: list[RuleVerdict]) -> float:
    by_name = {r.name: r for r in node.routing.rules.rules}
    need = max(
        (
            c.quiet_time_s
            for v in rules
            if (rule := by_name.get(v.rule)) is not None
            and (c := rule.completeness) is not None
            and c.quiet_time_s is not None
        ),
        default=0.0,
    )
    detail = node.store.get_study(study_key)
    if not need or detail is None:
        return 0.0
    return max(0.0, detail.summary.last_received_at + need - time.time())


def _required_present(rule: Rule, series: list[SeriesHeader]) -> bool:
    c = rule.completeness
    if c is None or not c.required_series:
        return False
    now = datetime.now()
    return all(
        any(all(evaluate(x, s, now)[0] for x in conds) for s in series)
        for conds in c.required_series
    )


#: study history lines by which an admin asks for the study's pipelines to run again
RERUN_EVENTS = ("rerun_requested", "job_retried")


def _fresh_job(node: Node, study_key: str, kind: str, since: float) -> bool:
    """A job of this kind, not failed or cancelled, created at or after ``since``."""
    dead = (JobState.FAILED, JobState.CANCELLED)
    return any(
        j.kind == kind and j.created_at >= since and j.state not in dead
        for j in node.store.list_jobs(study_key=study_key, limit=1000)
    )


def run_study(node: Node, study_key: str, early: bool = False) -> None:
    """Route a study and run its pipelines; never raises (failures are recorded).

    ``early``: called while the study is still receiving, when a new series arrived;
    only rules whose required series are all present run, once. Otherwise the study is
    complete; a pipeline that already ran after the last instance arrived (an early
    start) is not run again. Without a routing file the node only receives.
    """
    if node.routing.path is None:
        return
    # one node at a time routes a study and decides its jobs (several nodes, one store)
    if not node.store.claim_study(study_key):
        if not early:  # the node that holds it (an early start) may be done by then
            node.recheck_at(study_key, time.time() + node.settings.assembly.check_interval_s)
        return
    try:
        _route_and_run(node, study_key, early)
    finally:
        node.store.release_study(study_key)


def _route_and_run(node: Node, study_key: str, early: bool) -> None:
    if (bf := backfill_mark(node.store, study_key)) is not None and not bf.retrieved:
        node.recheck_at(study_key, time.time() + BACKFILL_RECHECK_S)  # still being fetched
        return
    series = study_series(node, study_key)
    loaded = {m.name for m in node.models.all() if m.status == "ready"}
    rules = node.routing.rules
    plan = route(
        series,
        rules,
        disabled_models=node.routing.disabled(),
        loaded_models=loaded,
        declared_use=node.models.declared_use(),  # issue 15: never outside a model's use
    )
    by_name = {r.name: r for r in rules.rules}
    detail = node.store.get_study(study_key)
    if detail is None:
        return
    if early:
        runs = [
            (v, p)
            for v, p in plan.runs
            if (r := by_name.get(v.rule)) is not None
            and _required_present(r, series)
            and not _fresh_job(node, study_key, f"{p.pipeline}:{p.model}", 0.0)
        ]
        if runs:
            node.store.record_event(
                study_key,
                "early_start",
                "required series present: " + ", ".join(sorted({v.rule for v, _ in runs})),
            )
            _run_jobs(node, study_key, series, runs)
        return
    # a pipeline runs again when one of its series received an instance after its last
    # run (not for another series, e.g. a rejection note sent back by the PACS), or
    # when an admin asks for a re-run or a retry
    asked = max((e.at for e in detail.events if e.kind in RERUN_EVENTS), default=0.0)
    received = {s.series_uid: s.last_received_at for s in detail.series}
    runs = [
        (v, p)
        for v, p in plan.runs
        if not _fresh_job(
            node,
            study_key,
            f"{p.pipeline}:{p.model}",
            max([asked, *(received.get(u, detail.summary.last_received_at) for u in v.selected)]),
        )
    ]
    wait = _quiet_time_left(node, study_key, [r for r, _ in runs])
    if wait > 0:
        # a matched rule asks for a longer quiet time than the node's: look again later
        # (a restart resumes completed studies, so the wait survives it too)
        node.store.set_study_state(
            study_key, StudyState.COMPLETE, f"routed: waiting {wait:.0f} s more (rule quiet time)"
        )
        node.recheck_at(study_key, time.time() + wait)  # on the assembler's tick
        return
    if not plan.runs:
        node.store.set_study_state(study_key, StudyState.DONE, "routed: no rule matched")
        log.info("routing.no_match", study_key=study_key)
        return
    node.store.set_study_state(
        study_key,
        StudyState.PROCESSING,
        "routed: " + "; ".join(f"rule {r.rule!r} -> {p.pipeline} ({p.status})" for r, p in runs)
        if runs
        else "routed: every pipeline already ran after the last instance",
    )
    failed, partial = _run_jobs(node, study_key, series, runs)
    state = StudyState.FAILED if failed else StudyState.DONE
    node.store.set_study_state(
        study_key,
        state,
        f"{len(runs)} pipeline(s), {failed} failed"
        + (f", {partial} partial (not every object made)" if partial else ""),
    )


def _encoded_event(node: Node, study_key: str, out: SeriesOutcome, paths: list[Path]) -> None:
    made = ", ".join(f"{ds.Modality} {ds.SeriesDescription!s}"[:80] for ds in out.objects[:4])
    node.store.record_event(
        study_key,
        "encoded",
        f"{len(paths)} object(s): {made}{' ...' if len(out.objects) > 4 else ''}"
        + (f"; skipped {'; '.join(out.skipped)}" if out.skipped else "")
        + (f"; source attributes: {'; '.join(out.copied)}" if out.copied else ""),
    )


def run_series(
    node: Node,
    study_key: str,
    job_kind: str,
    plan: PipelinePlan,
    *,
    model: LoadedModel,
    series: SeriesHeader,
    priority: int = 0,
) -> list[ObjectOutcome]:
    """Infer, encode, keep the objects durably, then queue them for delivery (outbox),
    with the routing rule's ``priority``; returns what became of each object.

    A second run with the same content (inputs, model, manifest, language) makes the
    same objects (same UIDs): nothing is superseded and nothing already delivered is
    sent again. Otherwise (late instances, another model version, a changed threshold
    or language) the new objects supersede the current ones: the new SR lists the old
    SR as its predecessor, and the old objects are withdrawn by a rejection note.
    """
    # routing read every instance's header already: the seed needs no other read
    seed = seed_of(series.sop_uids) if series.sop_uids else inputs_seed(series.files)
    version = model.version
    prev = node.store.current_results(study_key, job_kind, series.series_uid)
    same_run = all(r.inputs_seed == seed and r.model_version == version for r in prev)
    # every current SR: the new SR names those it replaces; an SR with the same content
    # has the same UID and names none (build_sr drops its own UID), so a re-run is identical
    predecessors = [r.ref for r in prev if r.modality == "SR"]
    bf = backfill_mark(node.store, study_key)  # a backfill job: after live ones (cds backfill)
    priority -= BACKFILL_PRIORITY_DROP if bf is not None else 0
    work = SeriesWork(
        model=model.name,
        package=model.path,
        sha256=model.sha256 or "",
        providers=node.settings.inference.providers,
        files=tuple(series.files),
        kinds=tuple(plan.results),
        lang=node.settings.results.language,
        predecessors=tuple(predecessors),
        seed=seed,
        priority=priority,
        fallback=tuple(plan.fallback.items()),
    )
    out = node.compute.run(work)  # in this thread or a worker process (executor.kind)
    first = dcmread(series.files[0], stop_before_pixels=True, force=True)  # KOS, drift record
    node.store.record_event(
        study_key, "inferred", job_summary(out.result, node.settings.results.language)
    )
    root = node.settings.results_path
    paths = write_results(root, study_key, out.objects)
    failpoint("pipeline.encoded")
    _encoded_event(node, study_key, out, paths)
    made = {str(ds.SOPInstanceUID) for ds in out.objects}
    # an object that failed this time on the same inputs leaves its earlier version
    # current: it is still right, and a partial job's retry may make it again
    failed = {o.kind for o in out.outcomes if o.failed}
    rejected = [r for r in prev if r.sop_uid not in made and not (same_run and _kind(r) in failed)]

    def row(ds: Dataset, path: Path, state: ResultState) -> ResultObject:
        return ResultObject(
            sop_uid=str(ds.SOPInstanceUID),
            study_key=study_key,
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            modality=str(ds.Modality),
            path=path.relative_to(root).as_posix(),
            job_kind=job_kind,
            source_series_uid=series.series_uid,
            model_version=version,
            inputs_seed=seed,
            state=state,
            created_at=time.time(),
        )

    rows = [row(ds, path, ResultState.CURRENT) for ds, path in zip(out.objects, paths, strict=True)]
    if rejected:  # withdraw them from the PACS too (IHE IOCM rejection note)
        rec = out.result.record
        kos = build_rejection_kos(
            first,
            [r.ref for r in rejected],
            node.settings.results.language,
            model=rec.model,
            version=rec.version,
            sha256=rec.sha256,
            seed=seed,
        )
        (kos_path,) = write_results(root, study_key, [kos])
        rows.append(row(kos, kos_path, ResultState.REJECTION))
    pipeline = node.routing.rules.pipelines.get(plan.pipeline)
    destinations = list(pipeline.destinations) if pipeline is not None else []
    destinations = [d for d in destinations if bf is None or bf.deliver]  # else observatory only
    node.store.record_results(
        rows, destinations, superseded=[r.sop_uid for r in rejected], priority=priority
    )
    rec = out.result.record
    node.audit.record(
        AuditEvent.RESULTS_PRODUCED,
        who="system",
        study_key=study_key,
        detail={"model": rec.model, "version": rec.version, "sha256": rec.sha256,
                "job": job_kind, "objects": len(rows),
                "kinds": sorted({r.modality for r in rows}), "superseded": len(rejected),
                "destinations": destinations},
    )  # fmt: skip
    node.store.record_findings(
        findings_of(out.result, out.objects, study_key=study_key, job_kind=job_kind)
    )
    record_run(node.store, first, out.result)
    if bf is None or bf.deliver:
        node.notifier.after_result(study_key, series.study_uid, plan.pipeline, out.result)
    if rejected:
        node.store.record_event(
            study_key,
            "superseded",
            f"{len(rejected)} earlier object(s) of {job_kind} replaced by this run and "
            f"withdrawn by a rejection note (KOS {rows[-1].sop_uid})",
        )
    if destinations:
        node.delivery.kick()
    return out.outcomes + _replaced(plan)


def _replaced(plan: PipelinePlan) -> list[ObjectOutcome]:
    """A note per kind the pipeline's viewer does not show: not made, its fallback was
    asked for instead (``cds.routing.viewers``)."""
    return [
        ObjectOutcome(
            kind,
            made=False,
            reason=f"viewer {plan.viewer} does not show {kind}: {instead} asked for in its "
            "place (pipeline fallback)",
        )
        for kind, instead in plan.replaced.items()
    ]


def _kind(r: ResultObject) -> str:
    """SR, SEG, GSPS or SC: the kind of a result object, as ``ObjectOutcome.kind``."""
    if r.sop_class_uid.startswith(_SC_CLASS):
        return "SC"
    return {"PR": "GSPS"}.get(r.modality, r.modality)


def _run_jobs(
    node: Node,
    study_key: str,
    series: list[SeriesHeader],
    runs: list[tuple[RuleVerdict, PipelinePlan]],
) -> tuple[int, int]:
    """One job per pipeline; returns how many failed and how many were partial."""
    failed = partial = 0
    for rule, p in runs:
        job = node.store.create_job(study_key, f"{p.pipeline}:{p.model}")
        if p.status != "run":
            node.store.set_job_state(job.job_id, JobState.SKIPPED, error=p.status)
            log.warning("pipeline.skipped", study_key=study_key, model=p.model, reason=p.status)
            continue
        if not node.store.claim_jobs(job_ids=[job.job_id]):
            continue  # an admin cancelled it while it waited
        state = _run_job(node, study_key, job.job_id, job.kind, series, rule, p)
        failed += state is JobState.FAILED
        partial += state is JobState.PARTIAL
    return failed, partial


def _run_job(  # noqa: PLR0917 (one job: where it runs and what it runs)
    node: Node,
    study_key: str,
    job_id: str,
    kind: str,
    series: list[SeriesHeader],
    rule: RuleVerdict,
    p: PipelinePlan,
) -> JobState:
    """Run one job on each series its rule selected, each series and each object on its
    own: done when every object was made, partial when some were not (each with its
    reason), failed when none was. Errors never quote a data value (safe_message)."""
    outcomes: list[ObjectOutcome] = []
    problems: list[str] = []
    model = node.models.get(p.model)
    try:
        if model is None or model.status != "ready" or not model.sha256:
            raise CdsError(f"model {p.model} is not loaded")
        failpoint("pipeline.inferring")
        by_name = {r.name: r for r in node.routing.rules.rules}
        priority = by_name[rule.rule].priority if rule.rule in by_name else 0
    except Exception as exc:  # recorded on the job; the study goes on
        return _end_job(node, study_key, job_id, p, [], [error_text(exc)], exc)
    # a series outside the model's declared use is not given to it (p.outside, issue 15)
    selected = [
        s for s in series if s.series_uid in rule.selected and s.series_uid not in p.outside
    ]
    last: Exception | None = None
    for s in selected:
        try:
            outcomes += run_series(
                node, study_key, kind, p, model=model, series=s, priority=priority
            )
        except Exception as exc:  # one series' failure does not stop the others
            last = exc
            where = f"series {s.series_uid}: " if len(selected) > 1 else ""
            problems.append(f"{where}{error_text(exc)}")
    return _end_job(node, study_key, job_id, p, outcomes, problems, last)


def _end_job(  # noqa: PLR0917 (the job and all that became of it)
    node: Node,
    study_key: str,
    job_id: str,
    p: PipelinePlan,
    outcomes: list[ObjectOutcome],
    problems: list[str],
    exc: Exception | None,
) -> JobState:
    not_made = [o.text for o in outcomes if o.failed]
    made = any(o.made for o in outcomes)
    if not problems and not not_made:
        state = JobState.DONE
    else:
        state = JobState.PARTIAL if made else JobState.FAILED
    error = "; ".join([*problems, *not_made])[:500] or None
    node.store.set_job_state(job_id, state, error=error, objects=outcomes)
    if state is JobState.FAILED:
        error_type = type(exc).__name__ if exc is not None else "EncodingError"
        log.error("pipeline.failed", study_key=study_key, model=p.model, error_type=error_type)
    elif state is JobState.PARTIAL:
        log.warning(
            "pipeline.partial",
            study_key=study_key,
            model=p.model,
            not_made=sorted({o.kind for o in outcomes if o.failed}),
            series_failed=len(problems),
        )
    return state
