"""issue 20, multi-GPU without Ray: a session is made on one GPU id (the GPU providers carry
its ``device_id``), the least loaded of ``inference.gpus``, and runs in that GPU id's
slots; on a machine without a GPU nothing changes. No GPU is needed: onnxruntime's
session is replaced where a GPU provider must be seen in use."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError
from structlog.testing import capture_logs
from typer.testing import CliRunner

from cds import compute
from cds.cli import admin as cli_admin
from cds.compute import Compute, worker_gpu
from cds.config import ExecutorSettings, InferenceSettings
from cds.inference import session as sess
from cds.inference.registry import ModelRegistry
from cds.inference.session import (
    DeviceSlots,
    Gpu,
    Session,
    least_loaded,
    provider_options,
    resolve_gpus,
)

REPO = Path(__file__).resolve().parents[1]
BONE = REPO / "models" / "cds-ref-ct-bone" / "model.onnx"
CUDA, TRT, CPU = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"


def test_the_gpu_providers_of_a_session_on_gpu_1_carry_device_id_1() -> None:
    assert provider_options([TRT, CUDA, CPU], 1) == [
        (TRT, {"device_id": 1}),
        (CUDA, {"device_id": 1}),
        CPU,
    ]


def test_without_a_gpu_id_the_providers_are_asked_as_before() -> None:
    assert provider_options([CUDA, CPU], None) == [CUDA, CPU]
    assert provider_options([CPU], 3) == [CPU]


def test_a_new_session_goes_on_the_least_loaded_gpu_the_first_listed_on_a_tie() -> None:
    assert least_loaded([0, 1], []) == 0
    assert least_loaded([0, 1], ["GPU0"]) == 1
    assert least_loaded([0, 1], ["GPU0", "GPU1", "GPU1", "CPU"]) == 0
    assert least_loaded([1, 0], ["CPU"]) == 1
    assert least_loaded([], ["GPU0"]) is None  # no GPU to use: onnxruntime's default


def test_device_slots_place_by_the_sessions_already_made() -> None:
    slots = DeviceSlots(per_gpu=1, per_cpu=1, gpus=[0, 1])
    assert [slots.place(p) for p in ([], ["GPU0"], ["GPU0", "GPU1"])] == [0, 1, 0]
    assert DeviceSlots(1, 1).place(["GPU0"]) is None  # as today: no GPU ids configured


def test_slots_are_bounded_per_gpu_id() -> None:
    slots = DeviceSlots(per_gpu=2, per_cpu=1, gpus=[0, 1])
    gpu0 = slots.slot("GPU0")
    assert gpu0 is slots.slot("GPU0")
    assert gpu0.acquire(blocking=False)
    assert gpu0.acquire(blocking=False)
    assert not gpu0.acquire(blocking=False)  # GPU0 is full ...
    gpu1 = slots.slot("GPU1")
    assert gpu1.acquire(blocking=False)  # ... GPU1 has its own slots
    cpu = slots.slot("CPU")
    assert cpu.acquire(blocking=False)
    assert not cpu.acquire(blocking=False)


def test_device_slots_describe_each_gpu_id_and_the_cpu_when_used() -> None:
    slots = DeviceSlots(per_gpu=2, per_cpu=1, gpus=[0, 1])
    assert slots.describe([("b", "GPU1"), ("a", "GPU1"), ("c", "CPU")]) == [
        {"device": "GPU0", "max_sessions": 2, "models": []},
        {"device": "GPU1", "max_sessions": 2, "models": ["a", "b"]},
        {"device": "CPU", "max_sessions": 1, "models": ["c"]},
    ]
    assert DeviceSlots(1, 1).describe([("a", "CPU")]) == [
        {"device": "CPU", "max_sessions": 1, "models": ["a"]}
    ]


def test_auto_is_every_visible_gpu_and_a_list_keeps_the_visible_ones() -> None:
    assert resolve_gpus("auto", [1, 0]) == ([0, 1], [])
    assert resolve_gpus("auto", []) == ([], [])
    assert resolve_gpus([1, 3], [0, 1]) == ([1], [3])


def test_a_configured_gpu_that_is_not_here_is_left_out_and_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sess, "visible_gpus", lambda: (Gpu(0, 16384),))
    with capture_logs() as logs:
        assert sess.gpu_ids([0, 2]) == [0]
    (event,) = [e for e in logs if e["event"] == "inference.gpu_not_visible"]
    assert (event["gpus"], event["visible"]) == ([2], [0])


class _FakeOrtSession:
    """Stands for onnxruntime's session on a GPU: keeps what it was asked."""

    asked: Any = None

    def __init__(self, path: str, opts: Any, providers: Any) -> None:
        _FakeOrtSession.asked = providers

    def get_providers(self) -> list[str]:
        return [CUDA, CPU]


def test_a_session_made_on_gpu_1_says_gpu1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sess, "requested_providers", lambda choice: [CUDA, CPU])
    monkeypatch.setattr(sess.ort, "InferenceSession", _FakeOrtSession)
    s = Session(BONE, "cuda", device_id=1)
    assert _FakeOrtSession.asked == [(CUDA, {"device_id": 1}), CPU]
    assert (s.device, s.provider_short, s.fell_back) == ("GPU1", "CUDA", False)
    assert Session(BONE, "cuda").device == "GPU0"  # onnxruntime's default device


