"""Issue 19, item 6 (memory): the pipeline holds a study's pixels once, as stored.

A series is decoded into the dtype its instances store (int16/uint16 for a CT, never a
float32 copy at twice the size), into one array without a list of per-instance arrays
joined at the end; preprocessing converts each batch to float32 and works on it in
place; postprocessing activates masks one image at a time (no float64 copy of the
series' masks); a stack decoded for one run loses its pixels once the model's input is
made. None of this changes a value: the model's input, its outputs and the findings on
the source pixels are exactly those of the float32 pipeline.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pydicom.pixels.utils import pixel_array

from cds.findings import ImageRef, InferenceResult
from cds.inference import manifest as mf
from cds.inference.geometry import Axis, Geometry
from cds.inference.images import ImageStack, decode
from cds.inference.manifest import load_manifest
from cds.inference.postprocess import Outputs, _above, activate, postprocess
from cds.inference.preprocess import preprocess
from cds.inference.registry import LoadedModel
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots, Session
from cds.inference.synthetic import ct_series

REPO = Path(__file__).resolve().parents[2]
BONE = REPO / "models" / "cds-ref-ct-bone"


def _hu(slices: int = 6, size: int = 96) -> np.ndarray:
    hu = np.full((slices, size, size), -1000.0)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    for i in range(slices):
        hu[i][r < size * 0.4] = 40
        hu[i][(r > size * 0.3) & (r < size * 0.35 + i)] = 300 + 150 * i  # a "skull" ring
    return hu


def _float32(stack: ImageStack) -> ImageStack:
    """The same stack as the float32 pipeline held it."""
    out = ImageStack(stack.series_uid, stack.modality, stack.pixels.astype(np.float32),
                     list(stack.meta), stack.lut_applied)  # fmt: skip
    out.order, out.flips, out.body_part = list(stack.order), list(stack.flips), stack.body_part
    return out


def _runner(path: Path, batch_size: int | None = None) -> ModelRunner:
    m = load_manifest(path)
    if batch_size is not None:
        m = m.model_copy(update={"input": m.input.model_copy(update={"batch_size": batch_size})})
    session = Session(path / "model.onnx", "cpu")
    return ModelRunner(LoadedModel(path, "ready", m, "0" * 64, "CPU", session=session),
                       DeviceSlots(1, 1))  # fmt: skip


def _same_findings(a: InferenceResult, b: InferenceResult) -> None:
    assert len(a.findings) == len(b.findings)
    for fa, fb in zip(a.findings, b.findings, strict=True):
        assert (fa.score, fa.present, fa.measurement) == (fb.score, fb.present, fb.measurement)
        assert list(fa.per_image) == list(fb.per_image)
        for ref, mask in fa.per_image.items():
            np.testing.assert_array_equal(mask, fb.per_image[ref])


def test_a_ct_is_decoded_in_its_stored_integer_dtype() -> None:
    datasets = ct_series(_hu(), "test-memory/dtype")
    stack = decode(datasets)
    stored = np.stack([pixel_array(ds) for ds in datasets])
    assert stack.pixels.dtype == stored.dtype
    assert stack.pixels.dtype.kind in "iu"
    assert stack.pixels.itemsize == 2
    np.testing.assert_array_equal(stack.pixels, stored)


def test_decoding_holds_the_series_once() -> None:
    """No per-instance arrays joined at the end: the peak is the series plus one image."""
    datasets = ct_series(_hu(slices=20, size=128), "test-memory/decode-peak")
    for ds in datasets:
        ds.PixelData  # noqa: B018 - read the values before measuring
    tracemalloc.start()
    try:
        stack = decode(datasets)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < stack.pixels.nbytes * 1.5, (peak, stack.pixels.nbytes)


def test_preprocessing_gives_the_float32_pipelines_tensor_and_leaves_the_stack() -> None:
    stack = decode(ct_series(_hu(), "test-memory/preprocess"))
    before = stack.pixels.copy()
    m = load_manifest(BONE)
    tensor, geometry = preprocess(stack, m.input.preprocessing, m.input)
    want, want_geometry = preprocess(_float32(stack), m.input.preprocessing, m.input)
    assert tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor, want)
    assert geometry == want_geometry
    np.testing.assert_array_equal(stack.pixels, before)  # the steps work on a copy


@pytest.mark.parametrize("steps", [
    [mf.ModalityLut(step="modality_lut"), mf.Window(step="window", center=40, width=400),
     mf.Scale(step="scale", factor=2.0)],
    [mf.Scale(step="scale", factor=0.5)],
])  # fmt: skip
def test_value_steps_in_place_equal_the_float32_formulas(steps: list[mf.PreprocessStep]) -> None:
    stack = decode(ct_series(_hu(slices=2, size=32), "test-memory/in-place"))
    spec = load_manifest(BONE).input.model_copy(
        update={
            "tensor": load_manifest(BONE).input.tensor.model_copy(update={"shape": [-1, 1, 32, 32]})
        }
    )
    tensor, _ = preprocess(stack, steps, spec)
    x = stack.pixels.astype(np.float32)
    for step in steps:
        if isinstance(step, mf.ModalityLut):
            x = x * np.float32(stack.meta[0].slope) + np.float32(stack.meta[0].intercept)
        elif isinstance(step, mf.Window):
            lo = np.float32(step.center - step.width / 2)
            x = np.clip((x - lo) / np.float32(step.width), 0, 1)
        elif isinstance(step, mf.Scale):
            x = x * np.float32(step.factor)
    np.testing.assert_array_equal(tensor[:, 0], x)


def test_no_activation_is_no_copy_and_activation_is_float64() -> None:
    mask = np.random.default_rng(1).normal(size=(3, 2, 8, 8)).astype(np.float32)
    assert activate(mask, "none", 1) is mask
    assert activate(mask, "sigmoid", 1).dtype == np.float64


def test_postprocessing_makes_no_float64_copy_of_the_masks() -> None:
    """A float64 copy of the series' masks (as activate() made) would cost 2x their size."""
    stack = decode(ct_series(_hu(slices=40, size=64), "test-memory/post", spacing=(0.5, 0.5)))
    m = load_manifest(BONE)
    _, geometry = preprocess(stack, m.input.preprocessing, m.input)
    mask = np.random.default_rng(2).random((len(stack), 1, 256, 256), dtype=np.float32)
    images = [ImageRef(x.sop_uid, x.frame) for x in stack.meta]
    outputs = Outputs(by_role={"mask": mask})
    tracemalloc.start()
    try:
        findings = postprocess(m.output, outputs, images, geometry, stack)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    masks = sum(b.nbytes for f in findings for b in f.per_image.values())
    assert peak < masks + mask.nbytes, (peak, masks, mask.nbytes)


