"""issue 20, per-model placement on Ray: a model whose manifest states ``resources`` runs
only on the actors whose device fits it; when none fits, its work fails at once, naming
the model and what it needs.

The Ray tests start a local Ray of their own that declares one logical GPU (Ray hands it
out as it would a real one), so that placement is tested on a machine without a GPU."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cds.compute import SeriesWork, inputs_seed
from cds.compute_ray import ActorDevice, ActorSlots, fits
from cds.errors import ModelError
from cds.inference.manifest import ManifestError, Resources, load_manifest, parse_manifest

REPO = Path(__file__).resolve().parents[1]
BONE = REPO / "models" / "cds-ref-ct-bone"

CPU = ActorDevice(gpu=False)
GPU_16G = ActorDevice(gpu=True, gpu_memory_mib=16384)
GPU_UNKNOWN = ActorDevice(gpu=True)


# --- the manifest field ------------------------------------------------------------


def _manifest_with(resources: object) -> dict[str, object]:
    data = yaml.safe_load((BONE / "manifest.yaml").read_text())
    data["resources"] = resources
    return data


def test_a_manifest_may_state_what_the_model_needs() -> None:
    m = parse_manifest(_manifest_with({"requires_gpu": True, "gpu_memory_mib": 8192}))
    assert m.resources == Resources(requires_gpu=True, gpu_memory_mib=8192)
    assert m.resources.describe() == "a GPU with at least 8192 MiB of memory"
    assert load_manifest(BONE).resources is None  # optional: the bundled ones state none


def test_resources_do_not_change_the_manifest_digest() -> None:
    """Where a model runs does not change what it makes (its results' identity)."""
    plain = load_manifest(BONE)
    placed = parse_manifest(_manifest_with({"requires_gpu": True}))
    assert placed.digest() == plain.digest()


@pytest.mark.parametrize(
    ("resources", "error"),
    [
        ({"gpu_memory_mib": 0}, "resources.gpu_memory_mib: Input should be greater than"),
        ({"gpu_memory_mib": "lots"}, "resources.gpu_memory_mib: Input should be a valid integer"),
        ({"gpus": 2}, "resources.gpus: unknown field"),
    ],
)
def test_a_wrong_resource_need_is_refused_by_its_path(resources: object, error: str) -> None:
    with pytest.raises(ManifestError, match=error):
        parse_manifest(_manifest_with(resources), "manifest.yaml")


# --- which actors fit --------------------------------------------------------------


def test_a_model_without_needs_fits_every_actor() -> None:
    for device in (CPU, GPU_16G, GPU_UNKNOWN, None):
        assert fits(None, device)
        assert fits(Resources(), device)


def test_a_model_that_requires_a_gpu_fits_only_gpu_actors() -> None:
    needs = Resources(requires_gpu=True)
    assert [fits(needs, d) for d in (CPU, GPU_16G, GPU_UNKNOWN, None)] == [
        False,
        True,
        True,
        False,  # an actor that did not say what it runs on
    ]


def test_a_gpu_memory_need_fits_a_gpu_with_that_much_or_the_cpu_unless_required() -> None:
    assert fits(Resources(gpu_memory_mib=16384), GPU_16G)
    assert not fits(Resources(gpu_memory_mib=16385), GPU_16G)
    assert not fits(Resources(gpu_memory_mib=1), GPU_UNKNOWN)  # cannot be told: not sent
    assert fits(Resources(gpu_memory_mib=16385), CPU)  # it runs on the CPU too
    assert not fits(Resources(requires_gpu=True, gpu_memory_mib=1), CPU)


def test_an_actor_holding_half_a_gpu_offers_half_its_memory() -> None:
    said = {"device": "GPU", "gpu_ids": ["0"], "gpu_memory_mib": 81920}
    assert ActorDevice.of(said, 0.5) == ActorDevice(True, 40960)
    assert ActorDevice.of(said, 2.0) == ActorDevice(True, 81920)
    assert ActorDevice.of({"device": "GPU", "gpu_memory_mib": None}, 1.0) == GPU_UNKNOWN
    assert ActorDevice.of({"device": "CPU"}, 0.0) == CPU


# --- the actor slots ---------------------------------------------------------------


def _wait_until_waiting(slots: ActorSlots, n: int) -> None:
    deadline = time.monotonic() + 5
    while slots.waiting < n:  # the thread is in line (a condition, not a fixed sleep)
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_work_takes_only_an_actor_it_fits() -> None:
    slots = ActorSlots(3)
    assert slots.acquire([2]) == 2
    assert slots.acquire([1, 2]) == 1
    assert slots.acquire([0, 1, 2]) == 0
    with pytest.raises(ValueError, match="at least one actor"):
        slots.acquire([])


def test_a_work_waiting_for_a_busy_gpu_actor_does_not_hold_up_one_that_fits_the_cpu() -> None:
    slots = ActorSlots(2)
    assert slots.acquire([0]) == 0  # the GPU actor is busy
    got: list[int] = []
    gpu_work = threading.Thread(target=lambda: got.append(slots.acquire([0], priority=10)))
    gpu_work.start()
    _wait_until_waiting(slots, 1)
    assert slots.acquire([0, 1]) == 1  # a STAT GPU work waits; this one takes the CPU actor
    assert got == []
    slots.release(0)
    gpu_work.join(5)
    assert got == [0]


def test_stat_overtakes_routine_among_works_that_fit_the_same_actor() -> None:
    slots = ActorSlots(2)
    slots.acquire([0])
    slots.acquire([1])
    order: list[str] = []

    def work(name: str, fit: list[int], priority: int) -> None:
        i = slots.acquire(fit, priority)
        order.append(name)
        slots.release(i)

    threads = []
    for n, (name, fit, priority) in enumerate(
        (("routine 1", [0], 0), ("routine 2", [0, 1], 0), ("STAT", [0], 10))
    ):
        t = threading.Thread(target=work, args=(name, fit, priority))
        t.start()
        threads.append(t)
        _wait_until_waiting(slots, n + 1)
    slots.release(0)
    for t in threads:
        t.join(5)
    # actor 0 went to STAT first; then routine 1 and routine 2 in arrival order
    assert order == ["STAT", "routine 1", "routine 2"]


# --- on a Ray cluster with one logical GPU -----------------------------------------

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'cds[ray]'")

from cds.compute_ray import RayCompute  # noqa: E402 (after the importorskip)


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[None]:
    """A Ray of this module's own: 2 CPUs and one logical GPU."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bone model as is, needing a GPU, and needing a GPU of 1 TiB."""
    out = {}
    for name, resources in (
        ("plain", None),
        ("gpu", {"requires_gpu": True}),
        ("huge", {"requires_gpu": True, "gpu_memory_mib": 1_048_576}),
    ):
        pkg = tmp_path_factory.mktemp(name) / "cds-ref-ct-bone"
        shutil.copytree(BONE, pkg)
        if resources is not None:
            (pkg / "manifest.yaml").write_text(yaml.safe_dump(_manifest_with(resources)))
        out[name] = pkg
    return out


@pytest.fixture
def ct_series(corpus: Path) -> list[Path]:
    return sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:4]


