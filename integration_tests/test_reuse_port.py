"""issue 19 item 5: two ``cds serve`` processes of one PostgreSQL store on ONE DICOM port
(``dicom.reuse_port``, SO_REUSEPORT).

Concurrent DCMTK storescu runs, one instance and one association each, all to the
shared port: the kernel spreads the associations over both nodes; every instance is
recorded once, both nodes received some, and each study is routed once (one job per
pipeline). Then one node is killed (kill -9): a further send to the same port is
accepted and stored by the other, which routes that study alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

from integration_tests.conftest import CdsNode, wait_for
from integration_tests.pgnodes import (
    Sink,
    node_config,
    rows,
    second_node,
    study_done,
)
from integration_tests.support import free_port, require_dcmtk, run_tool, write_bone_study
from tests.store.pgcluster import PgCluster

pytestmark = pytest.mark.integration


def storescu(port: int, called_ae: str, file: Path) -> int:
    """One DCMTK storescu run: one association, one instance; its exit status."""
    args = [require_dcmtk("storescu"), "-aet", "SENDER", "-aec", called_ae, "127.0.0.1",
            str(port), str(file)]  # fmt: skip
    return run_tool(args, timeout=60).returncode


def send_each(port: int, called_ae: str, files: list[Path]) -> list[int]:
    """Every file in an association of its own, four senders at once."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda f: storescu(port, called_ae, f), files))


def sop_uid(file: Path) -> str:
    return str(pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID)


def test_i19_two_receivers_on_one_port_share_the_senders(
    node_factory: Callable[..., CdsNode], tmp_path: Path, pg_cluster: PgCluster
) -> None:
    url, port = pg_cluster.url, free_port()
    shared = {"dicom": {"port": port, "reuse_port": True}}
    sink = Sink()
    try:
        a = node_factory(node_config(tmp_path, url, sink, "node-a", shared), name="a")
        b = second_node(node_factory, a, node_config(tmp_path, url, sink, "node-b", shared), "b")

        studies = [write_bone_study(tmp_path / f"study{n}", count=20) for n in (1, 2)]
        files = [f for fs, _ in studies for f in fs]
        assert send_each(port, a.ae_title, files) == [0] * len(files)

        got = rows(url, "SELECT sop_uid, received_by FROM instances")
        assert sorted(uid for uid, _ in got) == sorted(sop_uid(f) for f in files)  # each once
        by_node = Counter(node for _, node in got)
        # The kernel gives each connection to one listener by a hash of its addresses
        # and ports: 40 connections all on one of two comes 1 time in 2**39, so both
        # nodes received some, in practice always.
        assert set(by_node) == {"node-a", "node-b"}, by_node

        for _, study_uid in studies:
            s = wait_for(study_done(a, study_uid), 120, 0.2, "the study routed and run")
            assert (s["state"], s["instance_count"]) == ("done", 20), s
        jobs = rows(url, "SELECT study_key, kind, state FROM jobs")
        assert len(jobs) == 2, jobs  # one job per pipeline and study: each routed once
        assert len({key for key, _, _ in jobs}) == 2
        assert {(kind, state) for _, kind, state in jobs} == {("bone:cds-ref-ct-bone", "done")}

        # kill -9 of one node: the port goes on answering, through the other
        b.kill9()
        files3, study3 = write_bone_study(tmp_path / "study3", count=8)
        assert send_each(port, a.ae_title, files3) == [0] * len(files3)
        got3 = rows(
            url,
            "SELECT received_by FROM instances WHERE sop_uid = ANY(%s)",
            ([sop_uid(f) for f in files3],),
        )
        assert [n for (n,) in got3] == ["node-a"] * len(files3)
        s3 = wait_for(study_done(a, study3), 120, 0.2, "the study after the kill")
        assert (s3["state"], s3["instance_count"]) == ("done", len(files3))
        assert a.log_problems() == []
    finally:
        sink.close()
