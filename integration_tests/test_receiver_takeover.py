"""issue 21: a receiver killed (SIGKILL) mid-study, while it holds the study's claim and
its job is running; the other receiver takes the study over once the claim's lease
(``node.lease_s``, 3 s here) lapses, and finishes it.

Two ``cds serve`` nodes share one PostgreSQL store (a throwaway cluster) and one spool.
Each receives half of a study (DCMTK dcmsend). Node b is paused (SIGSTOP) from the end
of its half until node a has claimed the study, so that a is the one that routes it;
node a dies at the failpoint ``pipeline.inferring`` (``cds/faults.py``: SIGKILL by
itself, its job claimed and running, before the model runs). Node b, resumed, sees the
lease lapse, fails the dead node's job ("interrupted") and runs the study again: one
done job per pipeline, each result delivered once (a pynetdicom storage SCP counts
them), and every instance either node acknowledged is in the spool and counted.
"""

from __future__ import annotations

import signal
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


LEASE = {"node": {"lease_s": 3.0}}
BONE = "bone:cds-ref-ct-bone"


def test_i21_kill9_mid_study_the_other_receiver_takes_it_over(
    node_factory: Callable[..., CdsNode],
    tmp_path: Path,
    pg_cluster: PgCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = pg_cluster.url
    sink = Sink()
    try:
        monkeypatch.setenv("CDS_FAILPOINTS", "pipeline.inferring=kill")  # node a only
        a = node_factory(node_config(tmp_path, url, sink, "node-a", LEASE), name="a")
        monkeypatch.delenv("CDS_FAILPOINTS")
        b = second_node(node_factory, a, node_config(tmp_path, url, sink, "node-b", LEASE), "b")
        assert a.proc is not None
        assert b.proc is not None

        files, study_uid = write_bone_study(tmp_path / "study")
        half = len(files) // 2
        assert dcmsend(b.dicom_port, b.ae_title, files[:half]).returncode == 0
        b.proc.send_signal(signal.SIGSTOP)  # before the study is due: a claims it
        try:
            assert dcmsend(a.dicom_port, a.ae_title, files[half:]).returncode == 0
            assert a.proc.wait(120) == -signal.SIGKILL  # the failpoint: a's job is running
        finally:
            b.proc.send_signal(signal.SIGCONT)
        held = rows(url, "SELECT state, claimed_by FROM studies")
        assert held == [("processing", "node-a")]  # a died holding the study
        assert rows(url, "SELECT kind, state, claimed_by FROM jobs") == [
            (BONE, "running", "node-a")
        ]

        s = wait_for(study_done(b, study_uid), 180, 0.2, "node b took the study over")
        assert (s["state"], s["instance_count"]) == ("done", len(files))
        kinds = [h["kind"] for h in s["history"]]
        assert kinds.count("complete") == 1  # one quiet-time check, node a's
        assert kinds.count("processing_interrupted") == 1
        jobs = rows(url, "SELECT kind, state, claimed_by, error FROM jobs ORDER BY created_at")
        assert [j[:3] for j in jobs] == [(BONE, "failed", "node-a"), (BONE, "done", "node-b")]
        assert jobs[0][3] == "interrupted: node stopped (node node-a)"
        assert rows(url, "SELECT claimed_by FROM studies") == [(None,)]  # released

        # nothing acknowledged is lost: every instance sent is counted and spooled
        sent = {str(f) for f in files}
        assert len(sent) == len(files)
        recorded = rows(url, "SELECT received_by, path FROM instances")
        assert Counter(n for n, _ in recorded) == {"node-a": len(files) - half, "node-b": half}
        spool = tmp_path / "shared" / "spool"
        assert all((spool / path).is_file() for _, path in recorded)

        # each result delivered once, by the node that made it
        delivered = wait_for(all_delivered(url), 60, 0.2, "every result delivered")
        assert Counter((r[0], r[1]) for r in delivered).most_common(1)[0][1] == 1
        assert {r[0] for r in rows(url, "SELECT modality FROM results")} >= {"SEG", "SR"}
        wait_for(lambda: len(sink.uids()) >= len(delivered), 30, 0.1, "the sink received them")
        assert sorted(sink.uids()) == sorted(r[0] for r in delivered)
        assert b.log_problems() == []
    finally:
        sink.close()
