"""issue 7, privacy: no patient data in any output of the node but the results for the PACS.

A CT study whose every PN/LO/SH/DA/TM and private attribute carries a canary (and
PatientName, PatientID, PatientBirthDate, AccessionNumber, InstitutionName,
ReferringPhysicianName, StudyDescription, a private tag) goes over C-STORE to a
running node routed to the reference models; so does a hostile instance carrying
canaries (1,000 nested sequences: refused with an Error Comment, quarantined).
Then every other output is searched: the logs (structlog JSON, and the pynetdicom
logger forced to DEBUG), the audit files, /metrics, the observatory export, the
Error Comments returned, the quarantine sidecars, and a de-identified case export.
Result objects sent to the PACS legitimately carry patient data and are left out
(their preambles are checked: zeroed, CVE-2019-11687). The observatory's own
end-to-end canary test (tests/observatory/test_canary_e2e.py) covers its API and
dashboard after feedback; this one covers the rest.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from io import StringIO
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from typer.testing import CliRunner

from cds.cli import app as cli
from cds.domain import JobState, StudyState
from cds.orchestrator import Node
from cds.requestor import PauseSafeAE

from .admin.helpers import admin_app
from .ingest.test_limits import nested_instance
from .ingest.test_scp import CT, send_raw
from .observatory.test_canary_e2e import ROUTING
from .privacy.test_deid import CANARY, canary_dataset
from .test_pipeline import send_files, settings_with_routing, wait_state

#: what must appear nowhere: the canary prefix and the canary dates and times
NEEDLES = (CANARY, "CANARY", "19010203", "19010204", "19010205")


def _grep(where: str, text: str | bytes) -> None:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    for needle in NEEDLES:
        assert needle.encode() not in data, f"{needle!r} found in {where}"


def test_i7_no_canary_in_any_output(  # noqa: PLR0915 (one scenario, then one search per output)
    tmp_path: Path, corpus: Path, json_logs: StringIO
) -> None:
    settings = settings_with_routing(tmp_path, ROUTING)
    pynetdicom_log = StringIO()
    handler = logging.StreamHandler(pynetdicom_log)
    pn_logger = logging.getLogger("pynetdicom")
    node = Node(settings)
    node.start()
    saved_level = pn_logger.level
    pn_logger.setLevel(logging.DEBUG)  # even at DEBUG: no patient data
    pn_logger.addHandler(handler)
    comments: list[str] = []
    try:
        # the study, every text field a canary; the polyglot preamble is not kept
        files = []
        sources = sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]
        for i, src in enumerate(sources):
            ds = canary_dataset(dcmread(src))
            ds.preamble = b"MZ" + b"#!/bin/sh\necho polyglot\n".ljust(126, b"\x90")
            files.append(tmp_path / f"canary{i}.dcm")
            ds.save_as(files[-1], enforce_file_format=True)
            assert files[-1].read_bytes()[:2] == b"MZ"
        send_files(node, files)

        # a hostile instance carrying canaries: refused with a comment, quarantined
        ae = PauseSafeAE(ae_title="TESTSCU")
        ae.add_requested_context(CT, ExplicitVRLittleEndian)
        host, port = node.listener.address
        assoc = ae.associate(host, port, ae_title="CDS")
        ds, data = nested_instance(1000)
        ds.PatientName = f"{CANARY}HOSTILE"
        rsp = send_raw(assoc, tmp_path, CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, data)
        assoc.release()
        assert rsp.Status == 0xC212
        comments.append(str(rsp.ErrorComment))

        wait_state(node, {StudyState.DONE, StudyState.FAILED}, timeout=60)
        (study,) = node.store.list_studies()
        assert study.state is StudyState.DONE
        with TestClient(admin_app(settings, node)) as client:  # stops the node at exit
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            metrics_text = metrics.text
    finally:
        pn_logger.removeHandler(handler)
        pn_logger.setLevel(saved_level)
        node.stop()

    home = settings.home
    runner = CliRunner()
    obs = tmp_path / "observatory.json"
    got = runner.invoke(
        cli,
        ["observatory", "export", "--home", str(home), "--out", str(obs), "--min-count", "1"],
    )
    assert got.exit_code == 0, got.output
    export_dir = tmp_path / "case"
    got = runner.invoke(
        cli, ["export", "case", study.study_key, "--out", str(export_dir), "--home", str(home)]
    )
    assert got.exit_code == 0, got.output

    # every spooled file and every result file starts with a zeroed preamble
    spooled = sorted(node.spool.iter_files())
    assert len(spooled) == 3
    results = sorted(settings.results_path.rglob("*.dcm"))
    assert results, "the reference models wrote results"
    exported = sorted(export_dir.rglob("*.dcm"))
    assert len(exported) == 3
    for f in (*spooled, *results, *exported):
        assert f.read_bytes()[:128] == b"\0" * 128, f

    logs = json_logs.getvalue()
    assert study.study_key in logs, "the node's logs were captured"
    assert "ingest.instance_quarantined" in logs
    _grep("the logs", logs)
    assert "C-STORE" in pynetdicom_log.getvalue(), "pynetdicom DEBUG was captured"
    _grep("the pynetdicom DEBUG log", pynetdicom_log.getvalue())
    for f in sorted((home / "audit").rglob("*")):
        if f.is_file():
            _grep(f"audit file {f.name}", f.read_bytes())
    _grep("/metrics", metrics_text)
    _grep("the observatory export", obs.read_text())
    for c in comments:
        _grep("an Error Comment", c)
    sidecars = sorted(node.spool.quarantine_folder.glob("*.json"))
    assert len(sidecars) == 1
    for f in sidecars:
        _grep(f"quarantine sidecar {f.name}", f.read_bytes())
        assert json.loads(f.read_text())["status"] == "0xC212"
    for f in sorted(export_dir.rglob("*")):
        if f.is_file():
            _grep(f"case export {f.name}", f.read_bytes())


#: issue 16: invalid canaries, one per VR a library refuses with the value in its message
INVALID = {
    "PatientName": f"{CANARY}PN^" + "N" * 70,  # PN component over 64
    "PatientID": f"{CANARY}LO" + "L" * 70,  # LO over 64
    "AccessionNumber": f"{CANARY}SH" + "S" * 20,  # SH over 16
    "PatientBirthDate": f"{CANARY}DA" + "d" * 47,  # 56 characters: a hash, not a date
    "StudyTime": f"{CANARY}TM",
    "PatientAge": f"{CANARY}AS",
}
ROUTING_16 = """
pipelines:
  blobs: {model: cds-ref-blob-detect, results: [SR, GSPS]}
