"""issue 19, item 2: a study's series is read and decoded during its quiet time, and its
job takes what was read instead of reading it again, with the same result."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cds.compute import _read, process_series
from cds.domain import StudyState
from cds.inference.images import decode
from cds.inference.preread import PreRead
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.orchestrator import Node
from cds.results import copied
from cds.results.copied import copy_ahead
from cds.results.ps310 import file_bytes
from tests.test_pipeline import send_files, settings_with_routing

REPO = Path(__file__).resolve().parents[2]
#: the attributes an encoder sets to the time it runs
NOW = {
    "InstanceCreationDate",
    "InstanceCreationTime",
    "ContentTime",
    "ContributionDateTime",
    "DateOfSecondaryCapture",
    "TimeOfSecondaryCapture",
}
ROUTING = """
pipelines:
  bone: {model: cds-ref-ct-bone, results: [SEG, SR]}
rules:
  - name: head CT
    match: [{attribute: Modality, equals: CT}]
    pipelines: [bone]
"""


def _until(done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _read_all(pre: PreRead, files: list[Path]) -> None:
    pre.submit("S", lambda: [files])
    _until(lambda: pre.stats.read + pre.stats.failed + pre.stats.over_budget == len(files))


def test_a_file_read_ahead_is_handed_over_once_and_decodes_as_read(files: list[Path]) -> None:
    pre = PreRead(_read, 2**30)
    _read_all(pre, files)
    assert (pre.stats.read, pre.stats.entries) == (len(files), len(files))
    taken = [pre.take(f) for f in files]
    assert all(t is not None for t in taken)
    # a file is held once: its frames, its data set without the Pixel Data
    assert all(t is not None and "PixelData" not in t.ds for t in taken)
    assert [pre.take(f) for f in files] == [None] * len(files)  # once only
    held = sum(t.px.nbytes for t in taken if t is not None and t.px is not None)
    assert held == len(files) * 512 * 512 * 2  # the CT's int16 frames
    assert (pre.stats.taken, pre.stats.entries, pre.stats.held_bytes) == (len(files), 0, 0)
    frames = taken[0].px.base if taken[0] is not None and taken[0].px is not None else None
    assert isinstance(frames, np.ndarray)  # the series, read into one array
    ahead, read = decode(taken, transient=True), decode(files)  # type: ignore[arg-type]
    assert ahead.pixels is frames  # taken as it is: no copy
    assert np.array_equal(ahead.pixels, read.pixels)
    assert ahead.pixels.dtype == read.pixels.dtype
    assert ahead.meta == read.meta
    assert (ahead.series_uid, ahead.modality, ahead.body_part) == (
        read.series_uid,
        read.modality,
        read.body_part,
    )
    assert all(t is not None and t.px is None for t in taken)  # the stack holds the frames
    pre.close()


@pytest.mark.parametrize("how", ["reversed", "one read by the job", "one more file"])
def test_the_stack_is_right_whatever_the_job_was_not_given(files: list[Path], how: str) -> None:
    """The series' array read ahead is the stack only when the job's files are exactly its
    files in its order; otherwise the frames are copied, never written over."""
    pre = PreRead(_read, 2**30)
    _read_all(pre, files[:-1] if how == "one more file" else files)
    order = files[::-1] if how == "reversed" else files
    items = [pre.take(f) or _read(f) for f in order]
    if how == "one read by the job":
        items[2] = _read(files[2])
    frames = decode(items)  # type: ignore[arg-type]
    expected = decode(order)
    assert np.array_equal(frames.pixels, expected.pixels)
    assert frames.meta == expected.meta


def test_a_file_replaced_since_it_was_read_is_not_handed_over(files: list[Path]) -> None:
    pre = PreRead(_read, 2**30)
    _read_all(pre, files)
    ds = pydicom.dcmread(files[0])
    tmp = files[0].with_suffix(".tmp")
    ds.save_as(tmp)
    tmp.replace(files[0])  # as the spool replaces a resent instance: a new inode
    assert pre.take(files[0]) is None
    assert pre.take(files[1]) is not None
    pre.close()


def test_the_budget_bounds_what_is_held(files: list[Path]) -> None:
    one = PreRead(_read, 2**30)
    _read_all(one, files[:1])
    size = one.stats.held_bytes
    pre = PreRead(_read, 2 * size + size // 2)  # room for two files
    _read_all(pre, files)
    assert (pre.stats.read, pre.stats.over_budget) == (2, len(files) - 2)
    assert pre.stats.held_bytes <= pre.budget_bytes
    assert [pre.take(f) is not None for f in files] == [True, True] + [False] * (len(files) - 2)
    nothing = PreRead(_read, 0)  # 0: nothing is read ahead
    nothing.submit("S", lambda: [files])
    assert nothing._thread is None  # nothing queued, no thread
    assert nothing.take(files[0]) is None


def test_an_unreadable_file_is_left_to_its_job_and_the_rest_are_read(
    files: list[Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    pre = PreRead(_read, 2**30)
    _read_all(pre, [bad, *files])
    assert (pre.stats.failed, pre.stats.read) == (1, len(files))
    assert pre.take(bad) is None
    assert all(pre.take(f) is not None for f in files)


def test_forget_drops_a_study_and_a_file_taken_while_queued_is_not_read(
    files: list[Path],
) -> None:
    gate = threading.Event()

    def slow_read(path: Path) -> Dataset:
        if path == files[0]:
            gate.wait(10)
        return _read(path)

    pre = PreRead(slow_read, 2**30)
    pre.submit("S", lambda: [files])
    _until(lambda: pre._busy == files[0])  # the rest wait in the queue
    assert pre.take(files[2]) is None  # its job reads it: the read-ahead must not
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pre.take(files[0])))
    waiter.start()  # waits for the file being read
    time.sleep(0.1)
    assert got == []
    gate.set()
    waiter.join(10)
    assert got
    assert got[0] is not None
    _until(lambda: pre.stats.read == len(files) - 1)  # files[2] comes before the last two
    assert files[2] not in pre._entries
    assert not pre._queue
    pre.forget("S")
    assert (pre.stats.entries, pre.stats.held_bytes) == (0, 0)
    assert pre.take(files[1]) is None


@pytest.mark.parametrize("prepare", [None, copy_ahead])
@pytest.mark.parametrize("kinds", [["SEG", "SR"], ["SEG", "SC"]])
def test_a_job_given_files_read_ahead_encodes_the_same_bytes(
    files: list[Path], kinds: list[str], prepare: Callable[[Dataset], object] | None
) -> None:
    """The capture draws the sources' pixels: read again for it (the read-ahead keeps the
    frames only); SEG and SR need none, and each source's Pixel Data goes once decoded.
    ``prepare``: the encoders' copies made ahead too (as the node does)."""
    (model,) = ModelRegistry(
        [REPO / "models" / "cds-ref-ct-bone"], "cpu", DeviceSlots(1, 1), warm=False
    ).load()
    runner = ModelRunner(model, DeviceSlots(1, 1))
    plain = process_series(runner, files, kinds, "en")
    pre = PreRead(_read, 2**30, prepare=prepare)
    _read_all(pre, files)
    with mock.patch.object(copied, "_copy", wraps=copied._copy) as copies:
        ahead = process_series(runner, files, kinds, "en", ahead=pre)
    # the copies made ahead are used (not for a capture's: its sources are read again)
    assert copies.call_count == (0 if prepare and "SC" not in kinds else len(files))
    assert pre.stats.taken == len(files)
    assert {ds.Modality for ds in plain.objects} == {
        {"SEG": "SEG", "SR": "SR", "SC": "OT"}[k] for k in kinds
    }
    assert [_timeless(ds) for ds in plain.objects] == [_timeless(ds) for ds in ahead.objects]


