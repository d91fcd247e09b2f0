"""Issue 19, item 6 (memory): a segmentation's masks are held bit-packed.

``cds.findings.Masks`` keeps each mask on the source grid as its bits (``PackedMask``:
an eighth of a boolean array) and gives a new boolean array on each read; membership,
pixel counts (areas) and the SEG's frames need no unpacking. The runner's postprocessing
of slices, on its worker thread, keeps at most two batches' outputs waiting: a fast
device never piles up a series' float masks behind a slower postprocessing.
"""

from __future__ import annotations

import pickle
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cds.findings import ImageRef, Masks, PackedMask, has_positive_mask, mask_counts
from cds.inference.images import decode
from cds.inference.manifest import load_manifest
from cds.inference.registry import LoadedModel
from cds.inference.runner import ModelRunner, _Background
from cds.inference.session import DeviceSlots, Session
from cds.inference.synthetic import ct_series

REPO = Path(__file__).resolve().parents[2]
BONE = REPO / "models" / "cds-ref-ct-bone"


def _random(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) > 0.6


@pytest.mark.parametrize("shape", [(512, 512), (5, 7), (1, 1), (3, 8), (37, 41)])
def test_a_packed_mask_gives_the_mask_back_and_its_bits_are_a_seg_frames(
    shape: tuple[int, int],
) -> None:
    mask = _random(shape)
    packed = PackedMask.of(mask)
    back = packed.unpack()
    assert back.dtype == bool
    assert back.shape == shape
    np.testing.assert_array_equal(back, mask)
    assert packed.count == int(np.count_nonzero(mask))
    # the bit order of a SEG's Pixel Data (PS3.5 8.1.1): first pixel in the lowest bit
    assert packed.bits == np.packbits(mask, axis=None, bitorder="little").tobytes()
    assert len(packed.bits) == -(-mask.size // 8)


def test_a_mask_that_is_not_boolean_is_true_where_it_is_not_zero() -> None:
    values = np.array([[0, 1, 7], [0, 255, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(PackedMask.of(values).unpack(), values != 0)
    floats = np.array([[0.0, 0.5], [-1.0, 0.0]])
    assert PackedMask.of(floats).count == 2
    np.testing.assert_array_equal(PackedMask.of(floats).unpack(), floats != 0)


def test_masks_are_counted_found_and_joined_without_unpacking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refs = [ImageRef(f"1.2.3.{i}", 1) for i in range(3)]
    arrays = [_random((16, 24), i) for i in range(3)]
    arrays[1][:] = False
    masks = Masks(dict(zip(refs, arrays, strict=True)))

    def no_unpacking(self: PackedMask) -> np.ndarray:
        raise AssertionError("unpacked")

    monkeypatch.setattr(PackedMask, "unpack", no_unpacking)
    assert refs[0] in masks
    assert ImageRef("9.9", 1) not in masks
    assert list(masks) == refs  # in the order they were set
    assert len(masks) == 3
    assert mask_counts(masks) == {r: int(a.sum()) for r, a in zip(refs, arrays, strict=True)}
    assert has_positive_mask(masks)
    assert not has_positive_mask(Masks({refs[1]: arrays[1]}))
    joined = Masks()
    joined.join(masks)
    assert joined == masks
    assert all(joined.packed(r) is masks.packed(r) for r in refs)  # the same bits, shared
    monkeypatch.undo()

    first = masks[refs[0]]
    np.testing.assert_array_equal(first, arrays[0])
    first[:] = ~first  # a read is the caller's own array
    np.testing.assert_array_equal(masks[refs[0]], arrays[0])


def test_masks_compare_by_their_bits_and_pickle_small() -> None:
    ref = ImageRef("1.2.3", 1)
    mask = _random((512, 512))
    masks = Masks({ref: mask})
    again = pickle.loads(pickle.dumps(masks))  # noqa: S301 - our own bytes, as a worker sends them
    assert again == masks
    np.testing.assert_array_equal(again[ref], mask)
    assert len(pickle.dumps(masks)) < mask.nbytes / 7  # out of a worker process too
    other = mask.copy()
    other[0, 0] = not other[0, 0]
    assert Masks({ref: other}) != masks
    assert masks != {ref: mask}  # not a dict of arrays: never compared element-wise


def test_masks_hold_an_eighth_of_boolean_arrays() -> None:
    n, shape = 64, (256, 256)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        masks = Masks()
        for i in range(n):
            masks[ImageRef(str(i), 1)] = np.ones(shape, dtype=bool)  # each freed once packed
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    boolean = n * shape[0] * shape[1]
    assert held - before < boolean / 8 * 1.1, (held - before, boolean)
    assert peak - before < boolean / 8 * 1.1 + 3 * shape[0] * shape[1]
    assert len(masks) == n


def _runner(batch_size: int) -> ModelRunner:
    m = load_manifest(BONE)
    m = m.model_copy(update={"input": m.input.model_copy(update={"batch_size": batch_size})})
    session = Session(BONE / "model.onnx", "cpu")
    return ModelRunner(LoadedModel(BONE, "ready", m, "0" * 64, "CPU", session=session),
                       DeviceSlots(1, 1))  # fmt: skip


def _hu(slices: int = 7, size: int = 64) -> np.ndarray:
    hu = np.full((slices, size, size), -1000.0)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    for i in range(slices):
        hu[i][r < size * 0.4] = 40
        hu[i][(r > size * 0.3) & (r < size * 0.33 + i)] = 300 + 150 * i
    return hu


def test_the_runners_masks_are_packed_and_the_same_in_any_batches() -> None:
    spacing = (0.7, 0.5)
    datasets = ct_series(_hu(), "test-masks/runner", spacing=spacing)
    whole = _runner(16).run(decode(datasets, transient=True))
    runs = _runner(2).run(decode(datasets, transient=True))  # 4 runs joined
    assert any(f.present for f in whole.findings)
    for a, b in zip(whole.findings, runs.findings, strict=True):
        assert isinstance(a.per_image, Masks)
        assert isinstance(b.per_image, Masks)
        assert a.per_image == b.per_image
        assert list(a.per_image) == list(b.per_image)
        assert (a.score, a.present, a.measurement) == (b.score, b.present, b.measurement)
        # the area from the packed counts is the area of the boolean masks
        area = sum(float(m.sum()) * spacing[0] * spacing[1] for m in a.per_image.values())
        assert a.measurement == area
        rows, columns = datasets[0].Rows, datasets[0].Columns
        for ref in a.per_image:
            assert len(a.per_image.packed(ref).bits) == -(-rows * columns // 8)


def test_postprocessing_waits_for_room_rather_than_piling_up_outputs() -> None:
    release = threading.Event()
    started = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "done"

    background = _Background("test-bounded", pending=2)
    background.submit(slow)  # running
    assert started.wait(5)
    background.submit(slow)
    background.submit(slow)  # two waiting: full
    third = threading.Thread(target=background.submit, args=(slow,))
    third.start()
    time.sleep(0.2)
    assert third.is_alive()  # the producer waits: no third batch's outputs queued
    release.set()
    third.join(5)
    assert not third.is_alive()
    assert background.results() == ["done"] * 4


def test_a_failed_postprocessing_does_not_block_the_producer() -> None:
    def boom() -> None:
        raise ValueError("boom")

    background = _Background("test-failure", pending=1)
    for _ in range(5):  # more than there is room for: the failed thread still drains them
        background.submit(boom)
    with pytest.raises(ValueError, match="boom"):
        background.results()
