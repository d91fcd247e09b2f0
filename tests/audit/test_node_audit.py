"""Issue 7 (audit): a node records every act where it happens, and no patient data.

One study with canary strings in its patient fields goes through a running node:
received, routed, results produced and sent to the PACS, rejected by the PACS
(feedback), a model switched off and on, the routing file changed (once refused),
the study purged and the observatory exported from the CLI while the node runs.
The trail then holds each act, verifies, answers ``cds audit`` and ``cds audit
verify``, and none of the canaries appears in any audit file or export.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from typer.testing import CliRunner

from cds.audit import AuditEvent, AuditOutcome
from cds.audit.trail import LOG_NAME, read_records
from cds.audit.verify import verify
from cds.cli import app as cli_app
from cds.domain import DeliveryState, StudyState
from cds.orchestrator import Node
from cds.results.kos import build_rejection_kos

from ..delivery.test_worker import Pacs
from ..feedback.test_dicom_feedback import send
from ..test_pipeline import send_files, settings_with_routing, wait_state

ROUTING = """
destinations:
  pacs: {{ae_title: PACS, host: 127.0.0.1, port: {port}}}
pipelines:
  blobs: {{model: cds-ref-blob-detect, results: [SR, GSPS], destinations: [pacs]}}
rules:
  - name: CT
    match: [{{attribute: Modality, equals: CT}}]
    pipelines: [blobs]
