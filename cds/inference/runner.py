"""Run a loaded model on a series: declared use, decode, preprocess, inference, postprocess.

The series is checked against the model's declared use first (``constraints``): a
model never runs outside it. A volume's slices are sorted along their normal
whatever order they arrived in. Preprocessing of batch k+1 runs on a worker thread
while batch k is in onnxruntime (which releases the GIL); for a segmentation of slices,
so does the postprocessing of batch k-1 (masks back to the source grid, the heavy part),
whose findings are then joined into the series' (``_join_segmentation``: the same
findings as one postprocessing of the whole series); ``run_series_list`` also decodes
the next series while the current one is inferred. onnxruntime's threads
(``cds.inference.session.cpu_threads``) sleep rather than spin in the gaps. Every output is checked
against its layout as it comes back (``layouts.canonical``: an error names the
tensor and what to change, never a traceback). Every run returns an
``InferenceRecord``: model name, version, SHA-256 of model.onnx and of the manifest,
provider really used, cds version, input series UIDs, timings. That record is what
makes a result reproducible and reviewable.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from cds import __version__
from cds.errors import ModelError
from cds.findings import Finding, ImageRef, InferenceRecord, InferenceResult, Masks
from cds.inference import layouts
from cds.inference import manifest as mf
from cds.inference.constraints import OutsideDeclaredUse, stack_violations
from cds.inference.geometry import Geometry
from cds.inference.images import ImageStack, decode
from cds.inference.images import no_pixels as _no_pixels
from cds.inference.images import subset as _subset
from cds.inference.postprocess import Outputs, postprocess
from cds.inference.preprocess import (
    Batches,
    Prepared,
    in_batches,
    preprocess,
    slice_positions,
    sort_slices,
)
from cds.inference.registry import LoadedModel
from cds.inference.session import DeviceSlots
from cds.logging import get_logger

log = get_logger("cds.inference")

#: roles whose outputs are kept per image (their count of boxes varies)
_PER_IMAGE = ("boxes", "box_scores", "box_labels")
#: roles with one class per position of their C dimension
_PER_CLASS = ("scores", "value", "box_scores")


def _made_ahead(ready: Prepared | None, digest: str, images: int) -> tuple[Batches, float] | None:
    """This manifest's batches made ahead, when they are one per image of the stack."""
    made = ready.pop(digest, None) if ready else None
    if made is None or sum(len(geoms) for _, geoms in made[0]) != images:
        return None
    return made


