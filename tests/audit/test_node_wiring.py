"""Issue 7 (audit, retention): the node runs the syslog sender and retention.

A node configured with an audit repository that is down keeps its records, and
sends all of them, in order and once, after a restart with the repository back;
a node with a tiny ``retention.spool_days`` purges a delivered study by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cds.audit import AuditEvent
from cds.audit.trail import read_records
from cds.domain import DeliveryState, StudyState
from cds.orchestrator import Node

from ..conftest import free_port, make_settings
from ..delivery.test_worker import Pacs
from ..test_pipeline import send_files, settings_with_routing, wait_state
from .test_node_audit import ROUTING
from .test_syslog import Repository, make_cert


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_node_sends_its_trail_to_the_repository_after_an_outage_and_a_restart(
    tmp_path: Path,
) -> None:
    cert, key = make_cert(tmp_path)
    port = free_port()
    repo = Repository(port, cert, key)
    syslog = {"host": "127.0.0.1", "port": port, "ca_file": str(cert), "app_name": "cds-test"}
    settings = make_settings(tmp_path / "home", audit={"syslog": syslog})
    for _ in range(2):  # two runs while the repository is down
        node = Node(settings)
        node.start()
        node.stop()
    expected = [r.seq for r in read_records(settings.audit_path)]
    assert len(expected) == 5  # config (first start), start, stop, start, stop
    repo.up()
    try:
        node = Node(settings)
        node.start()
        try:
            wait_until(lambda: len(repo.messages) >= 6, what="the backlog and the start")
        finally:
            node.stop()
        wait_until(lambda: len(repo.messages) >= 7, what="the stop record")
        time.sleep(0.2)
        assert repo.seqs() == list(range(1, 8))
    finally:
        repo.down()


def test_node_retention_purges_a_delivered_study_by_itself(
    tmp_path: Path, ct: list[Path], pacs: Pacs
) -> None:
    settings = settings_with_routing(tmp_path, ROUTING.format(port=pacs.port))
    # 0.00003 days: about 2.6 s after the last instance
    settings = settings.model_copy(
        update={
            "retention": settings.retention.model_copy(
                update={"spool_days": 0.00003, "check_interval_s": 0.2}
            )
        }
    )
    node = Node(settings)
    node.start()
    try:
        send_files(node, ct)
        wait_state(node, {StudyState.DONE, StudyState.FAILED, StudyState.PURGED})
        (study,) = node.store.list_studies()
        wait_until(
            lambda: node.store.list_studies()[0].state is StudyState.PURGED, what="the purge"
        )
        assert {d.state for d in node.store.list_deliveries(study_key=study.study_key)} == {
            DeliveryState.DELIVERED
        }  # purged only once delivered
        assert not list((settings.spool_path / "studies").glob(f"{study.study_key}/*/*.dcm"))
    finally:
        node.stop()
    (purge,) = [r for r in read_records(settings.audit_path) if r.event is AuditEvent.PURGE]
    assert purge.study_key == study.study_key
    assert purge.who == "system"
    assert purge.detail["reason"] == "retention"
    assert purge.detail["files_removed"] == len(ct)
