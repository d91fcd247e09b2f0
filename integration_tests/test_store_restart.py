"""issue 21: PostgreSQL restarted mid-run, while a ``cds serve`` node receives a study.

The node (a real process on a throwaway cluster) receives a third of a study; the
cluster is stopped (``pg_ctl stop -m fast``, every session ended) and DCMTK's storescu
sends the second third: every instance is answered 0xA700 (Refused: OutOfResources),
none Success, nothing recorded, and ``/health`` says the store is unreachable (503).
The cluster is started again; the same node, never restarted, opens a new session: the
refused instances sent again are Success, the last third follows, the study completes
once with every instance counted, its job runs once, each result reaches the
destination once, and no patient data is in the node's log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from integration_tests.conftest import CdsNode, wait_for
from integration_tests.pgnodes import (
    Sink,
    all_delivered,
    node_config,
    rows,
    study_done,
)
from integration_tests.support import dcmsend, require_dcmtk, run_tool, write_bone_study
from tests.store.pgcluster import PgCluster

pytestmark = pytest.mark.integration

#: longer than the outage (stop, a refused send, start: a few seconds), so that the
#: study completes once, after every instance arrived
QUIET = {"assembly": {"quiet_time_s": 12.0}}


def _storescu(node: CdsNode, files: list[Path]) -> str:
    """DCMTK storescu (one association, verbose; each file tried even after a refusal):
    what it printed."""
    argv = [require_dcmtk("storescu"), "-v", "--no-halt", "-aec", node.ae_title, "127.0.0.1",
            str(node.dicom_port), *(str(f) for f in files)]  # fmt: skip
    return run_tool(argv).stdout


def test_i21_postgresql_restarted_mid_study_a700_then_the_node_carries_on(
    node_factory: Callable[..., CdsNode], tmp_path: Path, pg_cluster: PgCluster
) -> None:
    url = pg_cluster.url
    sink = Sink()
    try:
        node = node_factory(node_config(tmp_path, url, sink, "node-a", QUIET), name="a")
        assert node.proc is not None
        pid = node.proc.pid
        files, study_uid = write_bone_study(tmp_path / "study")
        first, second, last = files[:4], files[4:8], files[8:]
        assert dcmsend(node.dicom_port, node.ae_title, first).returncode == 0

        pg_cluster.stop("fast")
        out = _storescu(node, second)
        assert out.count("Received Store Response (Refused: OutOfResources)") == len(second)
        assert "Received Store Response (Success)" not in out
        health = node.health()
        assert health.status_code == 503
        assert health.json()["store"]["reachable"] is False

        pg_cluster.start()
        assert node.proc.poll() is None  # the same process all along
        assert rows(url, "SELECT COUNT(*) FROM instances") == [(len(first),)]  # none lost
        out = _storescu(node, second)  # the modality sends the refused ones again
        assert out.count("Received Store Response (Success)") == len(second), out
        assert dcmsend(node.dicom_port, node.ae_title, last).returncode == 0
        assert node.health().json()["store"]["reachable"] is True

        s = wait_for(study_done(node, study_uid), 180, 0.2, "the study routed and run")
        assert (s["state"], s["instance_count"]) == ("done", len(files))
        assert [h["kind"] for h in s["history"]].count("complete") == 1
        assert rows(url, "SELECT kind, state FROM jobs") == [("bone:cds-ref-ct-bone", "done")]
        spooled = rows(url, "SELECT sop_uid FROM instances")
        sent = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        assert Counter(u for (u,) in spooled) == dict.fromkeys(sent, 1)

        delivered = wait_for(all_delivered(url), 60, 0.2, "every result delivered")
        wait_for(lambda: len(sink.uids()) >= len(delivered), 30, 0.1, "the sink received them")
        assert sorted(sink.uids()) == sorted(r[0] for r in delivered)  # each exactly once
        assert (node.proc.pid, node.proc.poll()) == (pid, None)

        refused = [e for e in node.events() if e.get("event") == "ingest.instance_refused"]
        assert [e["status"] for e in refused] == ["0xA700"] * len(second)
        log = node.log_text()
        head = pydicom.dcmread(files[0], stop_before_pixels=True)
        for value in (head.PatientName, head.PatientID, head.get("AccessionNumber")):
            if value:
                assert str(value) not in log
        assert node.log_problems() == []
    finally:
        sink.close()