"""
CANARIES = {
    "PatientName": "CANARYPN^ZQXJ",
    "PatientID": "CANARYID7731",
    "PatientBirthDate": "18620315",
    "OtherPatientIDs": "CANARYOPID",
    "InstitutionName": "CANARY-INSTITUTION-QZ",
    "ReferringPhysicianName": "CANARYREF^DOC",
    "AccessionNumber": "CANARYACC9",
    "StudyDescription": "CANARY STUDY DESC",
    "StudyID": "CANSTUDY1",
}
PRIVATE = "CANARY-PRIVATE-LO"


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def canary_copies(files: list[Path], folder: Path) -> list[Path]:
    folder.mkdir()
    out = []
    for f in files:
        ds = dcmread(f)
        for name, value in CANARIES.items():
            setattr(ds, name, value)
        block = ds.private_block(0x0009, "CANARY CREATOR", create=True)
        block.add_new(0x01, "LO", PRIVATE)
        ds.save_as(folder / f.name)
        out.append(folder / f.name)
    return out


def events(path: Path) -> list[AuditEvent]:
    return [r.event for r in read_records(path)]


def test_a_node_audits_every_act_and_no_patient_data(  # noqa: PLR0915 - one node, one story
    tmp_path: Path, ct: list[Path], pacs: Pacs
) -> None:
    settings = settings_with_routing(tmp_path, ROUTING.format(port=pacs.port))
    routing_file = settings.routing.file
    assert routing_file is not None
    home, audit = settings.home, settings.audit_path
    files = canary_copies(ct, tmp_path / "canary")
    runner = CliRunner()
    node = Node(settings)
    node.start()
    try:
        send_files(node, files)
        wait_state(node, {StudyState.DONE, StudyState.FAILED})
        (study,) = node.store.list_studies()
        key = study.study_key
        wait_until(
            lambda: (
                {d.state for d in node.store.list_deliveries(study_key=key)}
                == {DeliveryState.DELIVERED}
            ),
            what="results delivered",
        )
        # the PACS rejects our presentation state (IOCM rejection note)
        (gsps,) = [r for r in node.store.list_results(key) if r.modality == "PR"]
        findings = node.store.list_findings(key)
        kos = build_rejection_kos(
            dcmread(files[0], stop_before_pixels=True),
            [gsps.ref],
            "en",
            model="pacs-viewer",
            version="1",
            sha256="0" * 64,
            seed="made by the PACS",
        )
        send(node, kos, calling="ORTHANC")
        wait_until(lambda: AuditEvent.FEEDBACK_GIVEN in events(audit), what="feedback audited")
        # the kill switch, then a refused and an accepted routing file
        node.routing.set_disabled("cds-ref-blob-detect", True, who="user:anna")
        node.routing.set_disabled("cds-ref-blob-detect", False, who="user:anna")
        old = routing_file.read_text()
        routing_file.write_text("rules: [oops")
        wait_until(lambda: bool(node.routing.last_errors), what="refused routing file")
        time.sleep(0.05)  # a new mtime for the next write
        routing_file.write_text(old.replace("name: CT", "name: CT scans"))
        wait_until(lambda: not node.routing.last_errors, what="new routing file")
        wait_state(node, {StudyState.DONE, StudyState.FAILED})
        # the CLI, with the node running: purge and observatory export
        r = runner.invoke(cli_app, ["studies", "purge", key, "--yes", "--home", str(home)])
        assert r.exit_code == 0, r.output
        out = tmp_path / "obs.json"
        r = runner.invoke(
            cli_app, ["observatory", "export", "--out", str(out), "--home", str(home)]
        )
        assert r.exit_code == 0, r.output
    finally:
        node.stop()

    recs = list(read_records(audit))
    by = {e: [r for r in recs if r.event is e] for e in AuditEvent}
    assert [r.event for r in recs[:3]] == [
        AuditEvent.ROUTING_CHANGED,
        AuditEvent.CONFIG_CHANGED,  # the first start
        AuditEvent.APPLICATION_START,
    ]
    assert len(str(recs[2].detail["config_sha256"])) == 64
    assert recs[-1].event is AuditEvent.APPLICATION_STOP

    (produced,) = by[AuditEvent.RESULTS_PRODUCED]
    assert produced.study_key == key
    assert produced.who == "system"
    assert produced.detail["model"] == "cds-ref-blob-detect"
    assert len(str(produced.detail["sha256"])) == 64
    assert produced.detail["version"]
    assert produced.detail["kinds"] == ["PR", "SR"]
    assert produced.detail["objects"] == 2

    sent = by[AuditEvent.INSTANCES_SENT]
    assert sent
    assert {s.where for s in sent} == {f"127.0.0.1:{pacs.port}"}
    assert {s.outcome for s in sent} == {AuditOutcome.SUCCESS}
    assert sum(int(s.detail["objects"]) for s in sent) == 2

    feedback = by[AuditEvent.FEEDBACK_GIVEN]
    assert len(feedback) == len(findings)
    assert {f.who for f in feedback} == {"AE:ORTHANC"}
    assert {f.detail["action"] for f in feedback} == {"reject"}
    assert {f.detail["tracking_uid"] for f in feedback} == {f.tracking_uid for f in findings}
    assert {f.detail["model"] for f in feedback} == {"cds-ref-blob-detect"}

    assert [(r.who, r.detail["model"]) for r in by[AuditEvent.MODEL_DISABLED]] == [
        ("user:anna", "cds-ref-blob-detect")
    ]
    assert len(by[AuditEvent.MODEL_ENABLED]) == 1

    routing = by[AuditEvent.ROUTING_CHANGED]
    assert [r.outcome for r in routing] == [
        AuditOutcome.SUCCESS,  # the file in force at start
        AuditOutcome.MINOR_FAILURE,  # refused: the previous rules stay
        AuditOutcome.SUCCESS,
    ]
    assert routing[0].detail["old_sha256"] is None
    assert routing[2].detail["old_sha256"] == routing[0].detail["new_sha256"]
    assert routing[2].detail["new_sha256"] != routing[0].detail["new_sha256"]

    (purge,) = by[AuditEvent.PURGE]
    assert purge.study_key == key
    assert purge.who.startswith("user:")
    assert purge.detail["reason"] == "admin"
    assert purge.detail["files_removed"] == len(files) + 1  # the rejection note too

    (export,) = by[AuditEvent.EXPORT]
    assert export.detail["to"] == str(out.resolve())

    assert verify(audit).ok

    # cds audit: query and verify, with the node stopped
    r = runner.invoke(
        cli_app, ["audit", "--home", str(home), "--event", "purge", "--event", "export", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert [x["event"] for x in json.loads(r.output)] == ["purge", "export"]
    r = runner.invoke(cli_app, ["audit", "--home", str(home), "--study", key, "--who", "AE:"])
    assert r.exit_code == 0, r.output
    assert "feedback_given" in r.output
    assert "results_produced" not in r.output  # who=system
    r = runner.invoke(cli_app, ["audit", "verify", "--home", str(home)])
    assert r.exit_code == 0, r.output
    assert "intact" in r.output
    xml_out = tmp_path / "audit.xml"
    r = runner.invoke(cli_app, ["audit", "export", "--home", str(home), "--out", str(xml_out)])
    assert r.exit_code == 0, r.output

    # no canary anywhere in the audit trail, its head, the XML export
    blobs = [p.read_bytes() for p in audit.iterdir() if p.is_file()]
    blobs.append(xml_out.read_bytes())
    for blob in blobs:
        for canary in [*CANARIES.values(), PRIVATE, "CANARY"]:
            assert canary.encode() not in blob, canary

    # tampering: cds audit verify fails and names the record
    lines = (audit / LOG_NAME).read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"who":"system"', b'"who":"AE:EVIL"', 1)
    lines[4] = lines[4].replace(b'"outcome":"0"', b'"outcome":"4"', 1)
    (audit / LOG_NAME).write_bytes(b"".join(lines))
    r = runner.invoke(cli_app, ["audit", "verify", "--home", str(home)])
    assert r.exit_code == 1
    assert "NOT intact" in r.output
