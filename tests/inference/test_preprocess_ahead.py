"""issue 19, item 2: once a series is read ahead whole, its model's batches are made
during the quiet time too; the job uses them instead of preprocessing, with the same
result, and only when its stack is the very array they were made from."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

from cds.compute import _read, process_series
from cds.inference import preread as preread_module
from cds.inference.images import decode
from cds.inference.preprocess import in_batches
from cds.inference.preread import Prep, PreRead, SeriesPlan
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from tests.inference.test_preread import (
    REPO,
    _timeless,
    _until,
)

#: 5 CT slices of 512 x 512 made 1 x 256 x 256 float32 each
BATCH_BYTES = 5 * 256 * 256 * 4


def _runner(name: str = "cds-ref-ct-bone") -> ModelRunner:
    (model,) = ModelRegistry([REPO / "models" / name], "cpu", DeviceSlots(1, 1), warm=False).load()
    return ModelRunner(model, DeviceSlots(1, 1))


@pytest.fixture(scope="module")
def bone() -> ModelRunner:
    return _runner()


def _prep(runner: ModelRunner) -> Prep:
    return Prep(runner.manifest.digest(), runner.manifest.input)


def _read_whole(pre: PreRead, files: list[Path], *preps: Prep) -> None:
    pre.submit("S", lambda: [SeriesPlan(files, preps)])
    _until(lambda: pre.stats.read + pre.stats.failed + pre.stats.over_budget >= len(files))
    _until(lambda: not any(s.making for s in pre._series))


def test_the_batches_made_ahead_are_the_jobs_own(files: list[Path], bone: ModelRunner) -> None:
    pre = PreRead(_read, 2**30)
    _read_whole(pre, files, _prep(bone))
    assert pre.stats.series_made == 1
    stack = decode([pre.take(f) for f in files], transient=True)  # type: ignore[misc]
    made = pre.prepared(stack.pixels)
    assert made is not None
    assert list(made) == [bone.manifest.digest()]
    batches, seconds = made[bone.manifest.digest()]
    assert seconds > 0
    mine = list(in_batches(decode(files), bone.manifest.input))
    assert len(batches) == len(mine)
    for (tensor, geoms), (want, want_geoms) in zip(batches, mine, strict=True):
        assert tensor.dtype == want.dtype
        assert np.array_equal(tensor, want)
        assert geoms == want_geoms
    assert pre.prepared(stack.pixels) is None  # handed over once
    assert (pre.stats.series_taken, pre.stats.held_bytes, pre.stats.entries) == (1, 0, 0)


@pytest.mark.parametrize("kinds", [["SEG", "SR"], ["SEG", "SC"]])
def test_a_job_given_batches_made_ahead_encodes_the_same_bytes(
    files: list[Path], bone: ModelRunner, kinds: list[str]
) -> None:
    plain = process_series(bone, files, kinds, "en")
    pre = PreRead(_read, 2**30)
    _read_whole(pre, files, _prep(bone))
    ahead = process_series(bone, files, kinds, "en", ahead=pre)
    timings = ahead.result.record.timings
    assert timings["preprocess"] == 0
    assert timings["preprocess_ahead"] > 0
    assert "preprocess_ahead" not in plain.result.record.timings
    assert (pre.stats.taken, pre.stats.series_taken, pre.stats.held_bytes) == (5, 1, 0)
    assert [_timeless(ds) for ds in plain.objects] == [_timeless(ds) for ds in ahead.objects]


def test_another_models_batches_are_not_used(files: list[Path], bone: ModelRunner) -> None:
    """Made for cds-ref-blob-detect (another window): the bone model preprocesses itself."""
    plain = process_series(bone, files, ["SEG"], "en")
    pre = PreRead(_read, 2**30)
    _read_whole(pre, files, _prep(_runner("cds-ref-blob-detect")))
    assert pre.stats.series_made == 1
    ahead = process_series(bone, files, ["SEG"], "en", ahead=pre)
    assert ahead.result.record.timings["preprocess"] > 0
    assert "preprocess_ahead" not in ahead.result.record.timings
    assert [_timeless(ds) for ds in plain.objects] == [_timeless(ds) for ds in ahead.objects]


def test_a_stack_not_made_of_the_array_read_ahead_gets_no_batches(
    files: list[Path], bone: ModelRunner
) -> None:
    """A file resent since it was read: the job reads it, its stack is a copy, and the
    batches (made from the old pixels) are not its; they go when the study is forgotten."""
    pre = PreRead(_read, 2**30)
    _read_whole(pre, files, _prep(bone))
    os.utime(files[2], ns=(time.time_ns(), time.time_ns() + 10**9))  # replaced
    plain = process_series(bone, files, ["SEG", "SR"], "en")
    ahead = process_series(bone, files, ["SEG", "SR"], "en", ahead=pre)
    assert (pre.stats.taken, pre.stats.series_taken) == (4, 0)
    assert ahead.result.record.timings["preprocess"] > 0
    assert [_timeless(ds) for ds in plain.objects] == [_timeless(ds) for ds in ahead.objects]
    assert pre.stats.held_bytes > 0  # the batches, not taken
    pre.forget("S")
    assert (pre.stats.held_bytes, pre.stats.entries, pre._series) == (0, 0, [])


def test_batches_that_do_not_fit_are_not_made(files: list[Path], bone: ModelRunner) -> None:
    """The budget holds the files but not the batches too: none are made, the job makes
    its own, and the files read ahead are still taken."""
    sizing = PreRead(_read, 2**30)
    _read_whole(sizing, files, _prep(bone))
    files_bytes = sizing.stats.held_bytes - BATCH_BYTES
    sizing.close()
    pre = PreRead(_read, files_bytes + 1000)
    _read_whole(pre, files, _prep(bone))
    assert (pre.stats.read, pre.stats.series_made, pre.stats.over_budget) == (5, 0, 1)
    assert pre.stats.held_bytes == files_bytes
    out = process_series(bone, files, ["SEG"], "en", ahead=pre)
    assert out.result.record.timings["preprocess"] > 0
    assert pre.stats.taken == 5


def test_a_job_waits_for_the_batches_being_made(files: list[Path], bone: ModelRunner) -> None:
    started, go = threading.Event(), threading.Event()

    def slow(stack: Any, spec: Any) -> Iterator[Any]:
        started.set()
        go.wait(10)
        yield from in_batches(stack, spec)

    pre = PreRead(_read, 2**30)
    with mock.patch.object(preread_module, "in_batches", slow):
        pre.submit("S", lambda: [SeriesPlan(files, [_prep(bone)])])
        assert started.wait(20)
        stack = decode([pre.take(f) for f in files], transient=True)  # type: ignore[misc]
        threading.Timer(0.3, go.set).start()
        t0 = time.monotonic()
        made = pre.prepared(stack.pixels)
        assert time.monotonic() - t0 >= 0.2  # it waited for them rather than miss them
    assert made is not None
    assert bone.manifest.digest() in made
    assert pre.stats.series_taken == 1
