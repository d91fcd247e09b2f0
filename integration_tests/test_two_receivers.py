"""issue 21: two ``cds serve`` processes on one PostgreSQL store and one spool folder.

One study is split across the two receivers (DCMTK dcmsend, one association to
each): the store counts it as one study received by both nodes, whichever node is
due first claims its quiet-time check, and it is routed once: one job per pipeline,
one delivery per result object and destination, each result received exactly once by
the destination (a pynetdicom storage SCP). Then one receiver is killed (kill -9) and
a second study sent to the other is processed and delivered alone: the killed node's
absence loses nothing the live node acknowledged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from integration_tests.conftest import CdsNode, wait_for
from integration_tests.pgnodes import (
    Sink,
    all_delivered,
    node_config,
    rows,
    second_node,
    study_done,
)
from integration_tests.support import dcmsend, write_bone_study
from tests.store.pgcluster import PgCluster

pytestmark = pytest.mark.integration


def test_i21_two_receivers_split_one_study_and_run_it_once(
    node_factory: Callable[..., CdsNode], tmp_path: Path, pg_cluster: PgCluster
) -> None:
    url = pg_cluster.url
    sink = Sink()
    try:
        a = node_factory(node_config(tmp_path, url, sink, "node-a"), name="a")
        b = second_node(node_factory, a, node_config(tmp_path, url, sink, "node-b"), "b")

        files, study_uid = write_bone_study(tmp_path / "study")
        half = len(files) // 2
        assert dcmsend(a.dicom_port, a.ae_title, files[:half]).returncode == 0
        assert dcmsend(b.dicom_port, b.ae_title, files[half:]).returncode == 0

        s = wait_for(study_done(a, study_uid), 180, 0.2, "the study routed and run")
        assert s["state"] == "done", s
        assert s["instance_count"] == len(files)
        studies = rows(url, "SELECT study_uid FROM studies")
        assert studies == [(study_uid,)]  # one study, received by both nodes
        assert {n for (n,) in rows(url, "SELECT received_by FROM instances")} == {
            "node-a",
            "node-b",
        }
        jobs = rows(url, "SELECT kind, state, claimed_by FROM jobs")
        assert len(jobs) == 1, jobs  # one job per pipeline
        assert jobs[0][:2] == ("bone:cds-ref-ct-bone", "done")
        assert jobs[0][2] in ("node-a", "node-b")
        completed = [h for h in s["history"] if h["kind"] == "complete"]
        assert len(completed) == 1  # one node claimed the quiet-time check

        delivered = wait_for(all_delivered(url), 60, 0.2, "every result delivered")
        assert Counter((r[0], r[1]) for r in delivered).most_common(1)[0][1] == 1
        wait_for(lambda: len(sink.uids()) >= len(delivered), 30, 0.1, "the sink received them")
        assert sorted(sink.uids()) == sorted(r[0] for r in delivered)  # each exactly once

        # kill -9 of one receiver: the other carries on with the next study alone
        b.kill9()
        files2, study2 = write_bone_study(tmp_path / "study2")
        assert dcmsend(a.dicom_port, a.ae_title, files2).returncode == 0
        s2 = wait_for(study_done(a, study2), 180, 0.2, "the second study routed and run")
        assert (s2["state"], s2["instance_count"]) == ("done", len(files2))
        assert a.log_problems() == []
    finally:
        sink.close()