def _work(pkg: Path, files: list[Path]) -> SeriesWork:
    return SeriesWork(
        model="cds-ref-ct-bone",
        package=pkg,
        sha256=hashlib.sha256((pkg / "model.onnx").read_bytes()).hexdigest(),
        providers="cpu",
        files=tuple(files),
        kinds=("SR",),
        lang="en",
        seed=inputs_seed(files),
    )


def test_a_model_that_needs_a_gpu_runs_only_on_the_gpu_actor(
    gpu_cluster: None, packages: dict[str, Path], ct_series: list[Path]
) -> None:
    compute = RayCompute("local", workers=2, gpus_per_worker=1, gpu_workers=1, log_level="warning")
    try:
        on_gpu, anywhere = _work(packages["gpu"], ct_series), _work(packages["plain"], ct_series)
        assert compute.fitting(on_gpu) == [0]
        assert compute.fitting(anywhere) == [0, 1]
        info = compute.workers_info()
        assert [(w["worker"], w["device"]) for w in info] == [
            ("actor 0", "GPU"),
            ("actor 1", "CPU"),
        ]
        assert info[0]["gpu_ids"] == ["0"]

        held = compute._slots.acquire([0])  # the GPU actor busy with another work
        done: list[int] = []
        waiting = threading.Thread(target=lambda: done.append(len(compute.run(on_gpu).objects)))
        waiting.start()
        _wait_until_waiting(compute._slots, 1)
        compute.run(anywhere)  # not held up: it fits the CPU actor, which is free
        assert done == []  # the GPU work still waits for the GPU actor
        compute._slots.release(held)
        waiting.join(120)
        assert done == [1]  # its SR
        by_actor = {w["worker"]: (w["done"], w["models"]) for w in compute.workers_info()}
        assert by_actor == {
            "actor 0": (1, ["cds-ref-ct-bone"]),
            "actor 1": (1, ["cds-ref-ct-bone"]),
        }
    finally:
        compute.shutdown()


def test_a_model_no_actor_fits_fails_at_once_naming_what_it_needs(
    gpu_cluster: None, packages: dict[str, Path], ct_series: list[Path]
) -> None:
    compute = RayCompute("local", workers=2, gpus_per_worker=1, gpu_workers=1, log_level="warning")
    try:
        with pytest.raises(ModelError) as err:
            compute.run(_work(packages["huge"], ct_series))
        said = str(err.value)
        assert said.startswith(
            "model cds-ref-ct-bone needs a GPU with at least 1048576 MiB of memory "
            "(manifest resources); no Ray actor fits it (actor 0: GPU, "
        )
        assert "actor 1: CPU)" in said
        assert [w["done"] + w["failed"] for w in compute.workers_info()] == [0, 0]  # never sent
    finally:
        compute.shutdown()
