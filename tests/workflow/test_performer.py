"""issue 25, item 5 (IHE AI Workflow): the Task Performer against our minimal UPS-RS
server (``upsrs_server``), with a real SQLite store and the input study given as a
port (``read_input``); the node end to end is ``integration_tests/test_ups_performer``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from cds.config.workflow import WorkflowSettings
from cds.store import SqliteStore
from cds.store.workitems import WorkitemLedger
from cds.workflow.client import UpsClient, WorkflowError
from cds.workflow.dataset import OutputRef, as_dataset, new_transaction_uid, state_change
from cds.workflow.inputs import InputStatus
from cds.workflow.performer import Performer

from .upsrs_server import SECRETS, UpsServer, workitem

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
OUT = OutputRef(STUDY, "1.2.826.0.1.3680043.8.498.3", "1.2.840.10008.5.1.4.1.1.88.22",
                "1.2.826.0.1.3680043.8.498.4", ("ORTHANC",))  # fmt: skip


@pytest.fixture
def server() -> Iterator[UpsServer]:
    with UpsServer() as s:
        yield s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db", node="node-a")
    yield s
    s.close()


class Inputs:
    """The port: what the node says of the input study (changed by the test)."""

    def __init__(self) -> None:
        self.status = InputStatus(False, False, 0.0, "waiting for the input study")
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def __call__(self, key: str, series: tuple[str, ...]) -> InputStatus:
        self.asked.append((key, series))
        return self.status


def _performer(
    server: UpsServer, store: SqliteStore, inputs: Inputs, name: str = "node-a", **cfg: object
) -> Performer:
    settings = WorkflowSettings(ups_url=server.url, poll_interval_s=0.1, **cfg)  # type: ignore[arg-type]
    return Performer(
        settings, WorkitemLedger(store), inputs, lambda uid: f"key-{uid[-1]}", performer=name
    )


def _create(server: UpsServer, uid: str, series: tuple[str, ...] = (SERIES,)) -> None:
    r = httpx.post(f"{server.url}/workitems", json=workitem(uid, STUDY, series))
    assert r.status_code == 201


def test_claim_progress_and_complete_with_output_references(
    server: UpsServer, store: SqliteStore
) -> None:
    """SCHEDULED -> IN PROGRESS (claim) -> progress -> COMPLETED with the Output
    Information Sequence and the performed procedure's attributes; nothing of the
    patient in the log."""
    _create(server, "1.2.3.1")
    inputs = Inputs()
    p = _performer(server, store, inputs)
    with capture_logs() as logs:
        p.step()
        assert server.store.state("1.2.3.1") == "IN PROGRESS"
        assert p.mode == "subscribed"
        assert ("1.2.840.10008.5.1.4.34.5", "CDS") in server.store.subscribers
        claim = WorkitemLedger(store).get("1.2.3.1")
        assert claim is not None
        assert claim.state == "in_progress"
        assert claim.series_uids == (SERIES,)
        assert inputs.asked == []  # claimed this round, followed from the next
        inputs.status = InputStatus(True, False, 50.0, "analysing: 1 of 2 job(s) done")
        p.step()
        ds = as_dataset(server.store.get("1.2.3.1"))
        assert ds.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress == 50
        inputs.status = InputStatus(True, True, 100.0, "1 result", outputs=(OUT,))
        p.step()
    assert server.store.state("1.2.3.1") == "COMPLETED"
    ds = as_dataset(server.store.get("1.2.3.1"))
    performed = ds.UnifiedProcedureStepPerformedProcedureSequence[0]
    assert performed.PerformedProcedureStepStartDateTime
    assert performed.PerformedProcedureStepEndDateTime
    assert performed.PerformedWorkitemCodeSequence[0].CodeValue == "CDS-AI"
    out = performed.OutputInformationSequence
    assert len(out) == 1
    assert out[0].StudyInstanceUID == STUDY
    assert out[0].SeriesInstanceUID == OUT.series_uid
    assert out[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == OUT.sop_uid
    assert out[0].ReferencedSOPSequence[0].ReferencedSOPClassUID == OUT.sop_class_uid
    assert out[0].DICOMRetrievalSequence[0].RetrieveAETitle == "ORTHANC"
    assert (
        "advisory"
        in ds.ProcedureStepProgressInformationSequence[0].ProcedureStepProgressDescription
    )
    done = WorkitemLedger(store).get("1.2.3.1")
    assert done is not None
    assert (done.state, done.outputs, done.progress) == ("completed", 1, 100.0)
    assert [e["event"] for e in logs if e["event"].startswith("workflow.")][:2] == [
        "workflow.subscribed",
        "workflow.claimed",
    ]
    text = repr(logs)
    assert not any(s in text for s in SECRETS)
    assert p.describe()["completed"] == 1


def test_a_second_performers_claim_gets_409_and_is_skipped(
    server: UpsServer, store: SqliteStore, tmp_path: Path
) -> None:
    _create(server, "1.2.3.2")
    found = server.store.get("1.2.3.2")  # what a search answered both, SCHEDULED
    first = _performer(server, store, Inputs())
    first.step()
    other_store = SqliteStore(tmp_path / "other.db", node="node-b")
    try:
        second = _performer(server, other_store, Inputs(), name="node-b")
        # the search answered before the first claim: the second asks IN PROGRESS too
        with capture_logs() as logs:
            assert second._claim(found) is False
        assert any(e["event"] == "workflow.claim_lost" and e["status"] == 409 for e in logs)
        assert WorkitemLedger(other_store).get("1.2.3.2") is None  # forgotten
        second.step()  # and it does not try again
        assert WorkitemLedger(other_store).list() == []
    finally:
        other_store.close()
    assert ("PUT", "/workitems/1.2.3.2/state", 409) in server.store.requests
    assert server.store.state("1.2.3.2") == "IN PROGRESS"


def test_an_input_study_that_never_arrives_is_canceled_with_a_reason(
    server: UpsServer, store: SqliteStore
) -> None:
    _create(server, "1.2.3.3")
    p = _performer(server, store, Inputs(), input_timeout_s=60)
    p.step()
    p.step()  # within the timeout: still ours
    assert server.store.state("1.2.3.3") == "IN PROGRESS"
    p.clock = lambda: time.time() + 61
    p.step()  # past it: CANCELED
    assert server.store.state("1.2.3.3") == "CANCELED"
    ds = as_dataset(server.store.get("1.2.3.3"))
    progress = ds.ProcedureStepProgressInformationSequence[0]
    assert "not received within workflow.input_timeout_s" in progress.ReasonForCancellation
    assert progress.ProcedureStepCancellationDateTime
    assert progress.ProcedureStepDiscontinuationReasonCodeSequence[0].CodeValue == "110513"
    row = WorkitemLedger(store).get("1.2.3.3")
    assert row is not None
    assert row.state == "canceled"
    assert row.reason is not None
    assert "timeout" in row.reason


def test_a_model_error_cancels_with_the_reason(server: UpsServer, store: SqliteStore) -> None:
    _create(server, "1.2.3.4")
    inputs = Inputs()
    p = _performer(server, store, inputs)
    p.step()
    inputs.status = InputStatus(True, True, 0.0, "failed", failure="model error: boom")
    p.step()
    assert server.store.state("1.2.3.4") == "CANCELED"
    ds = as_dataset(server.store.get("1.2.3.4"))
    assert ds.ProcedureStepProgressInformationSequence[0].ReasonForCancellation == (
        "model error: boom"
    )


def test_a_restarted_performer_finishes_what_it_claimed(
    server: UpsServer, store: SqliteStore
) -> None:
    """The Transaction UID is in the store: a new performer (a restarted node) on the
    same store resumes the claim and completes it; one it recorded but never got to
    ask (killed in between) is asked again with the same Transaction UID."""
    _create(server, "1.2.3.5")
    _performer(server, store, Inputs()).step()
    tuid = server.store.transactions["1.2.3.5"]
    ledger = WorkitemLedger(store)
    _create(server, "1.2.3.6")
    ledger.record_claim("1.2.3.6", transaction_uid=new_transaction_uid(), performer="node-a",
                        study_uid=STUDY, series_uids=(), study_key="key-6")  # fmt: skip
    inputs = Inputs()
    inputs.status = InputStatus(True, True, 100.0, "done", outputs=(OUT,))
    again = _performer(server, store, inputs, max_claims=2)
    with capture_logs() as logs:
        again.step()
    assert server.store.state("1.2.3.5") == "COMPLETED"
    assert server.store.transactions["1.2.3.5"] == tuid
    assert server.store.state("1.2.3.6") == "COMPLETED"
    assert {e["event"] for e in logs} >= {"workflow.resumed", "workflow.claimed"}
    assert {w.state for w in ledger.list()} == {"completed"}


def test_a_refused_subscription_falls_back_to_polling(store: SqliteStore) -> None:
    with UpsServer(refuse_subscriptions=True) as server:
        _create(server, "1.2.3.7")
        p = _performer(server, store, Inputs())
        with capture_logs() as logs:
            p.step()
        assert p.mode == "polling"
        assert any(e["event"] == "workflow.polling" and "403" in e["reason"] for e in logs)
        assert server.store.state("1.2.3.7") == "IN PROGRESS"  # polling found it
        assert p.describe()["mode"] == "polling"


def test_the_filter_selects_workitems_by_code(server: UpsServer, store: SqliteStore) -> None:
    httpx.post(f"{server.url}/workitems", json=workitem("1.2.3.8", STUDY, code="OTHER"))
    _create(server, "1.2.3.9")
    p = _performer(server, store, Inputs(), filter={"workitem_code": "CDS-AI"})
    p.step()
    assert server.store.state("1.2.3.8") == "SCHEDULED"
    assert server.store.state("1.2.3.9") == "IN PROGRESS"


def test_an_unreachable_task_manager_is_said_not_raised(store: SqliteStore) -> None:
    with UpsServer() as gone:
        url = gone.url
    settings = WorkflowSettings(ups_url=url, timeout_s=2)
    p = Performer(settings, WorkitemLedger(store), Inputs(), str, performer="node-a")
    p.step()
    assert p.last_error is not None
    assert "no answer from workflow.ups_url" in p.last_error


# --- the test server keeps PS3.4 Annex CC's state table -------------------------


def test_the_server_refuses_what_the_state_table_refuses(server: UpsServer) -> None:
    _create(server, "1.2.3.10")
    client = UpsClient(WorkflowSettings(ups_url=server.url))
    try:
        put = client._client.put
        url = f"{server.url}/workitems/1.2.3.10/state"
        # SCHEDULED -> COMPLETED: C310
        assert put(url, json=state_change("COMPLETED", "1.2.9")).status_code == 409
        # to SCHEDULED: C303; no Transaction UID: 400
        assert put(url, json=state_change("SCHEDULED", "1.2.9")).status_code == 400
        assert (
            put(url, json=[{"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]}}]).status_code == 400
        )
        client.change_state("1.2.3.10", "IN PROGRESS", "1.2.9")
        with pytest.raises(WorkflowError) as again:  # already IN PROGRESS: C302
            client.change_state("1.2.3.10", "IN PROGRESS", "1.2.10")
        assert again.value.status == 409
        with pytest.raises(WorkflowError) as wrong:  # wrong Transaction UID: C301
            client.change_state("1.2.3.10", "CANCELED", "1.2.10")
        assert wrong.value.status == 409
        with pytest.raises(WorkflowError) as early:  # final state requirements: C304
            client.change_state("1.2.3.10", "COMPLETED", "1.2.9")
        assert early.value.status == 409
        with pytest.raises(WorkflowError) as update:  # update under a wrong Transaction UID
            client.update("1.2.3.10", "1.2.10", [{}])
        assert update.value.status == 409
    finally:
        client.close()
