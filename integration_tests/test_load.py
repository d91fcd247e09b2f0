"""issue 8: 10 concurrent associations send 1,000 instances in all, three times over
(fresh studies each time). Every instance is answered Success and indexed, the node's
threads and file descriptors come back to idle, and its memory stays flat from one
repetition to the next. Prints the throughput (``bench/load.py`` runs bigger ones)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from integration_tests.conftest import CdsNode, wait_for
from integration_tests.reliability import proc_stats, send_concurrently, settle
from integration_tests.support import write_ct_series

pytestmark = pytest.mark.integration

ASSOCIATIONS = 10
PER_ASSOCIATION = 100
REPETITIONS = 3
RSS_GROWTH_MB = 25.0  # from the end of the first repetition to the end of the last


def test_i8_ten_concurrent_associations_memory_flat(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    # all ten senders come from 127.0.0.1: the per-address cap (8 by default) must let
    # them in, with room for a connection of the last repetition the node is still closing
    dicom = {"max_associations": 16, "limits": {"max_associations_per_address": ASSOCIATIONS + 2}}
    node = node_factory({"assembly": {"quiet_time_s": 1.0}, "dicom": dicom})
    assert node.proc is not None
    pid = node.proc.pid
    idle = proc_stats(pid)
    after: list[float] = []
    warm = idle
    total = 0
    for rep in range(REPETITIONS):
        batches = [
            [p for p, _ in write_ct_series(tmp_path / f"r{rep}" / f"a{a}", PER_ASSOCIATION)]
            for a in range(ASSOCIATIONS)
        ]
        result = send_concurrently(node.dicom_port, node.ae_title, batches)
        total += result.instances
        print(
            f"\nrepetition {rep + 1}: {result.instances} instances ({result.megabytes:.1f} MB) "
            f"over {ASSOCIATIONS} associations in {result.seconds:.2f} s = "
            f"{result.per_second:.0f} instances/s; failures {result.failures}"
        )
        assert result.failures == 0
        wait_for(
            lambda n=total: sum(s["instance_count"] for s in node.studies()) == n,
            60,
            0.2,
            "every instance indexed",
        )
        now = settle(pid, warm, timeout=15)
        after.append(now.rss_mb)
        print(f"  node after repetition {rep + 1}: {now} (idle before any: {idle})")
        if rep == 0:
            # the first studies start the executor's worker pool: that is the warm baseline
            warm = now
        assert now.threads <= warm.threads + 1, (warm, now)
        assert now.fds <= idle.fds + 1, (idle, now)
    assert after[-1] - after[0] < RSS_GROWTH_MB, after
    # every study reaches its quiet-time completion (receive only: no routing file)
    wait_for(
        lambda: (
            all(s["state"] == "complete" for s in node.studies())
            and len(node.studies()) == ASSOCIATIONS * REPETITIONS
        ),
        60,
        0.2,
        "every study complete",
    )
    assert node.log_problems() == []
