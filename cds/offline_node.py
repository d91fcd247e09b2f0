"""The node a ``cds process`` run works through (issue 18): the node's own series run.

``cds process`` plans its jobs with the node's routing decision (``cds.routing.route``,
with the same disabled models, loaded models and declared use), then hands each
planned series to ``OfflineNode.run_series``, which is the node's step
(``cds.pipeline.run_series``): a ``SeriesWork`` value to the compute seam, the objects
written with ``write_results`` under ``<out>/<study folder>/<Modality>/``, and the
results, findings, events and the observatory's run record recorded in a state store,
with a job row and its state. So the same inputs give the
same objects from ``cds process`` and from a node (the same bytes but for the
creation times and a SEG's random Dimension Organization UID).

The store is a SQLite file in a temporary folder, removed when the run ends: an offline
run leaves nothing but its output folder. Nothing leaves the machine: the delivery
worker never starts (the outbox rows stay in the temporary store), the notifier queues
nothing, and the audit trail records nothing (there is no node home to keep it in).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from cds.audit.trail import AuditTrail, NullAuditTrail
from cds.compute import Runner
from cds.config import Settings
from cds.delivery.notify import Notifier
from cds.delivery.worker import DeliveryWorker
from cds.domain import JobState, ObjectOutcome
from cds.errors import error_text
from cds.findings import InferenceResult
from cds.inference.registry import LoadedModel, ModelRegistry
from cds.inference.session import ProviderChoice
from cds.ingest.spool import Spool
from cds.pipeline import run_series as node_run_series
from cds.routing.manager import RoutingManager
from cds.routing.router import PipelinePlan, SeriesHeader
from cds.store import StateStore
from cds.store.sqlite import SqliteStore


class _NoNotifier(Notifier):
    """An offline run notifies no RIS or worklist: nothing leaves the machine."""

    def __init__(self) -> None:  # no targets, no queue
        pass

    def after_result(
        self, study_key: str, study_uid: str, pipeline: str, result: InferenceResult
    ) -> bool:
        return False


class _NoDelivery(DeliveryWorker):
    """An offline run sends nothing: the outbox rows stay in the temporary store."""

    def __init__(self) -> None:  # no worker thread
        pass

    def kick(self) -> None:
        return None


@dataclass
class SeriesRun:
    """What the node's series run gave: the outcomes of each object (the viewer's
    replacements included), or the error that stopped it, and how long it took."""

    outcomes: list[ObjectOutcome]
    error: Exception | None
    seconds: float


class OfflineNode:
    """The parts of a node ``cds.pipeline`` uses (``cds.pipeline.Node``), for one
    ``cds process`` run: results under ``out``, state in a temporary SQLite store."""

    def __init__(
        self,
        *,
        out: Path,
        providers: ProviderChoice,
        lang: str,
        compute: Runner,
        routing: Path | None = None,
    ) -> None:
        self._home = Path(tempfile.mkdtemp(prefix="cds-process-"))
        try:
            self.settings = Settings(
                home=self._home,
                store={"backend": "sqlite", "sqlite_path": self._home / "state.db"},
                results={"path": out, "language": lang},
                inference={"providers": providers, "model_dirs": [], "warm_up": False},
            )
            self.store: StateStore = SqliteStore(self.settings.sqlite_path)
        except BaseException:
            shutil.rmtree(self._home, ignore_errors=True)
            raise
        self.spool = Spool(self._home / "spool", 0)  # never written: the inputs stay put
        self.routing = RoutingManager(routing, [], self._home / "disabled_models.json")
        if routing is not None:
            self.routing.reload()
        self.models = ModelRegistry([], providers, warm=False)  # the run's are in compute
        self.compute = compute
        self.audit: AuditTrail = NullAuditTrail()
        self.notifier: Notifier = _NoNotifier()
        self.delivery: DeliveryWorker = _NoDelivery()

    def submit_study(self, study_key: str) -> None:  # the run routes each study once
        return None

    def recheck_at(self, study_key: str, at: float) -> None:
        return None

    def run_series(
        self, study_key: str, plan: PipelinePlan, model: LoadedModel, series: SeriesHeader
    ) -> SeriesRun:
        """One model on one series, as the node runs it (one job, one series): the files
        in the order of the node's spool (by SOP Instance UID), ``plan``'s results and
        fallbacks, the objects written under ``<out>/<study_key>/``, the job's state."""
        kind = f"{plan.pipeline}:{plan.model}"
        order = sorted(zip(series.sop_uids, series.files, strict=True))
        spooled = replace(series, files=[f for _, f in order], sop_uids=[u for u, _ in order])
        job = self.store.create_job(study_key, kind)
        self.store.claim_jobs(job_ids=[job.job_id])
        t0 = time.perf_counter()
        outcomes: list[ObjectOutcome] = []
        error: Exception | None = None
        try:
            outcomes = node_run_series(self, study_key, kind, plan, model=model, series=spooled)
        except Exception as exc:  # recorded on the job and in process.json
            error = exc
        seconds = time.perf_counter() - t0
        not_made = [error_text(error)] if error is not None else []
        not_made += [o.text for o in outcomes if o.failed]
        state = JobState.PARTIAL if any(o.made for o in outcomes) else JobState.FAILED
        self.store.set_job_state(
            job.job_id,
            state if not_made else JobState.DONE,
            error="; ".join(not_made)[:500] or None,
            objects=outcomes,
        )  # as the node's _end_job, without its log lines: the key here is the study's UID
        return SeriesRun(outcomes, error, seconds)

    def close(self) -> None:
        """Close the store and remove the temporary folder."""
        try:
            self.store.close()
        finally:
            shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> OfflineNode:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
