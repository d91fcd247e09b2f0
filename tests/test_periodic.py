"""issue 18: one background-thread shape (cds.periodic.PeriodicWorker) for the node's
periodic work: kicks, backoffs a kick cannot cut, a failing step, stop."""

from __future__ import annotations

import threading

from cds.periodic import Backoff, PeriodicWorker


def test_a_kick_ends_the_wait_and_a_failing_step_does_not_end_the_worker() -> None:
    calls: list[int] = []
    second = threading.Event()

    def step() -> float:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a store hiccup")
        second.set()
        return 3600.0

    w = PeriodicWorker("t", step, interval_s=3600.0, log_event="t.failed")
    w.start()
    try:
        assert w.running
        w.kick()  # the first step failed: the worker waits interval_s, a kick ends it
        assert second.wait(5)
    finally:
        w.stop()
    assert not w.running
    assert len(calls) == 2


def test_a_backoff_is_not_cut_short_by_a_kick_but_stop_ends_it() -> None:
    steps = threading.Event()
    count = 0

    def step() -> Backoff:
        nonlocal count
        count += 1
        steps.set()
        return Backoff(3600.0)

    w = PeriodicWorker("t", step, interval_s=0.01, log_event="t.failed")
    w.start()
    assert steps.wait(5)
    for _ in range(5):
        w.kick()
    w.stop()  # returns at once: stop ends a backoff
    assert count == 1


def test_wait_first_waits_before_the_first_step() -> None:
    ran = threading.Event()
    w = PeriodicWorker("t", ran.set, interval_s=3600.0, log_event="t.failed", wait_first=True)
    w.start()
    assert not ran.wait(0.2)
    w.kick()
    assert ran.wait(5)
    w.stop()
