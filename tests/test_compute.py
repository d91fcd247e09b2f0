"""issue 18: a model's work on a series is a value (``SeriesWork``) that runs in the node's
thread or in worker processes (``executor.kind``), with the same objects either way."""

from __future__ import annotations

import pickle
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread

from cds.compute import Compute, PrioritySlots, SeriesWork, inputs_seed, run_work
from cds.domain import StudyState
from cds.errors import CdsError
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.orchestrator import Node
from cds.results.encode import write_results
from cds.results.ps310 import file_bytes

from .admin.helpers import admin_app
from .test_pipeline import REPO, send_files, settings_with_routing, wait_state

ROUTING = """
pipelines:
  bone: {model: cds-ref-ct-bone, results: [SEG, SR]}
rules:
  - name: CT
    match: [{attribute: Modality, equals: CT}]
    pipelines: [bone]
"""
BONE = REPO / "models" / "cds-ref-ct-bone"


@pytest.fixture
def ct_series(corpus: Path) -> list[Path]:
    return sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:4]


def _objects(node: Node) -> dict[str, bytes]:
    """SOP Instance UID -> the bytes that carry the findings (SEG pixels, SR content)."""
    (study,) = node.store.list_studies()
    out = {}
    for r in node.store.list_results(study.study_key):
        ds = dcmread(node.settings.results_path / r.path)
        key = ds.PixelData if "PixelData" in ds else repr(ds.ContentSequence).encode()
        out[r.sop_uid] = key
    return out


def _run_node(
    tmp_path: Path, files: list[Path], **executor: object
) -> tuple[dict[str, bytes], dict[str, Any]]:
    tmp_path.mkdir()
    settings = settings_with_routing(tmp_path, ROUTING)
    settings = settings.model_copy(
        update={"executor": settings.executor.model_copy(update=executor)}
    )
    node = Node(settings)
    node.start()
    try:
        send_files(node, files)
        wait_state(node, {StudyState.DONE, StudyState.FAILED}, timeout=120)
        (job,) = node.store.list_jobs()
        assert job.state.value == "done", job.error
        objects = _objects(node)
        with TestClient(admin_app(node.settings, node)) as client:  # stops the node at exit
            health = client.get("/health").json()
            health["workers"] = client.get("/api/workers").json()  # what cds workers shows
            health["metrics"] = client.get("/metrics").text
        return objects, health
    finally:
        node.stop()


def test_the_process_kind_makes_the_same_objects_as_the_thread_kind(
    tmp_path: Path, ct_series: list[Path]
) -> None:
    in_threads, health_t = _run_node(tmp_path / "t", ct_series)
    in_workers, health_p = _run_node(tmp_path / "p", ct_series, kind="process", workers=2)
    assert len(in_threads) == 2  # SEG and SR
    assert in_workers == in_threads  # same UIDs (content-derived), same pixels and content
    assert health_t["executor"]["preread"]["budget_mb"] == 1024  # the thread kind reads ahead
    assert health_t["executor"] == {
        "kind": "thread",
        "workers": 0,
        "preread": health_t["executor"]["preread"],
    }
    assert health_p["executor"] == {"kind": "process", "workers": 2}
    for health, name in ((health_t, "node threads"), (health_p, "process pool (2 processes)")):
        (w,) = health["workers"]
        assert (w["worker"], w["done"], w["failed"], w["in_flight"]) == (name, 1, 0, 0)
        assert w["models"] == ["cds-ref-ct-bone"]
        assert w["busy_seconds"] > 0
        kind = w["kind"]
        done = f'cds_worker_works_total{{kind="{kind}",outcome="done",worker="{name}"}} 1.0'
        assert done in health["metrics"], health["metrics"][-2000:]


def _work(files: list[Path], sha256: str) -> SeriesWork:
    return SeriesWork(
        model="cds-ref-ct-bone",
        package=BONE,
        sha256=sha256,
        providers="cpu",
        files=tuple(files),
        kinds=("SEG", "SR"),
        lang="fr",
        seed=inputs_seed(files),
    )


