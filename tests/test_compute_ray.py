"""issue 20: executor.kind ray runs each model's work on Ray actors: the same objects as
the thread kind, and a work whose actor is killed completes once on the restarted one.

The cluster is the one .ci/run starts (``ray start --head``, CDS_TEST_RAY_ADDRESS=auto),
else a local Ray inside the test process."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from cds.compute import SeriesWork, inputs_seed
from cds.inference.registry import ModelRegistry

from .test_compute import BONE, _run_node, _work

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'cds[ray]'")

from cds.compute_ray import RayCompute  # noqa: E402 (after the importorskip)

ADDRESS = os.environ.get("CDS_TEST_RAY_ADDRESS", "local")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One Ray for the module (starting one takes seconds)."""
    if not ray.is_initialized():
        ray.init(address=ADDRESS, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def ct_series(corpus: Path) -> list[Path]:
    return sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:4]


def test_ray_makes_the_same_objects_as_the_thread_kind(
    cluster: None, tmp_path: Path, ct_series: list[Path]
) -> None:
    in_threads, _ = _run_node(tmp_path / "t", ct_series)
    on_ray, health = _run_node(tmp_path / "r", ct_series, kind="ray", workers=2, address=ADDRESS)
    assert len(in_threads) == 2  # SEG and SR
    assert on_ray == in_threads  # same UIDs (content-derived), same pixels and content
    assert health["executor"] == {"kind": "ray", "workers": 2, "address": ADDRESS}
    actors = health["workers"]  # GET /api/workers, what cds workers shows
    assert [a["worker"] for a in actors] == ["actor 0", "actor 1"]
    assert sum(a["done"] for a in actors) == 1
    busy = next(a for a in actors if a["done"] == 1)
    assert busy["models"] == ["cds-ref-ct-bone"]
    assert busy["pid"] > 0
    assert busy["loaded"] == ["cds-ref-ct-bone 1.0.0 (CPU)"]


def test_a_work_whose_actor_was_killed_completes_once(cluster: None, ct_series: list[Path]) -> None:
    registry = ModelRegistry([BONE], "cpu", warm=False)
    (model,) = registry.load()
    assert model.sha256
    compute = RayCompute(ADDRESS, workers=1)
    try:
        work = _work(ct_series, model.sha256)
        first = compute.run(work)  # the actor loads the model
        (pid,) = compute.actor_pids()
        os.kill(pid, signal.SIGKILL)  # kill -9 of the actor's process
        again = compute.run(work)  # tried again on the restarted actor
        assert compute.actor_pids() != [pid]
        made = [str(ds.SOPInstanceUID) for ds in again.objects]
        assert made == [str(ds.SOPInstanceUID) for ds in first.objects]  # the same objects
        assert sorted(str(ds.Modality) for ds in again.objects) == ["SEG", "SR"]
    finally:
        compute.shutdown()


def test_a_work_value_names_files_not_data(ct_series: list[Path]) -> None:
    """What crosses to an actor: paths and values, never the node's store or sockets."""
    work = SeriesWork(
        model="m",
        package=BONE,
        sha256="0" * 64,
        providers="cpu",
        files=tuple(ct_series),
        kinds=("SR",),
        lang="en",
        seed=inputs_seed(ct_series),
    )
    assert all(isinstance(v, str | int | Path | tuple) or v is None for v in vars(work).values())
