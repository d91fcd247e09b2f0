"""Run a loaded model on a series: decode, preprocess, batched inference, postprocess.

Preprocessing of batch k+1 runs on a worker thread while batch k is in
onnxruntime (which releases the GIL); ``run_series_list`` also decodes the
next series while the current one is inferred. Every run returns an
``InferenceRecord``: model name, version, SHA-256 of model.onnx, provider
really used, cds version, input series UIDs, timings. That record is what
makes a result reproducible and reviewable.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from cds import __version__
from cds.errors import ModelError
from cds.inference import manifest as mf
from cds.inference.images import ImageStack, decode
from cds.inference.postprocess import Finding, ImageRef, postprocess
from cds.inference.preprocess import Geometry, _orient, preprocess
from cds.inference.registry import LoadedModel
from cds.inference.session import DeviceSlots
from cds.logging import get_logger

log = get_logger("cds.inference")


@dataclass(frozen=True, slots=True)
class InferenceRecord:
    model: str
    version: str
    sha256: str
    provider: str
    cds_version: str
    series_uids: tuple[str, ...]
    images: int
    seconds: float
    timings: dict[str, float]


@dataclass
class InferenceResult:
    record: InferenceRecord
    kind: str
    findings: list[Finding]
    raw: dict[str, np.ndarray]  # model outputs over the whole series, in image order
    images: list[ImageRef]


def _subset(stack: ImageStack, idx: slice) -> ImageStack:
    sub = ImageStack(
        stack.series_uid, stack.modality, stack.pixels[idx], stack.meta[idx], stack.lut_applied
    )
    sub.flips = stack.flips[idx]
    sub.order = stack.order[idx]
    return sub


class ModelRunner:
    def __init__(self, model: LoadedModel, slots: DeviceSlots) -> None:
        if model.status != "ready" or model.session is None or model.manifest is None:
            raise ModelError(f"model {model.name} is not ready: {'; '.join(model.errors)}")
        self.model = model
        self.manifest: mf.Manifest = model.manifest
        self.session = model.session
        self._slot = slots.slot(model.session.device)

    # --- batches -----------------------------------------------------------
    def _batches(
        self, stack: ImageStack, timings: dict[str, float]
    ) -> Iterator[tuple[np.ndarray, list[Geometry]]]:
        spec = self.manifest.input
        steps = list(spec.preprocessing)
        t0 = time.perf_counter()
        if any(isinstance(s, mf.Orient) for s in steps):
            _orient(stack)
            steps = [s for s in steps if not isinstance(s, mf.Orient)]
        timings["preprocess"] += time.perf_counter() - t0
        if spec.kind == "volume":
            t0 = time.perf_counter()
            batch = preprocess(stack, steps, spec)
            timings["preprocess"] += time.perf_counter() - t0
            yield batch
            return
        size = spec.batch_size
        chunks = [slice(i, i + size) for i in range(0, len(stack), size)]
        q: queue.Queue[Any] = queue.Queue(maxsize=2)

        def produce() -> None:
            try:
                for c in chunks:
                    t = time.perf_counter()
                    item = preprocess(_subset(stack, c), steps, spec)
                    timings["preprocess"] += time.perf_counter() - t
                    q.put(item)
                q.put(None)
            except BaseException as exc:  # handed to the consumer
                q.put(exc)

        worker = threading.Thread(target=produce, name="cds-preprocess", daemon=True)
        worker.start()
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise ModelError(f"preprocessing failed: {item}") from item
            yield item
        worker.join()

    def run(self, stack: ImageStack) -> InferenceResult:
        m = self.manifest
        t_start = time.perf_counter()
        timings = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        names = [t.name for t in m.output.tensors]
        outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
        geometry: list[Geometry] = []
        for tensor, geoms in self._batches(stack, timings):
            t0 = time.perf_counter()
            with self._slot:
                got = self.session.run({m.input.tensor.name: tensor}, names)
            timings["inference"] += time.perf_counter() - t0
            for n, arr in zip(names, got, strict=True):
                outs[n].append(np.asarray(arr))
            geometry.extend(geoms)
        raw = {n: np.concatenate(v, axis=0) if v else np.empty(0) for n, v in outs.items()}
        images = [ImageRef(mt.sop_uid, mt.frame) for mt in stack.meta]
        t0 = time.perf_counter()
        findings = postprocess(m.output, raw, images, geometry, stack)
        timings["postprocess"] = time.perf_counter() - t0
        seconds = time.perf_counter() - t_start
        record = InferenceRecord(
            model=m.name,
            version=m.version,
            sha256=self.model.sha256 or "",
            provider=self.session.provider_short,
            cds_version=__version__,
            series_uids=(stack.series_uid,),
            images=len(images),
            seconds=seconds,
            timings={k: round(v, 4) for k, v in timings.items()},
        )
        log.info(
            "inference.run",
            model=m.name,
            version=m.version,
            provider=record.provider,
            images=len(images),
            seconds=round(seconds, 3),
            **record.timings,
        )
        return InferenceResult(record, m.output.kind, findings, raw, images)


def run_series_list(
    runner: ModelRunner, series: Sequence[Sequence[Dataset | Path | str]]
) -> Iterator[InferenceResult]:
    """Run one model over several series, decoding the next while the current runs."""
    if not series:
        return
    pending: queue.Queue[Any] = queue.Queue(maxsize=1)

    def decoder() -> None:
        for s in series:
            try:
                pending.put(decode(s))
            except BaseException as exc:  # handed to the consumer
                pending.put(exc)

    threading.Thread(target=decoder, name="cds-decode", daemon=True).start()
    for _ in series:
        item = pending.get()
        if isinstance(item, BaseException):
            raise item
        yield runner.run(item)
