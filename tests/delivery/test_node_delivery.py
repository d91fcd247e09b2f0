"""The node end to end with a DICOM peer as its PACS: a routed study's results are
queued durably and sent back; a re-run sends nothing twice; a late instance makes a
new result that supersedes the old one; the admin sees and retries deliveries over
HTTP and the CLI (issue 5, delivery)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from typer.testing import CliRunner

from cds import admin
from cds.cli import app as cli_app
from cds.domain import DeliveryState, ResultState, StudyState
from cds.orchestrator import Node

from ..admin.helpers import admin_app
from ..conftest import free_port
from ..test_pipeline import send_files, settings_with_routing
from .test_worker import Pacs

ROUTING = """
destinations:
  pacs: {{ae_title: PACS, host: 127.0.0.1, port: {port}}}
pipelines:
  bone: {{model: cds-ref-ct-bone, results: [SEG, SR], destinations: [pacs]}}
rules:
  - name: CT
    match: [{{attribute: Modality, equals: CT}}]
    pipelines: [bone]
"""


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def pacs() -> Iterator[Pacs]:
    p = Pacs()
    yield p
    p.close()


@pytest.fixture
def ct_series(corpus: Path) -> list[Path]:
    return sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:5]


def delivered(node: Node) -> list[str]:
    return [
        d.sop_uid
        for d in node.store.list_deliveries(limit=1000)
        if d.state is DeliveryState.DELIVERED
    ]


def test_results_go_back_to_the_pacs_once_and_are_superseded_by_a_late_instance(
    tmp_path: Path, pacs: Pacs, ct_series: list[Path]
) -> None:
    settings = settings_with_routing(
        tmp_path, ROUTING.format(port=pacs.port), reload_interval_s=0.1
    )
    node = Node(settings)
    node.start()
    try:
        send_files(node, ct_series[:4])
        wait_until(lambda: len(delivered(node)) == 2, what="SEG and SR delivered")
        (study,) = node.store.list_studies()
        first = {r.sop_uid: r for r in node.store.list_results(study.study_key)}
        assert {r.modality for r in first.values()} == {"SEG", "SR"}
        assert sorted(pacs.received) == sorted(first)
        for r in first.values():  # what was sent is what the node kept
            kept = dcmread(settings.results_path / r.path)
            assert str(kept.SOPInstanceUID) == r.sop_uid
            assert str(kept.StudyInstanceUID) == study.study_uid  # same study as the source

        # the admin re-runs the study: same inputs, same model: same objects, nothing resent
        admin.rerun_study(node.store, node.submit_study, study.study_key)
        wait_until(
            lambda: (
                len(node.store.list_jobs(study_key=study.study_key)) == 2
                and node.store.list_studies()[0].state is StudyState.DONE
            ),
            what="re-run done",
        )
        time.sleep(1.5)  # give the worker a chance to (wrongly) send again
        assert sorted(pacs.received) == sorted(first)
        assert {r.sop_uid for r in node.store.list_results(study.study_key)} == set(first)

        # a late instance: new inputs, new result, the old one superseded
        send_files(node, ct_series[4:5])
        wait_until(lambda: len(delivered(node)) == 5, what="new SEG, SR and the KOS delivered")
        check_supersession(node, pacs, study.study_key, study.study_uid, set(first))
    finally:
        node.stop()


def test_admin_sees_and_retries_dead_deliveries(tmp_path: Path, ct_series: list[Path]) -> None:
    port = free_port()  # the PACS is down when the results are ready
    settings = settings_with_routing(tmp_path, ROUTING.format(port=port))
    settings = settings.model_copy(
        update={
            "delivery": settings.delivery.model_copy(
                update={"max_attempts": 2, "backoff_initial_s": 0.2, "poll_interval_s": 0.1}
            )
        }
    )
    node = Node(settings)
    node.start()
    try:
        send_files(node, ct_series[:3])
        wait_until(
            lambda: len(node.store.list_deliveries(state=DeliveryState.DEAD)) == 2,
            what="deliveries dead",
        )
        with TestClient(admin_app(settings, node)) as client:  # stops the node at exit
            dead = client.get("/api/deliveries", params={"state": "dead"}).json()
            assert len(dead) == 2
            assert all(d["attempts"] == 2 for d in dead)
            assert all(f"PACS@127.0.0.1:{port}" in d["last_error"] for d in dead)
            queue = client.get("/api/queue").json()
            assert (queue["deliveries_dead"], queue["deliveries_pending"]) == (2, 0)
            assert client.post("/api/deliveries/nope/retry").status_code == 404

            runner = CliRunner()
            home = ["--home", str(settings.home)]
            listed = runner.invoke(cli_app, ["deliveries", "--state", "dead", *home])
            assert listed.exit_code == 0, listed.output
            assert listed.output.count(" dead ") == 2

            pacs = Pacs(port=port)  # the PACS comes back
            try:
                one = client.post(f"/api/deliveries/{dead[0]['delivery_id']}/retry")
                assert one.status_code == 202
                wait_until(lambda: len(pacs.received) == 1, what="one retried delivery")
                again = client.post(f"/api/deliveries/{dead[0]['delivery_id']}/retry")
                assert again.status_code == 409  # delivered: nothing to retry
                res = runner.invoke(cli_app, ["deliveries", "retry", "--all-dead", *home])
                assert res.exit_code == 0, res.output
                assert "1 dead deliveries queued again" in res.output
                wait_until(lambda: len(pacs.received) == 2, what="the other dead delivery")
                out = runner.invoke(cli_app, ["deliveries", "--json", *home])
                assert {d["state"] for d in json.loads(out.output)} == {"delivered"}
            finally:
                pacs.close()
    finally:
        node.stop()


def test_a_changed_language_supersedes_the_result_and_the_new_sr_names_the_old_one(
    tmp_path: Path, pacs: Pacs, ct_series: list[Path]
) -> None:
    """issue 15: the same inputs and model with another language (or threshold) make
    different content, hence new UIDs: the new SR names the old one as its predecessor
    and the old objects are withdrawn, as for a late instance."""
    settings = settings_with_routing(tmp_path, ROUTING.format(port=pacs.port))
    node = Node(settings)
    node.start()
    try:
        send_files(node, ct_series[:4])
        wait_until(lambda: len(delivered(node)) == 2, what="SEG and SR delivered")
        (study,) = node.store.list_studies()
        first = {r.sop_uid for r in node.store.list_results(study.study_key)}
    finally:
        node.stop()
    french = settings.model_copy(
        update={"results": settings.results.model_copy(update={"language": "fr"})}
    )
    node = Node(french)
    node.start()
    try:
        admin.rerun_study(node.store, node.submit_study, study.study_key)
        wait_until(lambda: len(delivered(node)) == 5, what="new SEG, SR and the KOS delivered")
        check_supersession(node, pacs, study.study_key, study.study_uid, first)
    finally:
        node.stop()


def check_supersession(
    node: Node, pacs: Pacs, study_key: str, study_uid: str, first: set[str]
) -> None:
    """The first run's objects are superseded, the new SR names the old one, the old
    objects are withdrawn by a rejection note, the admin sees it all."""
    results = node.store.list_results(study_key)
    new = [r for r in results if r.state is ResultState.CURRENT and r.modality != "KO"]
    old = [r for r in results if r.state is ResultState.SUPERSEDED]
    assert {r.sop_uid for r in old} == set(first)
    assert {r.modality for r in new} == {"SEG", "SR"}
    assert not {r.sop_uid for r in new} & set(first)
    (sr,) = [r for r in new if r.modality == "SR"]
    sr_ds = dcmread(node.settings.results_path / sr.path)
    (old_sr,) = [r for r in old if r.modality == "SR"]
    (pred,) = sr_ds.PredecessorDocumentsSequence
    refs = pred.ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert pred.StudyInstanceUID == study_uid
    assert [x.ReferencedSOPInstanceUID for x in refs] == [old_sr.sop_uid]
    # the old objects are withdrawn from the PACS by an IOCM rejection note
    (ko,) = [r for r in results if r.state is ResultState.REJECTION]
    assert ko.modality == "KO"
    assert ko.sop_uid in pacs.received
    kos = dcmread(node.settings.results_path / ko.path)
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113001"  # Rejected for Quality Reasons
    assert str(kos.StudyInstanceUID) == study_uid
    withdrawn = {
        sop.ReferencedSOPInstanceUID
        for st in kos.CurrentRequestedProcedureEvidenceSequence
        for se in st.ReferencedSeriesSequence
        for sop in se.ReferencedSOPSequence
    }
    assert withdrawn == set(first)
    events = [e.kind for e in node.store.get_study(study_key).events]  # type: ignore[union-attr]
    assert "superseded" in events
    assert "delivered" in events
    with TestClient(admin_app(node.settings, node)) as client:  # stops the node at exit
        listed = client.get(f"/api/studies/{study_key}/results").json()
        assert client.get("/api/studies/nope/results").status_code == 404
    by_uid = {r["sop_instance_uid"]: r for r in listed}
    assert {by_uid[u]["state"] for u in first} == {"superseded"}
    assert by_uid[sr.sop_uid]["state"] == "current"
    assert [d["state"] for d in by_uid[sr.sop_uid]["deliveries"]] == ["delivered"]
    shown = CliRunner().invoke(cli_app, ["study", study_key, "--home", str(node.settings.home)])
    assert shown.exit_code == 0, shown.output
    assert "SR   current    bone:cds-ref-ct-bone" in shown.output
    assert "pacs delivered" in shown.output