def test_sigmoid_masks_activated_per_image_give_the_series_values() -> None:
    stack = decode(ct_series(_hu(slices=3, size=64), "test-memory/sigmoid"))
    m = load_manifest(BONE)
    _, geometry = preprocess(stack, m.input.preprocessing, m.input)
    logits = np.random.default_rng(3).normal(size=(3, 1, 256, 256)).astype(np.float32)
    images = [ImageRef(x.sop_uid, x.frame) for x in stack.meta]
    t = m.output.tensors[0].model_copy(update={"activation": "sigmoid"})
    out = m.output.model_copy(update={"tensors": [t]})
    got = postprocess(out, Outputs(by_role={"mask": logits}), images, geometry, stack)
    # as before: the whole mask activated in float64, then cast to float32
    probs = activate(logits, "sigmoid", 1).astype(np.float32)
    want = postprocess(m.output, Outputs(by_role={"mask": probs}), images, geometry, stack)
    assert [f.score for f in got] == [f.score for f in want]
    for fa, fb in zip(got, want, strict=True):
        assert list(fa.per_image) == list(fb.per_image)
        for ref, b in fa.per_image.items():
            np.testing.assert_array_equal(b, fb.per_image[ref])


def test_a_transient_stack_loses_its_pixels_and_the_findings_do_not_change() -> None:
    """issue 19: findings on the source pixels as the float32 pipeline's, masks included."""
    datasets = ct_series(_hu(slices=7), "test-memory/transient", spacing=(0.7, 0.5))
    runner = _runner(BONE, batch_size=3)
    kept = decode(datasets)
    old = runner.run(_float32(kept), keep_raw=True)
    new = runner.run(kept, keep_raw=True)
    _same_findings(new, old)
    assert any(f.present for f in new.findings)
    for name, a in old.raw.items():
        np.testing.assert_array_equal(new.raw[name], a)
    assert kept.pixels.shape == (7, 96, 96)  # not transient: the caller's pixels stay

    transient = decode(datasets, transient=True)
    again = runner.run(transient)
    _same_findings(again, old)
    assert transient.pixels.shape == (7, 0, 0)
    assert len(transient.meta) == 7
    assert again.raw == {}  # the node's run keeps no float masks beside the findings


@pytest.mark.parametrize("geometry", [
    Geometry(512, 512, 256, 256, Axis(511 / 255, 0.5 * (1 - 511 / 255)),
             Axis(511 / 255, 0.5 * (1 - 511 / 255))),  # resize, aligned corners
    Geometry(300, 200, 128, 128, Axis(-200 / 128, 200.0), Axis(300 / 128, 0.0)),  # flip
    Geometry(100, 140, 128, 128, Axis(1.0, 6.0), Axis(1.0, -14.0)),  # crop and pad
    Geometry(90, 60, 64, 64, Axis(90 / 64, -15.0), Axis(90 / 64, 0.0)),  # letterbox
])  # fmt: skip
def test_masks_mapped_back_are_geometry_masks_exactly(geometry: Geometry) -> None:
    """The masks on the source grid are Geometry.mask's, pixel for pixel, at the threshold's
    edge too; a map below the threshold is not sampled at all (and has no pixel above)."""
    rng = np.random.default_rng(4)
    for shape in [(geometry.model_rows, geometry.model_columns), (32, 48)]:
        prob = rng.random(shape, dtype=np.float32)
        prob[:4] = 0.5  # exactly the threshold
        for t in (0.5, 0.9, 0.0):
            got = _above(prob, geometry, t)
            assert got is not None
            np.testing.assert_array_equal(got, geometry.mask(prob, "bilinear") >= t)
        low = prob * np.float32(0.4)
        assert _above(low, geometry, 0.5) is None
        assert not (geometry.mask(low, "bilinear") >= 0.5).any()
