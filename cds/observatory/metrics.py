"""``GET /metrics``: the node's figures in the Prometheus text format.

Everything is read from the state store when Prometheus scrapes (``StoreCollector``),
so the figures survive restarts, agree with the admin API and need no hook in
the stages. Each node has its own ``CollectorRegistry`` (``build_registry``), never
prometheus-client's global one, so that several nodes (and tests) in one process
do not mix.

Labels carry only low-cardinality, non-identifying values: study, job and
delivery states, job kind (``<pipeline>:<model>``), model, version, execution
provider, destination name, feedback action, drift feature. Never a study key,
a UID, an AE title or any patient attribute.

Histograms are computed from the store's timestamps over everything it holds
(so they only grow, like a Prometheus histogram): receive -> complete (first
instance to completeness), complete -> result (completion to the first result of
each pipeline), job run time, inference time per model/version/provider (the
model's own figure, from the drift records), and delivery (queued -> delivered,
retries included).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cds import __version__
from cds.domain import DeliveryState, JobState, StudyState
from cds.observatory.drift import DriftSettings, ModelDrift, drift_report
from cds.store.base import JobStore, ObservatoryStore, StudyStore
from cds.store.retractions import RetractionLog

#: histogram bucket upper bounds, seconds (the same for every stage)
BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600,
)  # fmt: skip

#: histogram name -> (help, label names); the store fills one ``HistogramRow`` per label set
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cds_study_receive_to_complete_seconds": (
        "First instance received to study complete (quiet time included)",
        (),
    ),
    "cds_study_complete_to_result_seconds": (
        "Study complete to the first result object of each pipeline",
        ("kind",),
    ),
    "cds_job_run_seconds": ("Run time of jobs that finished done", ("kind",)),
    "cds_inference_seconds": (
        "Inference time of one model on one series",
        ("model", "version", "provider"),
    ),
    "cds_delivery_seconds": (
        "Result object queued to delivered (retries included)",
        ("destination",),
    ),
}


class MetricsStore(ObservatoryStore, StudyStore, JobStore, Protocol):
    """What a scrape reads of the state store: the counts and runs, the studies by
    state, the queue."""


class StoreCollector(Collector):
    """Reads the figures from the store at each scrape. Drift is recomputed at most
    every ``drift_cache_s`` (it reads every run of the windows)."""

    def __init__(
        self,
        store: MetricsStore,
        drift: DriftSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        drift_cache_s: float = 60.0,
    ) -> None:
        self.store = store
        self.drift = drift or DriftSettings()
        self.clock = clock
        self.drift_cache_s = drift_cache_s
        self._drift: tuple[float, list[ModelDrift]] | None = None
        self._lock = threading.Lock()

    def _drift_reports(self, now: float) -> list[ModelDrift]:
        with self._lock:
            if self._drift is None or now - self._drift[0] >= self.drift_cache_s:
                self._drift = (now, drift_report(self.store, now, self.drift))
            return self._drift[1]

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        snap = self.store.metrics_snapshot(BUCKETS)
        info = GaugeMetricFamily("cds_info", "The cds node", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

        received = GaugeMetricFamily(
            "cds_instances_received",
            "Instances received and still recorded, by outcome (new SOP Instance, replaced "
            "version, duplicate); a purge forgets its study's records",
            labels=["outcome"],
        )
        for outcome in ("new", "replaced", "duplicate"):
            received.add_metric([outcome], snap.instances_received.get(outcome, 0))
        yield received
        yield GaugeMetricFamily(
            "cds_instances_stored", "Current instances in the store", value=snap.instances_stored
        )

        studies = GaugeMetricFamily("cds_studies", "Studies by state", labels=["state"])
        by_state = self.store.count_studies_by_state()
        for state in StudyState:
            studies.add_metric([state.value], by_state.get(state, 0))
        yield studies

        yield _gauge("cds_jobs", "Jobs by pipeline and state", ["kind", "state"], snap.jobs)
        jobs_by_state = GaugeMetricFamily("cds_jobs_by_state", "Jobs by state", labels=["state"])
        for js in JobState:
            count = sum(n for (_, s), n in snap.jobs.items() if s == js.value)
            jobs_by_state.add_metric([js.value], count)
        yield jobs_by_state

        q = self.store.queue_stats()
        depth = GaugeMetricFamily("cds_queue_depth", "Work waiting, per queue", labels=["queue"])
        for name, value in (
            ("studies_receiving", q.studies_receiving),
            ("studies_complete_waiting", q.studies_complete_waiting),
            ("jobs_queued", q.jobs_queued),
            ("jobs_running", q.jobs_running),
            ("deliveries_pending", q.deliveries_pending),
            ("deliveries_dead", q.deliveries_dead),
        ):
            depth.add_metric([name], value)
        yield depth
        age = GaugeMetricFamily(
            "cds_queue_oldest_age_seconds",
            "Age of the oldest queued job / pending delivery (0: none)",
            labels=["queue"],
        )
        for name, since in (
            ("jobs", q.oldest_queued_at),
            ("deliveries", q.oldest_pending_delivery_at),
        ):
            age.add_metric([name], max(0.0, now - since) if since is not None else 0.0)
        yield age

        yield _gauge(
            "cds_results", "Result objects by pipeline and state", ["kind", "state"], snap.results
        )
        deliveries = GaugeMetricFamily(
            "cds_deliveries", "Deliveries by destination and state", labels=["destination", "state"]
        )
        for dest in sorted({d for d, _ in snap.deliveries}):
            for ds in DeliveryState:
                deliveries.add_metric([dest, ds.value], snap.deliveries.get((dest, ds.value), 0))
        yield deliveries
        yield _gauge(
            "cds_delivery_failed_attempts",
            "Failed C-STORE attempts of the deliveries held (an admin retry resets them)",
            ["destination"],
            {(d,): n for d, n in snap.delivery_failed_attempts.items()},
        )
        yield _gauge(
            "cds_findings",
            "Findings by model, version and presence",
            ["model", "version", "present"],
            snap.findings,
        )
        feedback = CounterMetricFamily(
            "cds_feedback",
            "Feedback records (append-only) by model, version and action",
            labels=["model", "version", "action"],
        )
        for labels, n in sorted(snap.feedback.items()):
            feedback.add_metric(list(labels), n)
        yield feedback
        retracted = CounterMetricFamily(
            "cds_retractions",
            "Results withdrawn everywhere by an operator (cds results retract), by model "
            "and version",
            labels=["model", "version"],
        )
        for (model, version), n in sorted(RetractionLog(self.store).counts().items()):
            retracted.add_metric([model, version], n)
        yield retracted

        for name, (doc, label_names) in HISTOGRAMS.items():
            hist = HistogramMetricFamily(name, doc, labels=list(label_names))
            for row in snap.histograms.get(name, []):
                buckets = [
                    (repr(float(b)), c) for b, c in zip(BUCKETS, row.cumulative, strict=True)
                ]
                buckets.append(("+Inf", row.count))
                hist.add_metric(list(row.labels), buckets, row.total)
            yield hist

        yield from self._drift_metrics(now)

    def _drift_metrics(self, now: float) -> Iterator[Metric]:
        labels = ["model", "version", "feature"]
        psi = GaugeMetricFamily(
            "cds_drift_psi",
            "Population stability index, recent window against baseline (absent: no data)",
            labels=labels,
        )
        alert = GaugeMetricFamily(
            "cds_drift_alert", "1 when the feature's PSI reaches the alert threshold", labels=labels
        )
        threshold = GaugeMetricFamily("cds_drift_psi_threshold", "PSI alert threshold")
        threshold.add_metric([], self.drift.psi_alert)
        for report in self._drift_reports(now):
            for f in report.features:
                key = [report.model, report.version, f.feature]
                if f.statistic is not None:
                    psi.add_metric(key, f.statistic)
                alert.add_metric(key, 1 if f.alert else 0)
        yield psi
        yield alert
        yield threshold


def _gauge(
    name: str, doc: str, labels: Sequence[str], values: dict[tuple[str, ...], int]
) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, n in sorted(values.items()):
        g.add_metric(list(key), n)
    return g


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


class WorkerCollector(Collector):
    """The executor's workers at each scrape (``cds workers``): labelled by the worker's
    name ('node threads', 'process pool (N processes)', 'actor N') and kind only."""

    def __init__(self, workers: Callable[[], Sequence[Mapping[str, object]]]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        rows = list(self._workers())
        labels = ["worker", "kind"]
        in_flight = GaugeMetricFamily(
            "cds_worker_in_flight", "Works sent to the worker, not yet back", labels=labels
        )
        works = CounterMetricFamily(
            "cds_worker_works", "Works the worker finished, by outcome", labels=[*labels, "outcome"]
        )
        busy = CounterMetricFamily(
            "cds_worker_busy_seconds", "Time with work in flight on the worker", labels=labels
        )
        for w in rows:
            key = [str(w["worker"]), str(w["kind"])]
            in_flight.add_metric(key, _num(w["in_flight"]))
            works.add_metric([*key, "done"], _num(w["done"]))
            works.add_metric([*key, "failed"], _num(w["failed"]))
            busy.add_metric(key, _num(w["busy_seconds"]))
        yield from (in_flight, works, busy)


def build_registry(
    store: MetricsStore,
    drift: DriftSettings | None = None,
    *,
    process: bool = True,
    workers: Callable[[], Sequence[Mapping[str, object]]] | None = None,
) -> CollectorRegistry:
    """A registry of its own for one node: the store's figures (and the process's, and
    the executor's workers when ``workers`` is given)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, drift))
    if workers is not None:
        registry.register(WorkerCollector(workers))
    if process:
        ProcessCollector(registry=registry)
    return registry
