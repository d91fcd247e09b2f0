"""issue 25, item 5 (IHE AI Workflow, AIW-I): the real node as a UPS-RS Task Performer
of workitems on our minimal UPS-RS server (``tests/workflow/upsrs_server.py``: no open
UPS-RS server is packaged in Debian), the study sent by DCMTK, results delivered to
Orthanc (the PACS) by C-STORE.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml

from cds.workflow.dataset import as_dataset
from integration_tests.conftest import CdsNode, Orthanc, wait_for
from integration_tests.support import dcmsend, write_bone_study
from tests.workflow.upsrs_server import SECRETS, UpsServer, workitem

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ups() -> Iterator[UpsServer]:
    with UpsServer() as server:
        yield server


def _node(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    ups: UpsServer,
    **workflow: Any,
) -> tuple[CdsNode, Orthanc]:
    models = tmp_path / "models"
    models.mkdir()
    (models / "cds-ref-ct-bone").symlink_to(REPO / "models" / "cds-ref-ct-bone")
    node = node_factory(start=False)
    orthanc = orthanc_factory(node)
    routing = {
        "destinations": {
            "pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}
        },
        "pipelines": {
            "ct-bone": {"model": "cds-ref-ct-bone", "results": ["SEG", "SR"],
                        "destinations": ["pacs"]}
        },
        "rules": [
            {"name": "any CT", "match": [{"attribute": "Modality", "equals": "CT"}],
             "pipelines": ["ct-bone"]}
        ],
    }  # fmt: skip
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(routing), encoding="utf-8")
    node.config.update(
        {
            "assembly": {"quiet_time_s": 1.5, "check_interval_s": 0.2},
            "inference": {"model_dirs": [str(models)], "providers": "cpu"},
            "routing": {"file": str(tmp_path / "routing.yaml")},
            "delivery": {"poll_interval_s": 0.1, "backoff_initial_s": 0.5},
            "workflow": {"ups_url": ups.url, "poll_interval_s": 0.2, **workflow},
        }
    )
    node.config_path.write_text(yaml.safe_dump(node.config), encoding="utf-8")
    return node.start(timeout=60), orthanc


def _create(ups: UpsServer, uid: str, study_uid: str) -> None:
    assert ups.store.create(workitem(uid, study_uid), None).status == 201


def _state_is(ups: UpsServer, uid: str, *states: str) -> Callable[[], bool]:
    return lambda: ups.store.state(uid) in states


def _made(node: CdsNode, study_uid: str) -> set[tuple[str, str, str]]:
    """(SOP Class, SOP Instance, Series) of every result object the node wrote."""
    out = set()
    for path in (node.home / "results").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if str(ds.StudyInstanceUID) == study_uid:
            out.add((str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)))
    return out


def _outputs(ups: UpsServer, uid: str) -> tuple[set[tuple[str, str, str]], set[str]]:
    ds = as_dataset(ups.store.get(uid))
    performed = ds.UnifiedProcedureStepPerformedProcedureSequence[0]
    refs, aes = set(), set()
    for item in performed.OutputInformationSequence:
        for sop in item.ReferencedSOPSequence:
            refs.add((sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID,
                      item.SeriesInstanceUID))  # fmt: skip
        aes.update(str(r.RetrieveAETitle) for r in item.DICOMRetrievalSequence)
    return refs, aes


def test_a_workitem_for_a_sent_study_ends_completed_naming_the_results(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    ups: UpsServer,
) -> None:
    """Claimed (IN PROGRESS), progress reported, COMPLETED with an Output Information
    Sequence naming exactly the objects the node made, retrievable from ORTHANC, the
    destination they were delivered to; /api/workitems, cds workitems and /health
    say so; the audit trail has the claim and the completion; no patient data logged."""
    node, _ = _node(tmp_path, node_factory, orthanc_factory, ups)
    files, study_uid = write_bone_study(tmp_path / "study")
    _create(ups, "1.2.826.0.1.3680043.8.498.100", study_uid)
    uid = "1.2.826.0.1.3680043.8.498.100"
    wait_for(_state_is(ups, uid, "IN PROGRESS"), 20, 0.1, "the node to claim the workitem")
    assert dcmsend(node.dicom_port, node.ae_title, files, calling_ae="MODALITY").returncode == 0
    try:
        wait_for(_state_is(ups, uid, "COMPLETED", "CANCELED"), 180, 0.2, "the workitem to end")
    except BaseException:
        print(node.log_tail(60))
        raise
    assert ups.store.state(uid) == "COMPLETED"
    made = _made(node, study_uid)
    refs, aes = _outputs(ups, uid)
    assert len(made) >= 2  # the SEG and the SR
    assert refs == made
    assert aes == {"ORTHANC"}
    updates = [
        r for r in ups.store.requests if r[0] == "POST" and r[1].startswith(f"/workitems/{uid}?")
    ]
    assert len(updates) >= 3  # claimed (0 %), progress, the final state's attributes
    assert all(status == 200 for _, _, status in updates)

    listed = node.http.get("/api/workitems").json()
    assert [(w["workitem_uid"], w["state"], w["outputs"]) for w in listed] == [
        (uid, "completed", len(made))
    ]
    assert "transaction_uid" not in listed[0]
    cli = subprocess.run(
        [sys.executable, "-m", "cds", "workitems", "--json", "--config", str(node.config_path),
         "--home", str(node.home)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert [w["state"] for w in json.loads(cli.stdout)] == ["completed"]
    health = node.health().json()["workflow"]
    assert (health["mode"], health["claimed"], health["completed"]) == ("subscribed", 0, 1)
    trail = "\n".join(
        p.read_text(errors="replace") for p in (node.home / "audit").rglob("*") if p.is_file()
    )
    assert "UPS workitem claimed" in trail
    assert "UPS workitem COMPLETED" in trail
    text = node.log_text() + trail
    assert not any(s in text for s in SECRETS)
    assert node.log_problems() == []


def test_a_workitem_whose_study_never_arrives_ends_canceled_with_a_reason(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    ups: UpsServer,
) -> None:
    node, _ = _node(tmp_path, node_factory, orthanc_factory, ups, input_timeout_s=2)
    uid = "1.2.826.0.1.3680043.8.498.101"
    _create(ups, uid, "1.2.826.0.1.3680043.8.498.199")
    wait_for(_state_is(ups, uid, "CANCELED", "COMPLETED"), 30, 0.1, "the workitem to end")
    assert ups.store.state(uid) == "CANCELED"
    ds = as_dataset(ups.store.get(uid))
    progress = ds.ProcedureStepProgressInformationSequence[0]
    assert "input study was not received" in progress.ReasonForCancellation
    assert progress.ProcedureStepDiscontinuationReasonCodeSequence[0].CodingSchemeDesignator == (
        "DCM"
    )
    listed = node.http.get("/api/workitems", params={"state": "canceled"}).json()
    assert [w["workitem_uid"] for w in listed] == [uid]
    assert "timeout" in listed[0]["reason"]


def test_a_node_killed_after_claiming_finishes_the_workitem_after_restart(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    ups: UpsServer,
) -> None:
    """kill -9 once the claim is made: the restarted node finds its claim (and its
    Transaction UID) in the store, and completes it when the study arrives."""
    node, _ = _node(tmp_path, node_factory, orthanc_factory, ups)
    files, study_uid = write_bone_study(tmp_path / "study")
    uid = "1.2.826.0.1.3680043.8.498.102"
    _create(ups, uid, study_uid)
    wait_for(_state_is(ups, uid, "IN PROGRESS"), 20, 0.1, "the node to claim the workitem")
    tuid = ups.store.transactions[uid]
    node.kill9()
    node.start(timeout=60)
    assert dcmsend(node.dicom_port, node.ae_title, files, calling_ae="MODALITY").returncode == 0
    wait_for(_state_is(ups, uid, "COMPLETED", "CANCELED"), 180, 0.2, "the workitem to end")
    assert ups.store.state(uid) == "COMPLETED"
    assert ups.store.transactions[uid] == tuid  # the claim of before the kill
    refs, _ = _outputs(ups, uid)
    assert refs == _made(node, study_uid)
    assert any(e.get("event") == "workflow.resumed" for e in node.events())
