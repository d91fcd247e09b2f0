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

import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event

from integration_tests.conftest import CdsNode, wait_for
from integration_tests.support import dcmsend, free_port, write_bone_study
from tests.store.pgcluster import PgCluster

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (tests/store/pgcluster.py) for this test."""
    cluster = PgCluster(free_port())
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.remove()


class Sink:
    """A storage SCP that keeps the SOP Instance UID of every instance sent to it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="SINK")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on)]
        )

    def _on(self, event: Event) -> int:
        with self._lock:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def uids(self) -> list[str]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self._server.shutdown()


def _config(tmp_path: Path, url: str, sink: Sink, name: str) -> dict[str, Any]:
    routing = tmp_path / "routing.yaml"
    if not routing.exists():
        routing.write_text(
            yaml.safe_dump({
                "destinations": {"sink": {"ae_title": "SINK", "host": "127.0.0.1",
                                          "port": sink.port}},
                "pipelines": {"bone": {"model": "cds-ref-ct-bone", "results": ["SEG", "SR"],
                                       "destinations": ["sink"]}},
                "rules": [{"name": "CT", "match": [{"attribute": "Modality", "equals": "CT"}],
                           "pipelines": ["bone"]}],
            }),
            encoding="utf-8",
        )  # fmt: skip
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / "cds-ref-ct-bone").symlink_to(REPO / "models" / "cds-ref-ct-bone")
    return {
        "node": {"name": name},
        "store": {"backend": "postgresql", "url": url},
        "spool": {"path": str(tmp_path / "shared" / "spool")},  # one spool for both
        "results": {"path": str(tmp_path / "shared" / "results")},
        "assembly": {"quiet_time_s": 2.0, "quiet_time_by_calling_ae": {}},
        "inference": {"model_dirs": [str(tmp_path / "models")], "providers": "cpu",
                      "warm_up": False},
        "routing": {"file": str(routing)},
        "delivery": {"poll_interval_s": 0.1, "backoff_initial_s": 0.5},
    }  # fmt: skip


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as db:
        return [tuple(r) for r in db.execute(sql).fetchall()]


def _done(node: CdsNode, study_uid: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        s = node.study_by_uid(study_uid)
        return s if s is not None and s["state"] in ("done", "failed") else None

    return check


def test_i21_two_receivers_split_one_study_and_run_it_once(
    node_factory: Callable[..., CdsNode], tmp_path: Path, postgres_url: str
) -> None:
    sink = Sink()
    try:
        a = node_factory(_config(tmp_path, postgres_url, sink, "node-a"), name="a")
        b = node_factory(_config(tmp_path, postgres_url, sink, "node-b"), name="b", start=False)
        b.home.mkdir(parents=True)
        shutil.copy2(a.home / "node.key", b.home / "node.key")  # one study key for both
        b.start()

        files, study_uid = write_bone_study(tmp_path / "study")
        half = len(files) // 2
        assert dcmsend(a.dicom_port, a.ae_title, files[:half]).returncode == 0
        assert dcmsend(b.dicom_port, b.ae_title, files[half:]).returncode == 0

        s = wait_for(_done(a, study_uid), 180, 0.2, "the study routed and run")
        assert s["state"] == "done", s
        assert s["instance_count"] == len(files)
        studies = _rows(postgres_url, "SELECT study_uid FROM studies")
        assert studies == [(study_uid,)]  # one study, received by both nodes
        assert {n for (n,) in _rows(postgres_url, "SELECT received_by FROM instances")} == {
            "node-a",
            "node-b",
        }
        jobs = _rows(postgres_url, "SELECT kind, state, claimed_by FROM jobs")
        assert len(jobs) == 1, jobs  # one job per pipeline
        assert jobs[0][:2] == ("bone:cds-ref-ct-bone", "done")
        assert jobs[0][2] in ("node-a", "node-b")
        completed = [h for h in s["history"] if h["kind"] == "complete"]
        assert len(completed) == 1  # one node claimed the quiet-time check

        def delivered() -> list[tuple[Any, ...]] | None:
            rows = _rows(postgres_url, "SELECT sop_uid, destination, state FROM deliveries")
            return rows if rows and all(r[2] == "delivered" for r in rows) else None

        rows = wait_for(delivered, 60, 0.2, "every result delivered")
        assert Counter((r[0], r[1]) for r in rows).most_common(1)[0][1] == 1
        wait_for(lambda: len(sink.uids()) >= len(rows), 30, 0.1, "the sink received them")
        assert sorted(sink.uids()) == sorted(r[0] for r in rows)  # each exactly once

        # kill -9 of one receiver: the other carries on with the next study alone
        b.kill9()
        files2, study2 = write_bone_study(tmp_path / "study2")
        assert dcmsend(a.dicom_port, a.ae_title, files2).returncode == 0
        s2 = wait_for(_done(a, study2), 180, 0.2, "the second study routed and run")
        assert (s2["state"], s2["instance_count"]) == ("done", len(files2))
        assert a.log_problems() == []
    finally:
        sink.close()
