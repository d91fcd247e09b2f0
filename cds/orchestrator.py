"""The one place where the stages are wired together.

``Node`` owns the spool, the state store, the DICOM listener, the study
assembler and the executor. Later stages (routing, inference, results,
delivery) subscribe to completed studies with ``on_study_complete``; they run
on the executor, never in a network thread.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info

from cds import __version__
from cds.audit import AuditEvent, AuditOutcome, AuditTrail
from cds.audit.config import record_config
from cds.audit.syslog import SyslogForwarder
from cds.compute_ray import make_compute
from cds.config import Settings
from cds.delivery.notify import Notifier
from cds.delivery.worker import DeliveryWorker
from cds.destinations import Notify
from cds.domain import JobState, StudyState
from cds.errors import CdsError, ConfigError, IngestError, StoreError
from cds.executor import Executor, InProcessExecutor
from cds.feedback.dicom import FEEDBACK_MODALITIES, read_feedback
from cds.golden import run_golden_once
from cds.inference.registry import ModelRegistry
from cds.inference.session import DeviceSlots, gpu_ids
from cds.ingest.assembler import Assembler
from cds.ingest.receiver import Receiver
from cds.ingest.scp import DicomListener
from cds.ingest.spool import Spool
from cds.keyfile import load_or_create_key
from cds.logging import get_logger
from cds.memory import trim_heap
from cds.pipeline import RERUN_EVENTS, run_study, study_series
from cds.read_ahead import read_ahead
from cds.retention import Retention
from cds.routing.manager import RoutingManager
from cds.store import StateStore, open_store
from cds.workflow.performer import make_performer

log = get_logger("cds.node")

StudyConsumer = Callable[[str], None]

#: study events of the poison-study guard (``Node._interrupted``)
INTERRUPTED_EVENT = "processing_interrupted"
DEAD_LETTER_EVENT = "dead_letter"


def load_secret(home: Path) -> bytes:
    """The node's pseudonymisation key (created once, mode 0600, never logged)."""
    key = load_or_create_key(home / "node.key")
    assert key is not None  # created when absent
    return key


