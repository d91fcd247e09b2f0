"""issue 21 (item 3): a state store that cannot record means 0xA700 "Out of resources"
on C-STORE, with an Error Comment that names no data value: never a Success for an
instance not recorded, never a crash. Once the store is back, the same instance is
accepted; a file spooled before the store failed is not lost, and start-up re-indexes
it (``Node.reconcile``).

The nodes run over real sockets on 127.0.0.1 (pynetdicom and DCMTK's storescu as the
senders), against a real PostgreSQL server stopped and started mid-run (a cluster of
this test's own, so that the session's shared one never stops) and against SQLite made
read-only under the node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from cds.orchestrator import Node
from cds.store.sqlite import SqliteStore

from ..conftest import free_port, make_settings
from ..store.pgcluster import PgCluster
from .test_scp import connect, ct

OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    c = PgCluster(free_port())
    try:
        c.start()
        yield c
    finally:
        c.remove()


def _node(home: Path, **sections: dict[str, object]) -> Node:
    n = Node(make_settings(home, **sections))
    n.start()
    return n


def _send(node: Node, ds: Dataset) -> Dataset:
    """One C-STORE on an association of its own: the response's status data set."""
    a = connect(node)
    assert a.is_established
    try:
        rsp = a.send_c_store(ds)
    finally:
        a.release()
    return rsp


def _refused_without_values(rsp: Dataset, ds: Dataset) -> None:
    assert rsp.Status == OUT_OF_RESOURCES
    assert rsp.ErrorComment == "state store unavailable"
    for value in (ds.PatientName, ds.PatientID, ds.SOPInstanceUID, ds.StudyInstanceUID):
        assert str(value) not in str(rsp)


def _events(logs: StringIO, name: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in logs.getvalue().splitlines() if line.strip())
    return [e for e in lines if e.get("event") == name]


def _spooled(node: Node) -> list[Path]:
    return sorted(node.spool.iter_files())


@pytest.fixture
def pg_node(cluster: PgCluster, tmp_path: Path) -> Iterator[Node]:
    n = _node(tmp_path / "home", store={"backend": "postgresql", "url": cluster.url})
    try:
        yield n
    finally:
        n.stop()


def test_postgresql_stopped_mid_run_answers_a700_then_accepts_the_same_instance(
    pg_node: Node, cluster: PgCluster, json_logs: StringIO
) -> None:
    first, second = ct(), ct()
    assert _send(pg_node, first).Status == 0x0000

    cluster.stop()  # every session ended, the server gone
    for _ in range(2):  # the lost session, then no server to open a new one on
        _refused_without_values(_send(pg_node, second), second)
    failed = _events(json_logs, "ingest.store_failed")
    assert len(failed) == 2
    assert all(e["level"] == "error" for e in failed)
    refused = _events(json_logs, "ingest.instance_refused")
    assert [e["status"] for e in refused] == ["0xA700", "0xA700"]
    for value in (second.PatientName, second.PatientID, second.SOPInstanceUID):
        assert str(value) not in json_logs.getvalue()
    assert len(_spooled(pg_node)) == 1  # the refused instance left nothing behind
    assert pg_node.health()["store"]["reachable"] is False

    cluster.start()
    assert _send(pg_node, second).Status == 0x0000
    assert _send(pg_node, second).Status == 0x0000  # sent again: a duplicate, Success
    (study_a,) = [s for s in pg_node.store.list_studies() if s.study_uid == first.StudyInstanceUID]
    (study_b,) = [s for s in pg_node.store.list_studies() if s.study_uid == second.StudyInstanceUID]
    assert (study_a.instance_count, study_b.instance_count) == (1, 1)
    assert len(_spooled(pg_node)) == 2
    assert pg_node.health()["store"]["reachable"] is True


def test_postgresql_down_answers_storescu_a700(pg_node: Node, cluster: PgCluster) -> None:
    """DCMTK's storescu, as a modality would send, is told 0xA700 and may send again."""
    if shutil.which("storescu") is None:
        pytest.skip("DCMTK's storescu is not installed")
    ds = ct()
    path = pg_node.settings.home / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    host, port = pg_node.listener.address
    argv = ["storescu", "-v", "-aec", pg_node.settings.dicom.ae_title, host, str(port), str(path)]

    cluster.stop()
    sent = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert "Received Store Response (Refused: OutOfResources)" in sent.stdout + sent.stderr

    cluster.start()
    assert pg_node.store.find_instance(ds.SOPInstanceUID) is None  # not recorded
    sent = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "Received Store Response (Success)" in sent.stdout + sent.stderr
    assert pg_node.store.find_instance(ds.SOPInstanceUID) is not None


def _read_only(node: Node, on: bool) -> None:
    """SQLite refuses every write as on a read-only file or file system ("attempt to
    write a readonly database"); reads still work. (Permissions cannot make it so
    for a test run as root.)"""
    store = node.store
    assert isinstance(store, SqliteStore)
    store._db.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


def test_sqlite_unwritable_answers_a700_then_accepts_the_same_instance(
    tmp_path: Path, json_logs: StringIO
) -> None:
    node = _node(tmp_path / "home")
    try:
        ds = ct()
        _read_only(node, True)
        _refused_without_values(_send(node, ds), ds)
        (failed,) = _events(json_logs, "ingest.store_failed")
        assert failed["study_key"] == node.receiver.key(ds.StudyInstanceUID)
        assert str(ds.PatientName) not in json_logs.getvalue()
        assert node.store.find_instance(ds.SOPInstanceUID) is None  # not recorded
        # written before the store refused: complete and fsync'd, left to be recorded
        assert len(_spooled(node)) == 1

        _read_only(node, False)
        assert _send(node, ds).Status == 0x0000  # the same bytes, the same name
        assert node.store.find_instance(ds.SOPInstanceUID) is not None
        assert len(_spooled(node)) == 1
        (study,) = node.store.list_studies()
        assert study.instance_count == 1
    finally:
        node.stop()


def test_a_file_spooled_before_the_store_failed_is_indexed_at_start(tmp_path: Path) -> None:
    """The sender never sends it again: the next start records it from the spool,
    once, and a late re-send is a duplicate."""
    home = tmp_path / "home"
    ds = ct()
    node = _node(home)
    try:
        _read_only(node, True)
        assert _send(node, ds).Status == OUT_OF_RESOURCES
    finally:
        node.stop()

    node = _node(home, dicom={"port": free_port()})
    try:
        found = node.store.find_instance(ds.SOPInstanceUID)
        assert found is not None
        assert [p.relative_to(node.spool.root).as_posix() for p in _spooled(node)] == [found[1]]
        assert _send(node, ds).Status == 0x0000
        (study,) = node.store.list_studies()
        assert study.instance_count == 1
    finally:
        node.stop()