def test_a_work_is_a_value_that_crosses_processes(ct_series: list[Path]) -> None:
    work = _work(ct_series, "0" * 64)
    assert pickle.loads(pickle.dumps(work)) == work  # noqa: S301 (our own bytes)


def test_an_outcome_from_another_process_is_written_byte_for_byte_as_in_the_node(
    tmp_path: Path, ct_series: list[Path]
) -> None:
    """issue 20: out of a worker or an actor each object travels as its PS3.10 file, made
    once there; the node writes those bytes as they are (no highdicom object unpickled,
    nothing encoded again), the same files as the thread kind writes for those objects."""
    registry = ModelRegistry([BONE], "cpu", warm=False)
    (model,) = registry.load()
    out = run_work(_work(ct_series, model.sha256 or ""), ModelRunner(model, registry.slots))
    in_node = {ds.SOPInstanceUID: file_bytes(ds) for ds in out.objects}  # thread kind's
    wire = pickle.dumps(out)
    for module in (b"highdicom.seg", b"highdicom.sr", b"pydicom.dataset"):
        assert module not in wire  # no data set object to unpickle on the node: bytes
    moved = pickle.loads(wire)  # noqa: S301 (our own bytes)
    assert [type(ds).__name__ for ds in moved.objects] == ["FileDataset", "FileDataset"]
    assert [str(ds.Modality) for ds in moved.objects] == ["SEG", "SR"]
    assert (moved.skipped, moved.outcomes, moved.copied) == (out.skipped, out.outcomes, out.copied)
    assert moved.result.record == out.result.record
    written = write_results(tmp_path, "study", moved.objects)
    assert {dcmread(p).SOPInstanceUID: p.read_bytes() for p in written} == in_node


def test_a_dead_worker_fails_its_job_clearly_and_the_next_job_gets_a_new_worker(
    ct_series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry([BONE], "cpu", warm=False)
    (model,) = registry.load()
    assert model.sha256
    compute = Compute(registry, "process", workers=1)
    try:
        monkeypatch.setenv("CDS_FAILPOINTS", "compute.worker=kill")  # read by new workers
        with pytest.raises(CdsError, match="worker process running it ended abruptly"):
            compute.run(_work(ct_series, model.sha256))
        monkeypatch.delenv("CDS_FAILPOINTS")
        out = compute.run(_work(ct_series, model.sha256))
        assert sorted(str(ds.Modality) for ds in out.objects) == ["SEG", "SR"]
    finally:
        compute.shutdown()


def test_a_worker_refuses_a_package_changed_since_the_node_loaded_it(
    tmp_path: Path, ct_series: list[Path]
) -> None:
    pkg = tmp_path / "cds-ref-ct-bone"
    shutil.copytree(BONE, pkg)
    registry = ModelRegistry([pkg], "cpu", warm=False)
    assert [m.status for m in registry.load()] == ["ready"]
    compute = Compute(registry, "process", workers=1)
    try:
        work = _work(ct_series, "f" * 64)  # not the SHA-256 of the model.onnx on disk
        work = SeriesWork(**{**work.__dict__, "package": pkg})
        with pytest.raises(CdsError, match="changed on disk since the node loaded it"):
            compute.run(work)
    finally:
        compute.shutdown()


def test_when_the_workers_are_busy_a_stat_work_overtakes_routine_ones() -> None:
    """PrioritySlots: the next free worker goes to the highest priority waiting, then to
    the earliest (the process and Ray kinds wait there; rule priority is the work's)."""
    slots = PrioritySlots(1)
    slots.acquire()  # the one worker is busy
    order: list[str] = []

    def work(name: str, priority: int) -> None:
        slots.acquire(priority)
        order.append(name)
        slots.release()

    threads = []
    for n, (name, priority) in enumerate((("routine 1", 0), ("routine 2", 0), ("STAT", 10))):
        t = threading.Thread(target=work, args=(name, priority))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while slots.waiting < n + 1:  # each is in line before the next comes
            assert time.monotonic() < deadline
            time.sleep(0.001)
    slots.release()
    for t in threads:
        t.join(5)
    assert order == ["STAT", "routine 1", "routine 2"]