class Node:
    def __init__(self, settings: Settings, executor: Executor | None = None) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.secret = load_secret(settings.home)
        self.audit = AuditTrail(settings.audit_path)
        self.spool = Spool(settings.spool_path, settings.spool.min_free_mb * 2**20)
        self.store: StateStore = open_store(settings)
        self.executor: Executor = executor or InProcessExecutor()
        self.receiver = Receiver(settings, self.spool, self.store, self.secret, audit=self.audit)
        self.listener = DicomListener(settings, self.receiver, self.audit)
        self.assembler = Assembler(
            self.store,
            self._study_complete,
            settings.assembly.check_interval_s,
            on_tick=self._rechecks_due,
        )
        #: study key -> when to route it again (a rule's longer quiet time), see recheck_at
        self._rechecks: dict[str, float] = {}
        self._rechecks_lock = threading.Lock()
        inf = settings.inference
        self.models = ModelRegistry(
            inf.model_dirs,
            inf.providers,
            DeviceSlots(inf.max_sessions_per_gpu, inf.max_sessions_cpu, gpu_ids(inf.gpus)),
            warm=inf.warm_up,
            golden=run_golden_once if inf.golden_at_load else None,
        )
        ex = settings.executor
        self.compute = make_compute(  # where a model's work on a series runs (executor.kind)
            self.models,
            ex.kind,
            ex.workers,
            address=ex.address,
            gpus_per_worker=ex.gpus_per_worker,
            gpu_workers=ex.gpu_workers,
            log_format=settings.log.format,
            log_level=settings.log.level,
            gpus=self.models.slots.gpus,
            preread_mb=inf.preread_mb,
        )
        self.routing = RoutingManager(
            settings.routing.file,
            settings.routing.disabled_models,
            settings.home / "disabled_models.json",
            settings.routing.reload_interval_s,
            audit=self.audit,
        )
        self.delivery = DeliveryWorker(
            self.store,
            settings.delivery,
            settings.results_path,
            lambda: self.routing.rules.destinations,
            settings.dicom.ae_title,
            audit=self.audit,
        )
        self.notifier = Notifier(  # urgent findings to a RIS/worklist: only if configured
            self.store,
            lambda: self.routing.rules.notifications,
            notify_of=self._notify_of,
            language=settings.results.language,
            max_attempts=settings.delivery.max_attempts,  # the outbox's tries and backoff
            backoff_initial_s=settings.delivery.backoff_initial_s,
            backoff_max_s=settings.delivery.backoff_max_s,
            idle_s=settings.delivery.poll_interval_s,  # the outbox is looked at as often
        )
        self.retention = Retention(self.store, self.spool, settings.retention, self.audit)
        self.workflow = make_performer(  # IHE AI Workflow (UPS-RS): None unless configured
            settings.workflow, self.store, self.secret, lambda: self.routing.rules.destinations,
            self.audit,
        )  # fmt: skip
        self.audit_syslog: SyslogForwarder | None = None
        if settings.audit.syslog is not None:  # the trail is its spool: nothing is lost
            self.audit_syslog = SyslogForwarder(
                settings.audit_path, settings.audit.syslog, ae_title=settings.dicom.ae_title
            )
            self.audit.add_listener(self.audit_syslog.kick)
        self._consumers: list[StudyConsumer] = [self._run_pipelines, self._read_feedback]
        self.listener.on_association_end = self._association_ended
        self.started_at: float | None = None
        self._stopped = False
        self._claims_renewed_at = 0.0

    # --- wiring ----------------------------------------------------------
    def on_study_complete(self, consumer: StudyConsumer) -> None:
        """Register a stage to run (on the executor) for every completed study."""
        self._consumers.append(consumer)

    def _run_pipelines(self, study_key: str) -> None:
        try:
            run_study(self, study_key)
        finally:
            if self.compute.preread is not None:  # what its jobs did not take
                self.compute.preread.forget(study_key)
            trim_heap()  # the study's arrays are freed: give the memory back

    def _read_feedback(self, study_key: str) -> None:
        """Rejection notes and edited objects the PACS sent back about our results."""
        files = [
            f
            for s in study_series(self, study_key)
            if s.attrs.get("Modality") in FEEDBACK_MODALITIES
            for f in s.files
        ]
        if files:
            detail = self.store.get_study(study_key)
            calling = detail.summary.calling_ae if detail else "UNKNOWN"
            read_feedback(
                self.store,
                study_key,
                files,
                calling,
                audit=self.audit,
                results_root=self.settings.results_path,
            )

    def _association_ended(self, study_keys: list[str]) -> None:
        """A sender finished a batch: the studies' series are read ahead during their quiet
        time (``cds.read_ahead``); rules whose required series are now all present may
        start before it (routing ``completeness``)."""
        read_ahead(self, study_keys)
        rules = self.routing.rules.rules
        if not any(r.completeness and r.completeness.required_series for r in rules):
            return
        for key in study_keys:
            self.executor.submit(run_study, self, key, True)

    def recheck_at(self, study_key: str, at: float) -> None:
        """Route ``study_key`` again at ``at`` (the assembler's tick submits it). A restart
        forgets it and loses nothing: reconcile resumes every complete study."""
        with self._rechecks_lock:
            self._rechecks[study_key] = at

    def _rechecks_due(self, now: float) -> None:
        if now >= self._claims_renewed_at + self.store.lease_s / 4:  # several nodes, one store
            self._claims_renewed_at = now
            self.store.renew_claims(now)
            self._take_over(now)
        with self._rechecks_lock:
            due = [k for k, at in self._rechecks.items() if at <= now]
            for key in due:
                del self._rechecks[key]
        for key in due:
            self.submit_study(key)

    def _study_complete(self, study_key: str) -> None:
        self.submit_study(study_key)

    def submit_study(self, study_key: str) -> None:
        """Hand a study to every registered stage (on the executor): on completion,
        and again when an admin re-runs it."""
        for consumer in self._consumers:
            self.executor.submit(consumer, study_key)

    # --- life cycle ------------------------------------------------------
    def start(self) -> None:
        if self.audit_syslog is not None:
            self.audit_syslog.start()  # what a stop left unsent goes out now
        self.spool.open()
        self.reconcile()
        self.models.load()  # a broken package is reported and skipped, never fatal
        self.routing.start()
        if self.routing.last_errors:  # at start there are no previous rules to keep
            self.routing.stop()  # nothing started may outlive a refused start
            if self.audit_syslog is not None:
                self.audit_syslog.stop()
            raise ConfigError(self.routing.last_errors, str(self.settings.routing.file))
        self.listener.start()
        self.assembler.start()
        self.delivery.start()  # what a stop left in the outbox goes out now
        self.notifier.start()
        self.retention.start()  # off unless retention.spool_days is set
        if self.workflow is not None:
            self.workflow.start()  # resumes the workitems it claimed before a stop
        self.started_at = time.time()
        log.info("node.started", version=__version__, home=str(self.settings.home))
        config_sha = record_config(self.audit, self.settings)  # config_changed, if it did
        self.audit.record(
            AuditEvent.APPLICATION_START,
            who="system",
            detail={"version": __version__, "config_sha256": config_sha},
        )
        self.resume()

    def resume(self) -> int:
        """Hand back to the stages every study a stop interrupted: completed but not yet
        routed, or processing when the node went down. Returns how many."""
        self.store.release_deliveries(time.time())  # sent but unrecorded: due again now
        if self.settings.routing.file is None:
            return 0
        complete = self.store.list_studies(StudyState.COMPLETE, limit=100_000)
        processing = self.store.list_studies(StudyState.PROCESSING, limit=100_000)
        return self._hand_back(
            [s.study_key for s in complete], [s.study_key for s in processing], time.time()
        )

    def _take_over(self, now: float) -> int:
        """What a node that died held (its claims' leases lapsed) goes on here."""
        if self.settings.routing.file is None:
            return 0
        lapsed = set(self.store.lapsed_studies(now))
        if not lapsed:
            return 0
        processing = self.store.list_studies(StudyState.PROCESSING, limit=100_000)
        busy = {s.study_key for s in processing} & lapsed
        return self._hand_back(sorted(lapsed - busy), sorted(busy), now)

    def _hand_back(self, complete: list[str], processing: list[str], now: float) -> int:
        """Jobs no live node holds fail (``interrupted``); the studies of ``complete``
        and ``processing`` this node can claim (free, its own, or lapsed: never another
        live node's) go to the stages again. Returns how many studies."""
        for job in self.store.open_claims(now):
            self.store.set_job_state(
                job.job_id,
                JobState.FAILED,
                error="interrupted: node stopped"
                + (f" (node {job.claimed_by})" if job.claimed_by else ""),
            )
        keys = [k for k in complete if self.store.claim_study(k, now)]
        for key in processing:
            if not self.store.claim_study(key, now):
                continue  # another live node runs it
            if self._interrupted(key):
                keys.append(key)
            else:
                self.store.release_study(key)
        for key in keys:
            self.submit_study(key)
        if keys:
            log.warning("node.resumed_studies", studies=len(keys))
        return len(keys)

    def _notify_of(self, pipeline: str) -> Notify | None:
        """The urgent-finding notification of ``pipeline`` in the routing file now."""
        spec = self.routing.rules.pipelines.get(pipeline)
        return spec.notify if spec is not None else None

    def _interrupted(self, study_key: str) -> bool:
        """A study was processing when the node went down. A graceful stop finishes
        the work under way, so this is a crash (or a kill): count it. A study that
        took the node down ``inference.max_job_attempts`` times since it arrived or
        an admin last asked for it is a poison study: it goes to the dead letter
        (state failed, an alert) instead of taking the node down again. Returns
        whether it should run again."""
        self.store.record_event(
            study_key, INTERRUPTED_EVENT, "the node stopped while processing this study"
        )
        detail = self.store.get_study(study_key)
        if detail is None:
            return False
        since = max((e.at for e in detail.events if e.kind in RERUN_EVENTS), default=0.0)
        crashes = sum(1 for e in detail.events if e.kind == INTERRUPTED_EVENT and e.at >= since)
        limit = self.settings.inference.max_job_attempts
        if crashes < limit:
            return True
        reason = (
            f"dead letter: processing was interrupted {crashes} times (limit "
            f"inference.max_job_attempts = {limit}); not run again until an admin "
            "re-runs it (cds studies rerun KEY, POST /api/studies/KEY/rerun)"
        )
        self.store.record_event(study_key, DEAD_LETTER_EVENT, reason)
        self.store.set_study_state(study_key, StudyState.FAILED, reason)
        log.error("node.dead_letter_study", study_key=study_key, interruptions=crashes)
        self.audit.record(  # the alert also reaches the audit repository (syslog), if any
            AuditEvent.SECURITY_ALERT,
            who="system",
            outcome=AuditOutcome.SERIOUS_FAILURE,
            study_key=study_key,
            detail={"what": "poison study sent to the dead letter", "interruptions": crashes},
        )
        return False

    def stop(self) -> None:
        """Stop accepting, finish queued work, close the store. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self.retention.stop()
        self.assembler.stop()
        self.routing.stop()
        self.listener.stop()
        self.executor.shutdown(wait=True)
        self.compute.shutdown()  # no job is left to use it
        self.delivery.stop()  # after the executor: the last results are queued
        self.notifier.stop()
        if self.workflow is not None:
            self.workflow.stop()
        self.store.close()
        self.audit.record(
            AuditEvent.APPLICATION_STOP, who="system", detail={"version": __version__}
        )
        if self.audit_syslog is not None:
            self.audit_syslog.stop()  # one last try; the rest is sent at the next start
        self.audit.close()
        log.info("node.stopped")

    def reconcile(self) -> int:
        """Index spooled files the store does not know (after a power loss).

        Returns how many files were re-indexed.
        """
        known = self.store.known_paths()
        count = 0
        for path in self.spool.iter_files():
            rel = path.relative_to(self.spool.root).as_posix()
            if rel in known:
                continue
            try:
                self._reindex(path)
                count += 1
            except (CdsError, OSError, ValueError) as exc:
                log.error("node.reconcile_failed", file=rel, error=str(exc))
        if count:
            log.warning("node.reconciled", files=count)
        return count

    def _reindex(self, path: Path) -> None:
        raw = path.read_bytes()
        if raw[128:132] != b"DICM" or raw[132:136] != b"\x02\x00\x00\x00":
            raise ValueError("not a Part 10 file written by cds")
        (group_len,) = struct.unpack("<I", raw[140:144])
        meta_end = 144 + group_len
        meta = read_file_meta_info(path)  # the File Meta only: the data set is checked below
        sop_uid = str(meta.MediaStorageSOPInstanceUID)
        try:
            self.receiver.receive(
                sop_class_uid=str(meta.MediaStorageSOPClassUID),
                sop_uid=sop_uid,
                transfer_syntax_uid=str(meta.TransferSyntaxUID),
                dataset=raw[meta_end:],
                calling_ae=str(meta.get("SourceApplicationEntityTitle", "UNKNOWN")),
                received_at=path.stat().st_mtime,
            )
        except IngestError as exc:
            raise ValueError(str(exc)) from exc
        # The receiver stored the same bytes under their canonical name: drop the stray copy.
        rel = path.relative_to(self.spool.root).as_posix()
        current = self.store.find_instance(sop_uid)
        if (
            current is not None
            and current[1] != rel
            and self.spool.exists(current[1])
            and current[0] == hashlib.sha256(raw[meta_end:]).hexdigest()
        ):
            self.spool.remove(rel)

    # --- status ----------------------------------------------------------
    def _notify_pending(self) -> int | None:
        """Notifications waiting in the outbox; None while the store cannot say (down)."""
        try:
            return self.notifier.pending
        except StoreError:
            return None

    def health(self) -> dict[str, Any]:
        space = self.spool.space()
        store_ok = self.store.ping()
        dicom: dict[str, Any] = {
            "listening": self.listener.listening,
            "ae_title": self.settings.dicom.ae_title,
            "active_associations": self.listener.active_associations(),
        }
        if self.listener.listening:
            dicom["port"] = self.listener.address[1]
            tls = self.listener.tls_address
            dicom["tls_port"] = tls[1] if tls is not None else None
        up = self.listener.listening and store_ok and not space.below_watermark
        # a routed model that cannot run: the node still receives, but studies go unread
        problems = self.models.problems(self.routing.routed_models())
        return {
            # unavailable: cannot take studies (HTTP 503); degraded: takes them (HTTP 200)
            "status": "unavailable" if not up else "degraded" if problems else "ok",
            "problems": [asdict(p) for p in problems],
            "version": __version__,
            "dicom": dicom,
            "store": {
                "backend": self.settings.store.backend,
                "reachable": store_ok,
                "instance_rows": asdict(self.receiver.rows.stats),  # group commits
            },
            "spool": {
                "free_bytes": space.free_bytes,
                "total_bytes": space.total_bytes,
                "min_free_bytes": space.min_free_bytes,
                "below_watermark": space.below_watermark,
            },
            "executor": self.compute.describe(),
            "assembly": {"running": self.assembler.running},
            "delivery": {"running": self.delivery.running},
            "notify": {"running": self.notifier.running, "pending": self._notify_pending()},
            "models": [
                {
                    "name": m.name,
                    "version": m.version,
                    "status": m.status,
                    "provider": m.provider,
                    "sha256": m.sha256,
                }
                for m in self.models.all()
            ],
        }
