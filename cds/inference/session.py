"""onnxruntime sessions, with the execution provider actually in use reported honestly.

The onnxruntime-gpu wheel lists CUDA (and TensorRT) as *available* on
machines without a GPU, then silently falls back to the CPU when a session is
created. So the provider we report is ``session.get_providers()[0]`` after
creation, never the one we asked for.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from cds.errors import ModelError

ProviderChoice = Literal["auto", "tensorrt", "cuda", "cpu"]

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
    """Bounds how many sessions run at once on each device (GPU memory, fairness)."""

    def __init__(self, per_gpu: int, per_cpu: int) -> None:
        self._per = {"gpu": per_gpu, "cpu": per_cpu}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def slot(self, device: str) -> threading.BoundedSemaphore:
        with self._lock:
            if device not in self._slots:
                kind = "cpu" if device == "CPU" else "gpu"
                self._slots[device] = threading.BoundedSemaphore(self._per[kind])
            return self._slots[device]


class Session:
    """One onnxruntime session of one model, and the provider it really uses."""

    def __init__(
        self,
        model_path: Path,
        choice: ProviderChoice = "auto",
        intra_op_threads: int = 0,
        *,
        threads: Threads | None = None,
    ) -> None:
        """``intra_op_threads`` (> 0) caps the threads of one operator; ``threads`` sets
        them all; by default ``cpu_threads()``: every usable core, no spinning."""
        self.threads = threads if threads is not None else cpu_threads(intra_op_threads)
        opts = session_options(self.threads)
        asked = requested_providers(choice)
        try:
            self._session = ort.InferenceSession(str(model_path), opts, providers=asked)
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
        return "CPU" if self.provider == "CPUExecutionProvider" else "GPU0"

    def inputs(self) -> list[Any]:
        return list(self._session.get_inputs())

    def outputs(self) -> list[Any]:
        return list(self._session.get_outputs())

    def run(self, feeds: dict[str, np.ndarray], names: Sequence[str] | None = None) -> list[Any]:
        return list(self._session.run(list(names) if names else None, feeds))
