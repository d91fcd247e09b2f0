"""issue 8: what load-balancer health checks and broken peers do, again and again
(TCP connect/close, released and aborted associations, half-sent A-ASSOCIATE-RQ),
leaks no thread, file descriptor or memory in the node. Bounded: a few hundred
rounds; ``bench/load.py --soak N`` runs longer ones."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from integration_tests.conftest import CdsNode, wait_for
from integration_tests.reliability import proc_stats, settle, soak_round

pytestmark = pytest.mark.integration

WARM_ROUNDS = 30
ROUNDS = 120
RSS_GROWTH_MB = 8.0  # over ROUNDS rounds, after warm-up


def test_i8_repeated_connects_and_aborts_leak_nothing(
    node_factory: Callable[..., CdsNode],
) -> None:
    node = node_factory({"dicom": {"acse_timeout_s": 2, "network_timeout_s": 2}})
    assert node.proc is not None
    pid = node.proc.pid
    idle = proc_stats(pid)
    for _ in range(WARM_ROUNDS):
        soak_round(node.dicom_port, node.ae_title)
    base = settle(pid, idle, timeout=15)
    for _ in range(ROUNDS):
        soak_round(node.dicom_port, node.ae_title)
    after = settle(pid, idle, timeout=15)
    print(f"\nsoak {ROUNDS} rounds x 4 connections: idle {idle}, warm {base}, after {after}")
    assert after.threads <= idle.threads + 1, (idle, after)
    assert after.fds <= idle.fds + 1, (idle, after)
    assert after.rss_mb - base.rss_mb < RSS_GROWTH_MB, (base, after)
    # the node still serves, and said nothing alarming about peers that vanished
    wait_for(
        lambda: node.health().json()["dicom"]["active_associations"] == 0,
        5,
        0.1,
        "no association left open",
    )
    assert node.health().status_code == 200
    assert node.log_problems() == []