rules:
  - name: CT
    match: [{attribute: Modality, equals: CT}]
    pipelines: [blobs]
"""


def test_i16_invalid_canaries_reach_no_error(
    tmp_path: Path, corpus: Path, json_logs: StringIO
) -> None:
    """A CT study whose PN/LO/SH/DA/TM/AS values are invalid canaries (over-long, not a
    date): read tolerantly, written strictly (``cds.results.copied``), every object is
    made without them; through ``cds process`` and through the node, the notes name the
    attributes, never a value: not in process.json, the CLI's output, the logs,
    state.db, /api/jobs, /api/studies, ``cds jobs``, the audit."""
    files = []
    sources = sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]
    for i, src in enumerate(sources):
        ds = canary_dataset(dcmread(src))
        for keyword, value in INVALID.items():
            setattr(ds, keyword, value)
        files.append(tmp_path / "in" / f"canary{i}.dcm")
        files[-1].parent.mkdir(exist_ok=True)
        ds.save_as(files[-1], enforce_file_format=True)
    runner = CliRunner()

    out = tmp_path / "out"
    got = runner.invoke(
        cli,
        [
            *("process", str(tmp_path / "in"), "--out", str(out), "--model"),
            *("cds-ref-blob-detect", "--models", "models", "--providers", "cpu"),
        ],
    )
    assert got.exit_code == 0, got.output  # every object made
    _grep("cds process's output", got.output)
    record = (out / "process.json").read_text()
    (series,) = json.loads(record)["studies"][0]["series"]
    assert series["not_made"] == []
    notes = " ".join(series["encoder_notes"])
    for keyword in INVALID:
        assert f"{keyword} not copied" in notes
    _grep("process.json", record)

    settings = settings_with_routing(tmp_path, ROUTING_16)
    node = Node(settings)
    node.start()
    with TestClient(admin_app(settings, node)) as client:  # stops the node at exit
        send_files(node, files)
        wait_state(node, {StudyState.DONE, StudyState.FAILED}, timeout=60)
        (study,) = node.store.list_studies()
        (job,) = node.store.list_jobs(study.study_key)
        assert job.state is JobState.DONE, job.error  # the notes do not make it partial
        assert job.objects
        for o in job.objects:
            assert o.made
            assert "PatientBirthDate not copied (left empty): not a valid DA" in o.reason
        api_jobs = client.get("/api/jobs").text
        assert "PatientBirthDate not copied" in api_jobs
        api_study = client.get(f"/api/studies/{study.study_key}").text
    listed = runner.invoke(cli, ["jobs", "--home", str(settings.home)])
    assert listed.exit_code == 0, listed.output
    assert job.job_id in listed.output
    for where, text in (
        ("/api/jobs", api_jobs),
        ("/api/studies", api_study),
        ("cds jobs", listed.output),
        ("state.db", "\n".join(sqlite3.connect(settings.home / "state.db").iterdump())),
        ("the logs", json_logs.getvalue()),
    ):
        _grep(where, text)
    for f in sorted((settings.home / "audit").rglob("*")):
        if f.is_file():
            _grep(f"audit file {f.name}", f.read_bytes())