def _timeless(ds: Dataset) -> bytes:
    """The object's file, the times it was made at (now) set aside."""
    for e in ds.iterall():
        if e.keyword in NOW:
            e.value = "1"
    return file_bytes(ds)


def test_the_node_reads_a_study_during_its_quiet_time(tmp_path: Path, files: list[Path]) -> None:
    base = settings_with_routing(tmp_path, ROUTING)
    settings = base.model_copy(
        update={"assembly": base.assembly.model_copy(update={"quiet_time_s": 3.0})}
    )
    node = Node(settings)
    node.start()
    try:
        pre = node.compute.preread
        assert pre is not None
        send_files(node, files)
        # read before the study is complete: the quiet time is still running
        _until(lambda: pre.stats.read == len(files), timeout=2.5)
        assert node.store.list_studies()[0].state is StudyState.RECEIVING
        _until(lambda: node.store.list_studies()[0].state is StudyState.DONE, timeout=60)
        assert pre.stats.taken == len(files)  # the job read none of them again
        # and its model's batches were made ahead and used (tests/inference/
        # test_preprocess_ahead.py: the same batches)
        assert (pre.stats.series_made, pre.stats.series_taken) == (1, 1)
        assert (pre.stats.entries, pre.stats.held_bytes) == (0, 0)
    finally:
        node.stop()


def test_nothing_read_ahead_stays_held_once_taken(files: list[Path]) -> None:
    """The read-ahead thread lives as long as the node: the series' array goes with the
    job's stack, not when the next study comes."""
    pre = PreRead(_read, 2**30)
    _read_all(pre, files)
    first = pre.take(files[0])
    assert first is not None
    assert first.px is not None
    frames = weakref.ref(first.px.base)
    stack = decode([first, *(pre.take(f) for f in files[1:])], transient=True)  # type: ignore[list-item]
    assert stack.pixels is frames()
    del stack, first
    gc.collect()
    assert frames() is None
    pre.close()