def test_on_the_cpu_a_session_stays_on_the_cpu_whatever_gpu_id() -> None:
    s = Session(BONE, "cpu", device_id=1)
    assert (s.device, s.provider, s.providers_asked) == ("CPU", CPU, [CPU])


def test_inference_gpus_is_auto_or_distinct_ids() -> None:
    assert InferenceSettings().gpus == "auto"
    assert InferenceSettings(gpus=[1, 0]).gpus == [1, 0]
    for bad in ([], [0, 0], [-1], "all", [64]):
        with pytest.raises(ValidationError, match="must be auto or a list of distinct GPU ids"):
            InferenceSettings(gpus=bad)


def test_gpu_workers_cannot_exceed_workers() -> None:
    assert ExecutorSettings(workers=3, gpu_workers=1).gpu_workers == 1
    with pytest.raises(ValidationError, match=r"gpu_workers \(3\) must not exceed"):
        ExecutorSettings(workers=2, gpu_workers=3)


def test_cds_workers_shows_the_gpus_and_the_actors_devices(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base = {"in_flight": 0, "done": 1, "failed": 0, "busy_seconds": 1.5, "models": ["m"]}
    rows = [
        {
            **base,
            "worker": "node threads",
            "kind": "thread",
            "devices": [
                {"device": "GPU0", "max_sessions": 1, "models": ["m"]},
                {"device": "GPU1", "max_sessions": 1, "models": []},
            ],
        },
        {
            **base,
            "worker": "actor 0",
            "kind": "ray",
            "pid": 7,
            "device": "GPU",
            "gpu_memory_mib": 81920,
        },
        {**base, "worker": "actor 1", "kind": "ray", "pid": 8, "device": "CPU"},
    ]
    monkeypatch.setattr(cli_admin, "_call", lambda settings, path, method: rows)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli_admin_app(), ["workers"])
    assert res.exit_code == 0, res.output
    assert "    GPU0: 1 at once; models: m\n" in res.output
    assert "    GPU1: 1 at once; models: -\n" in res.output
    assert "pid 7 on GPU (81920 MiB); models: m" in res.output
    assert "pid 8 on CPU; models: m" in res.output
    res = CliRunner().invoke(cli_admin_app(), ["workers", "--json"])
    assert json.loads(res.output) == rows


def cli_admin_app() -> typer.Typer:
    app = typer.Typer()
    app.command("workers")(cli_admin.workers_cmd)
    app.command("unused")(lambda: None)  # two commands: typer keeps the command's name
    return app


class _Loaded:
    def __init__(self, name: str, device: str) -> None:
        self.name = name
        self.session = type("S", (), {"device": device})()


class _Registry:
    """What ``Compute`` reads of the node's registry: the loaded models and the slots."""

    slots = DeviceSlots(per_gpu=2, per_cpu=1, gpus=[0, 1])

    def all(self) -> list[_Loaded]:
        return [_Loaded("a", "GPU1"), _Loaded("b", "GPU0"), _Loaded("c", "GPU1")]


def test_the_node_threads_show_each_gpu_and_the_models_on_it() -> None:
    """/api/workers (cds workers) for executor.kind thread."""
    (row,) = Compute(_Registry(), "thread").workers_info()  # type: ignore[arg-type]
    assert row["worker"] == "node threads"
    assert row["devices"] == [
        {"device": "GPU0", "max_sessions": 2, "models": ["b"]},
        {"device": "GPU1", "max_sessions": 2, "models": ["a", "c"]},
    ]


def test_worker_processes_take_the_gpu_ids_in_turn() -> None:
    assert [worker_gpu(i, [0, 1]) for i in range(4)] == [0, 1, 0, 1]
    assert [worker_gpu(i, [2, 0, 1]) for i in range(4)] == [2, 0, 1, 2]
    assert worker_gpu(3, []) is None  # no GPU ids: onnxruntime's default device


def _gpu_after_all_started(barrier: Any) -> int | None:
    """In a worker: wait until both workers run (so each takes one task), then say the
    GPU id the worker took at its start."""
    barrier.wait()
    return compute._worker_device()


def test_two_worker_processes_on_two_gpus_make_their_sessions_one_on_each() -> None:
    """The process kind: each worker takes the next GPU id when it starts, and its
    sessions are made there (``validate_package(device_id=...)``); ``cds workers`` says
    how many workers each GPU id has."""
    registry = ModelRegistry([], "cpu", warm=False)
    runner = Compute(registry, "process", workers=2, gpus=[0, 1])
    manager = multiprocessing.get_context("spawn").Manager()
    try:
        barrier = manager.Barrier(2, timeout=120)
        with runner._lock:
            pool = runner._started_pool()
        futures = [pool.submit(_gpu_after_all_started, barrier) for _ in range(2)]
        assert sorted(f.result(timeout=180) for f in futures) == [0, 1]
        (row,) = runner.workers_info()
        assert row["devices"] == [
            {"device": "GPU0", "workers": 1},
            {"device": "GPU1", "workers": 1},
        ]
    finally:
        runner.shutdown()
        manager.shutdown()


def test_without_gpu_ids_worker_processes_use_onnxruntime_default_device() -> None:
    runner = Compute(ModelRegistry([], "cpu", warm=False), "process", workers=1)
    try:
        with runner._lock:
            pool = runner._started_pool()
        assert pool.submit(compute._worker_device).result(timeout=180) is None
        assert "devices" not in runner.workers_info()[0]
    finally:
        runner.shutdown()
