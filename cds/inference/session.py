"""onnxruntime sessions, with the execution provider actually in use reported honestly.

The onnxruntime-gpu wheel lists CUDA (and TensorRT) as *available* on
machines without a GPU, then silently falls back to the CPU when a session is
created. So the provider we report is ``session.get_providers()[0]`` after
creation, never the one we asked for.

GPUs (``inference.gpus``): a session is made on one GPU id (the CUDA and TensorRT providers
are given its ``device_id``), the least loaded of the ids the node may use (``least_loaded``),
and ``DeviceSlots`` bounds the sessions running at once on each GPU id (``GPU0``, ``GPU1``,
...). Without a usable GPU nothing changes: the CPU provider, one ``CPU`` slot.

Threads (``cpu_threads``): the model's operators get every core this process may use
(``os.sched_getaffinity``: a container's or ``taskset``'s limit, not the host's count),
nodes run one after the other (one inter-op thread), and onnxruntime's threads sleep
instead of spinning when they wait, so that the runner's preprocessing of the next batch
and its postprocessing take the cores in the gaps rather than compete with threads
that busy-wait.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from cds.errors import ModelError
from cds.logging import get_logger

ProviderChoice = Literal["auto", "tensorrt", "cuda", "cpu"]
#: the GPU ids the node may use (``inference.gpus``): a list, or every visible device
GpuChoice = list[int] | Literal["auto"]
#: what onnxruntime is given: a provider's name, or its name and options
ProviderArg = str | tuple[str, dict[str, Any]]

log = get_logger("cds.inference")

_PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
#: short names shown to people
SHORT = {v: k.upper() if k != "tensorrt" else "TensorRT" for k, v in _PROVIDER_NAMES.items()}
SHORT["CUDAExecutionProvider"] = "CUDA"
SHORT["CPUExecutionProvider"] = "CPU"

ort.set_default_logger_severity(3)  # the fallback warnings are reported our way


def _loadable(*names: str) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


@functools.cache
def gpu_runtime_present() -> bool:
    """An NVIDIA driver is installed (the wheel's CUDA provider cannot work without one)."""
    return _loadable("libcuda.so.1")


@functools.cache
def tensorrt_present() -> bool:
    return _loadable("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")


def requested_providers(choice: ProviderChoice) -> list[str]:
    """Providers to ask onnxruntime for, best first.

    Providers whose libraries cannot load here are not asked for at all, which
    spares the noisy fallback of onnxruntime; what is really used is still read
    back from the session.
    """
    available = set(ort.get_available_providers())
    if not gpu_runtime_present():
        available -= {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    if not tensorrt_present():
        available.discard("TensorrtExecutionProvider")
    if choice == "cpu":
        return ["CPUExecutionProvider"]
    wanted = {
        "auto": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
        "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
        "cuda": ["CUDAExecutionProvider"],
    }[choice]
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def provider_options(asked: Sequence[str], device_id: int | None) -> list[ProviderArg]:
    """``asked`` as onnxruntime takes them: the GPU providers with ``device_id`` when the
    session is placed on a GPU id (``None``: onnxruntime's default device, GPU 0)."""
    if device_id is None:
        return list(asked)
    return [(p, {"device_id": device_id}) if p in _GPU_PROVIDERS else p for p in asked]


@dataclass(frozen=True, slots=True)
class Gpu:
    """A GPU this process sees (CUDA's numbering, after ``CUDA_VISIBLE_DEVICES``)."""

    id: int
    memory_mib: int


@functools.cache
def visible_gpus() -> tuple[Gpu, ...]:
    """The GPUs the NVIDIA driver shows this process; none without a driver or device."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return ()
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return ()
    out = []
    for i in range(count.value):
        dev, total = ctypes.c_int(0), ctypes.c_size_t(0)
        if cuda.cuDeviceGet(ctypes.byref(dev), i) != 0:
            continue
        if cuda.cuDeviceTotalMem_v2(ctypes.byref(total), dev) != 0:
            continue
        out.append(Gpu(i, total.value // 2**20))
    return tuple(out)


def resolve_gpus(choice: GpuChoice, visible: Sequence[int]) -> tuple[list[int], list[int]]:
    """(the GPU ids to use, the configured ids not visible here): ``auto`` is every
    visible id; a list keeps its order, without repeats."""
    if choice == "auto":
        return sorted(set(visible)), []
    wanted = list(dict.fromkeys(choice))
    return [g for g in wanted if g in visible], [g for g in wanted if g not in visible]


def gpu_ids(choice: GpuChoice) -> list[int]:
    """``resolve_gpus`` against this machine's GPUs; a configured id that is not here is
    left out, and said (``inference.gpu_not_visible``)."""
    visible = [g.id for g in visible_gpus()]
    use, missing = resolve_gpus(choice, visible)
    if missing:
        log.warning("inference.gpu_not_visible", gpus=missing, visible=visible)
    return use


def device_name(device_id: int) -> str:
    return f"GPU{device_id}"


def least_loaded(gpus: Sequence[int], placed: Iterable[str]) -> int | None:
    """The GPU id of ``gpus`` holding the fewest of the sessions ``placed`` (their
    devices: ``GPU1``, ``CPU``), the first listed on a tie; ``None`` when there is none."""
    if not gpus:
        return None
    held = list(placed)
    return min(gpus, key=lambda g: held.count(device_name(g)))


@dataclass(frozen=True, slots=True)
class Threads:
    """The threads one onnxruntime session runs with (``cpu_threads``)."""

    cores: int  # cores this process may use
    intra_op: int  # threads of one operator (the caller's thread is one of them)
    inter_op: int  # operators at once; 1: in sequence
    spinning: bool  # whether idle threads busy-wait for the next operator


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (a container's or taskset's
    limit), or the machine's count where affinity is unknown."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_threads(intra_op: int = 0, cores: int | None = None) -> Threads:
    """Threads for a session: ``intra_op`` when given (> 0), else every usable core.

    The model's operators are the heavy work, so they get all the cores; a second
    inter-op pool would only oversubscribe them (the bundled graphs, a U-Net included,
    are chains). Spinning is off: between operators and between batches onnxruntime's
    threads sleep, and the preprocessing thread and postprocessing use those gaps."""
    n = cores if cores is not None else usable_cores()
    return Threads(cores=n, intra_op=intra_op if intra_op > 0 else n, inter_op=1, spinning=False)


def session_options(threads: Threads) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.use_deterministic_compute = True
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads.intra_op
    opts.inter_op_num_threads = threads.inter_op
    spin = "1" if threads.spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return opts


class DeviceSlots:
    """Bounds how many sessions run at once on each device (GPU memory, fairness): at most
    ``per_gpu`` on each GPU id, ``per_cpu`` on the CPU; and places new sessions on the
    least loaded of ``gpus`` (none: onnxruntime's default device, as without this)."""

    def __init__(self, per_gpu: int, per_cpu: int, gpus: Sequence[int] = ()) -> None:
        self.gpus = list(gpus)
        self._per = {"gpu": per_gpu, "cpu": per_cpu}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def slot(self, device: str) -> threading.BoundedSemaphore:
        with self._lock:
            if device not in self._slots:
                kind = "cpu" if device == "CPU" else "gpu"
                self._slots[device] = threading.BoundedSemaphore(self._per[kind])
            return self._slots[device]

    def place(self, placed: Iterable[str]) -> int | None:
        """The GPU id for a new session, given the devices of the sessions already made."""
        return least_loaded(self.gpus, placed)

    def describe(self, sessions: Iterable[tuple[str, str]]) -> list[dict[str, object]]:
        """For ``cds workers``: each GPU id the node may use (and the CPU when a session
        runs there), its sessions at once at most, and the models (name, device) on it."""
        held = list(sessions)
        devices = [device_name(g) for g in self.gpus]
        devices += sorted({d for _, d in held} - set(devices))
        return [
            {
                "device": d,
                "max_sessions": self._per["cpu" if d == "CPU" else "gpu"],
                "models": sorted(m for m, on in held if on == d),
            }
            for d in devices
        ]


class Session:
    """One onnxruntime session of one model, and the provider it really uses."""

    def __init__(
        self,
        model_path: Path,
        choice: ProviderChoice = "auto",
        intra_op_threads: int = 0,
        *,
        threads: Threads | None = None,
        device_id: int | None = None,
    ) -> None:
        """``intra_op_threads`` (> 0) caps the threads of one operator; ``threads`` sets
        them all; by default ``cpu_threads()``: every usable core, no spinning.
        ``device_id``: the GPU id the GPU providers run on (default: onnxruntime's, 0)."""
        self.threads = threads if threads is not None else cpu_threads(intra_op_threads)
        opts = session_options(self.threads)
        asked = requested_providers(choice)
        self.device_id = device_id
        try:
            self._session = ort.InferenceSession(
                str(model_path), opts, providers=provider_options(asked, device_id)
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{model_path}: onnxruntime cannot load the model: {exc}") from exc
        self.providers_asked = asked
        self.provider: str = str(self._session.get_providers()[0])
        self.fell_back = self.provider != asked[0]

    @property
    def provider_short(self) -> str:
        return SHORT.get(self.provider, self.provider)

    @property
    def device(self) -> str:
        """Where it runs: ``CPU``, or ``GPU<n>`` of the GPU id it was made on."""
        if self.provider == "CPUExecutionProvider":
            return "CPU"
        return device_name(self.device_id or 0)

    def inputs(self) -> list[Any]:
        return list(self._session.get_inputs())

    def outputs(self) -> list[Any]:
        return list(self._session.get_outputs())

    def run(self, feeds: dict[str, np.ndarray], names: Sequence[str] | None = None) -> list[Any]:
        return list(self._session.run(list(names) if names else None, feeds))