def _join(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.empty(0)
    try:
        return np.concatenate(parts, axis=0)
    except ValueError:  # runs of different box counts: keep them flat
        return np.concatenate([p.reshape(-1) for p in parts])


def _join_segmentation(parts: list[list[Finding]], stack: ImageStack) -> list[Finding]:
    """The findings of a series from those of its consecutive runs of slices, exactly as
    ``postprocess`` makes them over the whole series: per image the union (in image
    order), the highest score, present where any run is, the area summed in image order."""
    where = {ImageRef(mt.sop_uid, mt.frame): mt.pixel_spacing for mt in stack.meta}
    joined = []
    for same in zip(*parts, strict=True):
        per = Masks()
        for f in same:
            per.join(f.per_image)  # still packed
        total, known = 0.0, False
        for ref, packed in per.packed_items():
            sp = where[ref]
            if sp is not None:
                total += float(packed.count) * sp[0] * sp[1]
                known = True
        area = total if per and known else None
        score = max(f.score for f in same)
        present = any(f.present for f in same)
        joined.append(Finding(same[0].label, score, present, per, area, None))
    return joined


class _Background:
    """Calls made one after another on a worker thread; ``results`` waits for them all
    and raises the first exception any raised. At most ``pending`` calls wait: ``submit``
    waits for room, so that what they hold (a batch's float outputs) never piles up
    when the calls are slower than whoever submits them (a fast device, a slow CPU)."""

    def __init__(self, name: str, pending: int = 2) -> None:
        self._q: queue.Queue[Callable[[], Any] | None] = queue.Queue(maxsize=pending)
        self._out: list[Any] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (call := self._q.get()) is not None:
            if self._error is None:
                try:
                    self._out.append(call())
                except BaseException as exc:  # handed to results()
                    self._error = exc
            del call  # its outputs go now, not when the next call comes

    def submit(self, call: Callable[[], Any]) -> None:
        self._q.put(call)

    def stop(self) -> None:
        """No more calls: the thread ends once those queued are done (or skipped)."""
        self._error = self._error or RuntimeError("stopped")
        self._q.put(None)

    def results(self) -> list[Any]:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out


class ModelRunner:
    def __init__(self, model: LoadedModel, slots: DeviceSlots) -> None:
        if model.status != "ready" or model.session is None or model.manifest is None:
            raise ModelError(f"model {model.name} is not ready: {'; '.join(model.errors)}")
        self.model = model
        self.manifest: mf.Manifest = model.manifest
        self.session = model.session
        self._slot = slots.slot(model.session.device)
        self._digest = model.manifest.digest()

    # --- batches -----------------------------------------------------------
    def _batches(
        self, stack: ImageStack, timings: dict[str, float], ready: Prepared | None
    ) -> Iterator[tuple[np.ndarray, list[Geometry]]]:
        """The model's input tensors, batch by batch; a ``transient`` stack's decoded
        pixels are dropped once the last batch is made (only the tensors in flight and
        the outputs remain). ``ready``: batches made ahead from this stack's pixels."""
        spec = self.manifest.input

        def done() -> None:
            if stack.transient:
                stack.pixels = _no_pixels(len(stack.meta), stack.pixels.dtype)

        if spec.kind == "volume":
            t0 = time.perf_counter()
            batch = preprocess(stack, list(spec.preprocessing), spec)
            timings["preprocess"] += time.perf_counter() - t0
            done()
            yield batch
            return
        made = _made_ahead(ready, self._digest, len(stack.meta))
        if made is not None:  # made during the quiet time, from these very pixels
            done()
            batches, timings["preprocess_ahead"] = made
            while batches:
                yield batches.pop(0)  # each goes once used
            return
        q: queue.Queue[Any] = queue.Queue(maxsize=2)

        def produce() -> None:
            try:
                t = time.perf_counter()
                for item in in_batches(stack, spec):
                    timings["preprocess"] += time.perf_counter() - t
                    q.put(item)
                    t = time.perf_counter()
                done()
                q.put(None)
            except BaseException as exc:  # handed to the consumer
                q.put(exc)

        worker = threading.Thread(target=produce, name="cds-preprocess", daemon=True)
        worker.start()
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, ModelError):
                raise item
            if isinstance(item, BaseException):
                raise ModelError(f"preprocessing failed: {type(item).__name__}") from item
            yield item
        worker.join()

    def _collect(
        self, got: list[Any], images: int, outputs: Outputs, raw: dict[str, list[Any]] | None
    ) -> None:
        m = self.manifest
        volume = m.input.kind == "volume"
        top = max(lb.index for lb in m.output.labels)
        for i, (t, arr) in enumerate(zip(m.output.tensors, got, strict=True)):
            where = f"output.tensors[{i}] ({t.name!r})"
            a = np.asarray(arr)
            if raw is not None:
                raw[t.name].append(a)
            canon = layouts.canonical(
                t.role, t.layout, a, images=images, volume=volume, where=where
            )
            classes = None
            if (
                t.role in _PER_CLASS
                and canon.ndim >= 2
                and (t.role != "box_scores" or canon.ndim == 3)
            ):
                classes = canon.shape[-1] if t.role == "box_scores" else canon.shape[1]
            elif t.role == "mask" and t.encoding == "probabilities" and "C" in t.layout:
                classes = canon.shape[1]
            if classes is not None and top >= classes:
                raise ModelError(
                    f"{where}: the model returned {classes} classes (dimension C of layout "
                    f"{t.layout}), output.labels has index {top}; fix the labels' index or "
                    "the layout"
                )
            if t.role in _PER_IMAGE:
                outputs.per_image.setdefault(t.role, []).extend(list(canon))
            else:
                prev = outputs.by_role.get(t.role)
                outputs.by_role[t.role] = canon if prev is None else np.concatenate([prev, canon])

    def _infer(self, tensor: np.ndarray, names: list[str]) -> list[Any]:
        m = self.manifest
        with self._slot:
            try:
                return self.session.run({m.input.tensor.name: tensor}, names)
            except Exception as exc:  # onnxruntime raises its own types
                raise ModelError(
                    f"model.onnx of {m.name} failed on an input of shape "
                    f"{list(tensor.shape)} ({type(exc).__name__}); check input.tensor "
                    "(layout, shape, dtype) and cds model validate"
                ) from exc

    def _record(self, stack: ImageStack, images: int, seconds: float,
                timings: dict[str, float]) -> InferenceRecord:  # fmt: skip
        m = self.manifest
        record = InferenceRecord(
            model=m.name,
            version=m.version,
            sha256=self.model.sha256 or "",
            provider=self.session.provider_short,
            cds_version=__version__,
            series_uids=(stack.series_uid,),
            images=images,
            seconds=seconds,
            timings={k: round(v, 4) for k, v in timings.items()},
            manifest_sha256=self._digest,
        )
        log.info(
            "inference.run",
            model=m.name,
            version=m.version,
            provider=record.provider,
            images=images,
            seconds=round(seconds, 3),
            **record.timings,
        )
        return record

    def _declared_use(self, stack: ImageStack) -> np.ndarray | None:
        """A volume's slices sorted, their positions; OutsideDeclaredUse if the series is
        not what the model declares it takes."""
        m = self.manifest
        positions = None
        if m.input.kind == "volume":
            sort_slices(stack, descending=m.input.slice_order == "decreasing")
            positions = slice_positions(stack)
        reasons = stack_violations(m.input, stack, positions)
        if reasons:
            raise OutsideDeclaredUse(f"{m.name} {m.version}", reasons)
        return positions

    def run(
        self, stack: ImageStack, *, keep_raw: bool = False, ready: Prepared | None = None
    ) -> InferenceResult:
        """``timings``: preprocess and postprocess are the time of that work, on worker
        threads where it overlaps inference; inference is onnxruntime's.
        ``ready``: the model's batches made during the quiet time from ``stack.pixels``
        (cds.inference.preread), used instead of preprocessing them again.
        ``keep_raw``: the result keeps the model's outputs over the whole series
        (``InferenceResult.raw``, for tests and tools); the node does not: a
        segmentation's float masks would double its memory until encoding.
        A ``transient`` stack (``decode(..., transient=True)``) loses its pixels as soon
        as the last batch is preprocessed (``stack.pixels`` is then [S, 0, 0])."""
        m = self.manifest
        t_start = time.perf_counter()
        timings = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        volume = m.input.kind == "volume"
        positions = self._declared_use(stack)
        names = [t.name for t in m.output.tensors]
        outputs = Outputs()
        raw: dict[str, list[Any]] | None = {n: [] for n in names} if keep_raw else None
        geometry: list[Geometry] = []
        images = [ImageRef(mt.sop_uid, mt.frame) for mt in stack.meta]
        spacing = None
        if positions is not None and len(positions) > 1:
            spacing = float(np.median(np.abs(np.diff(positions))))

        def post(out: Outputs, idx: slice, geoms: list[Geometry], sub: ImageStack) -> Any:
            t = time.perf_counter()
            try:
                return postprocess(
                    m.output, out, images[idx], geoms, sub, volume=volume, slice_spacing=spacing
                )
            finally:
                timings["postprocess"] += time.perf_counter() - t

        # segmentation of slices: each run's masks go back to the source grid on a worker
        # thread while onnxruntime runs the next batch
        background = None
        if m.output.kind == "segmentation" and not volume:
            background = _Background("cds-postprocess")
        try:
            for tensor, geoms in self._batches(stack, timings, ready):
                t0 = time.perf_counter()
                got = self._infer(tensor, names)
                timings["inference"] += time.perf_counter() - t0
                run_outputs = outputs if background is None else Outputs()
                self._collect(got, len(geoms), run_outputs, raw)
                if background is not None:
                    idx = slice(len(geometry), len(geometry) + len(geoms))
                    sub = _subset(stack, idx, pixels=False)
                    background.submit(functools.partial(post, run_outputs, idx, geoms, sub))
                geometry.extend(geoms)
        except BaseException:
            if background is not None:
                background.stop()
            raise
        try:
            if background is None:
                findings = post(
                    outputs, slice(None), geometry, _subset(stack, slice(None), pixels=False)
                )
            else:
                findings = _join_segmentation(background.results(), stack)
        except (IndexError, ValueError, KeyError) as exc:
            raise ModelError(
                f"{m.name}: the outputs do not fit the manifest ({type(exc).__name__}); "
                "check output.tensors (layout, encoding, box) and output.labels (index) "
                "against what model.onnx returns"
            ) from exc
        record = self._record(stack, len(images), time.perf_counter() - t_start, timings)
        joined = {n: _join(v) for n, v in raw.items()} if raw is not None else {}
        return InferenceResult(record, m.output.kind, findings, joined, images, geometry)


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
                pending.put(decode(s, transient=True))  # the runner frees its pixels
            except BaseException as exc:  # handed to the consumer
                pending.put(exc)

    threading.Thread(target=decoder, name="cds-decode", daemon=True).start()
    for _ in series:
        item = pending.get()
        if isinstance(item, BaseException):
            raise item
        yield runner.run(item)
