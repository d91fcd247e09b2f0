"""The ``executor`` and ``inference`` sections: where a model's work runs, and on what."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cds.config.bundled import bundled_model_dirs
from cds.config.types import _Section

__all__ = ["ExecutorSettings", "InferenceSettings"]


class ExecutorSettings(_Section):
    """Where a model's work on a series runs (``cds.compute``)."""

    kind: Literal["thread", "process", "ray"] = Field(
        "thread",
        description="thread: in the node's own worker threads; process: in worker "
        "processes (a crash in a model's native code costs its job, not the node); ray: "
        "on Ray actors (pip install 'cds[ray]')",
    )
    workers: int = Field(
        2, ge=1, le=256, description="worker processes (process) or inference actors (ray)"
    )
    address: str = Field(
        "local",
        min_length=1,
        description="ray: local (a Ray instance inside the node), auto (the cluster of "
        "'ray start --head' on this machine) or ray://host:port",
    )
    gpus_per_worker: float = Field(0.0, ge=0, le=16, description="ray: GPUs each actor holds")
    gpu_workers: int | None = Field(
        None,
        ge=0,
        le=256,
        description="ray: how many of the actors hold gpus_per_worker GPUs (default: all); "
        "the others run on the CPU. A model whose manifest says resources.requires_gpu runs "
        "only on an actor with a GPU",
    )

    @model_validator(mode="after")
    def _gpu_workers_of_workers(self) -> ExecutorSettings:
        if self.gpu_workers is not None and self.gpu_workers > self.workers:
            raise ValueError(
                f"executor.gpu_workers ({self.gpu_workers}) must not exceed executor.workers "
                f"({self.workers})"
            )
        return self


class InferenceSettings(_Section):
    model_dirs: list[Path] = Field(
        default_factory=bundled_model_dirs,  # the reference models shipped in the package
        description="folders holding model packages (each sub-folder with a manifest.yaml); "
        "null (the default): the reference models shipped in the package; [] none",
    )
    providers: Literal["auto", "tensorrt", "cuda", "cpu"] = Field(
        "auto", description="auto = TensorRT/CUDA when really available, else CPU"
    )
    gpus: list[int] | Literal["auto"] = Field(
        "auto",
        description="GPU ids the node's sessions may use, e.g. [0, 1]; auto = every GPU "
        "the driver shows (none: the CPU, as with providers: cpu). Each model's session "
        "goes on the least loaded of them",
    )
    max_sessions_per_gpu: int = Field(
        1, ge=1, le=64, description="sessions running at once on each GPU id"
    )
    max_sessions_cpu: int = Field(1, ge=1, le=64)
    warm_up: bool = True
    preread_mb: int = Field(
        1024,
        ge=0,
        le=1_048_576,
        description="memory for reading and decoding a study's series during its quiet "
        "time, and making its model's input batches, before the model runs (executor.kind "
        "thread); a file over it is read by its job; 0: every job reads its files",
    )

    @field_validator("model_dirs", mode="before")
    @classmethod
    def _bundled_when_null(cls, value: object) -> object:
        return bundled_model_dirs() if value is None else value

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_ids(cls, value: object) -> object:
        ids = value if isinstance(value, list) else None
        if value == "auto" or (
            ids and all(type(g) is int and 0 <= g < 64 for g in ids) and len(set(ids)) == len(ids)
        ):
            return value
        raise ValueError("must be auto or a list of distinct GPU ids 0..63, e.g. [0, 1]")

    golden_at_load: bool = Field(
        True,
        description="run each package's golden cases (end to end, read back from the "
        "encoded objects) when the node loads it: a package whose findings no longer land "
        "where its golden cases say is broken and never runs",
    )
    max_job_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="a study whose processing crashes this many times goes to the dead "
        "letter (state failed, an alert), instead of crashing the node again",
    )
