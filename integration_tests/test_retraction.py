"""issue 25, item 4: a result is withdrawn everywhere in one action, on a running node.

A real ``cds serve`` (``node_factory``) with Orthanc as the PACS (the study comes from
it, the results go back to it), hl7apy's MLLP server as the RIS on an ``hl7v2`` target
(``tests/delivery/mllp_peer.py``) and a small FHIR endpoint of the test's own on a
``fhir-r4`` target. The bone model finds bone in the synthetic CT; two pipelines run
it, one notifying each target (one result: the same model on the same series makes
the same objects). ``cds results retract`` (the CLI, as an
admin runs it beside the node) then sends, once each: the IOCM rejection note into the
same Orthanc study, the withdrawn ORU to the RIS, the ``entered-in-error`` report to
the FHIR endpoint. A second retraction (CLI and API) is refused and sends nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds.audit import AuditEvent
from cds.audit.trail import read_records
from cds.delivery.hl7v2 import control_id_of
from integration_tests.conftest import ORTHANC_BIN, CdsNode, Orthanc, wait_for
from integration_tests.support import free_port, write_bone_study
from tests.delivery.mllp_peer import Ris

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
MODEL = "cds-ref-ct-bone"
REASON = "bone finding on a calibration phantom, not a patient"  # never logged
REJECTION_TITLE = "113001"  # DCM "Rejected for Quality Reasons" (IHE IOCM)
#: from the CLI's start to the arrival of all three withdrawals; the running node looks
#: at both outboxes every delivery.poll_interval_s (1 s by default, as here)
PROMPT_S = 15.0


class FhirEndpoint:
    """A FHIR worklist endpoint: records each POSTed body and answers 201."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with peer._lock:
                    peer.bodies.append(json.loads(raw))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir/DiagnosticReport"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peers() -> Iterator[tuple[Ris, FhirEndpoint]]:
    ris, fhir = Ris(0), FhirEndpoint()
    try:
        yield ris, fhir
    finally:
        ris.close()
        fhir.close()


def _setup(tmp_path: Path, pacs_port: int, ris_port: int, fhir_url: str) -> dict[str, Any]:
    one = {"model": MODEL, "results": ["SR"], "destinations": ["pacs"]}
    routing = {
        "destinations": {"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}},
        "notifications": {
            "ris": {"format": "hl7v2", "host": "127.0.0.1", "port": ris_port, "timeout_s": 5},
            "worklist": {"format": "fhir-r4", "url": fhir_url, "timeout_s": 5},
        },
        "pipelines": {
            "bone-ris": {**one, "notify": {"target": "ris", "findings": ["any"]}},
            "bone-fhir": {**one, "notify": {"target": "worklist", "findings": ["any"]}},
        },
        "rules": [
            {
                "name": "CT",
                "match": [{"attribute": "Modality", "equals": "CT"}],
                "pipelines": ["bone-ris", "bone-fhir"],
            }
        ],
    }
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(routing), encoding="utf-8")
    models = tmp_path / "models"
    models.mkdir()
    (models / MODEL).symlink_to(REPO / "models" / MODEL)
    return {
        "assembly": {"quiet_time_s": 1.0, "quiet_time_by_calling_ae": {"ORTHANC": 1.0}},
        "inference": {"model_dirs": [str(models)], "providers": "cpu", "warm_up": False},
        "routing": {"file": str(tmp_path / "routing.yaml")},
        "delivery": {"backoff_initial_s": 0.5, "backoff_max_s": 1.0},  # poll_interval_s: 1
    }


def _get(node: CdsNode, path: str, **params: Any) -> Any:
    r = node.http.get(path, params=params)
    r.raise_for_status()
    return r.json()


def _cli(node: CdsNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds", *args, "--config", str(node.config_path),
         "--home", str(node.home)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _rejection_notes(orthanc: Orthanc, study_id: str) -> list[dict[str, Any]]:
    """The KO instances of the Orthanc study, as Orthanc's REST gives their tags."""
    notes = []
    for series in orthanc.series(study_id):
        if series["modality"] != "KO":
            continue
        for sop_uid in series["sop_uids"]:
            (found,) = orthanc.http.post("/tools/lookup", content=sop_uid).json()
            tags = orthanc.http.get(f"/instances/{found['ID']}/simplified-tags").json()
            notes.append(tags)
    return notes


def _referenced(note: dict[str, Any]) -> set[str]:
    return {
        sop["ReferencedSOPInstanceUID"]
        for study in note["CurrentRequestedProcedureEvidenceSequence"]
        for series in study["ReferencedSeriesSequence"]
        for sop in series["ReferencedSOPSequence"]
    }


def _deliver_and_notify(
    node: CdsNode, orthanc: Orthanc, files: list[Path], ris: Ris, fhir: FhirEndpoint
) -> tuple[str, str]:
    """Orthanc sends the study; the node's SR comes back and both targets hear of the
    finding. The study's key and its Orthanc id."""
    study_id = orthanc.upload(files)
    orthanc.send_to_cds(study_id)

    def both_sent() -> bool:
        return [n["state"] for n in _get(node, "/api/notifications")] == ["sent"] * 2

    wait_for(both_sent, 120, what="both notifications sent")
    (study,) = node.studies()
    key = str(study["study_key"])
    wait_for(lambda: node.deliveries(key, "delivered"), 60, what="the SR in Orthanc")
    assert len(node.deliveries(key)) == 1
    assert len(ris.messages) == 1
    assert len(fhir.received()) == 1
    return key, study_id


def _pacs_has_the_note(
    orthanc: Orthanc, study_id: str, study_uid: str, kos_uid: str, retracted_uid: str
) -> None:
    """The rejection note arrives in the same Orthanc study and names the retracted SR."""
    (note,) = wait_for(
        lambda: _rejection_notes(orthanc, study_id), PROMPT_S, what="the note in Orthanc"
    )
    assert note["ConceptNameCodeSequence"][0]["CodeValue"] == REJECTION_TITLE
    assert note["StudyInstanceUID"] == study_uid
    assert note["SOPInstanceUID"] == kos_uid
    assert _referenced(note) == {retracted_uid}
    assert orthanc.study_ids() == [study_id]


def _ris_has_one_withdrawn_oru(ris: Ris, study_uid: str) -> None:
    """The RIS receives the ORU again with result status W, under a new control ID."""
    first, withdrawn = ris.wait_for(2, timeout_s=PROMPT_S)
    segments = withdrawn.split("\r")
    obr = next(s for s in segments if s.startswith("OBR|")).split("|")
    assert obr[25] == "W"
    obx = [s.split("|") for s in segments if s.startswith("OBX|")]
    assert obx
    assert all(f[11] == "W" for f in obx)
    assert control_id_of(withdrawn) not in ("", control_id_of(first))
    assert f"|{study_uid}|" in withdrawn


def _counted_and_audited(node: CdsNode, key: str, kos_uid: str) -> None:
    """The observatory counts the retraction; the audit has it, never the reason's text
    (nor does the log)."""
    (figures,) = [m for m in _get(node, "/api/observatory/models") if m["model"] == MODEL]
    assert figures["retracted"] == 1
    (rec,) = [
        r for r in read_records(node.home / "audit") if r.event is AuditEvent.RESULTS_RETRACTED
    ]
    assert (rec.who, rec.study_key) == ("cli:dr.martin", key)
    assert rec.detail["reason_chars"] == len(REASON)
    assert rec.detail["rejection_note"] == kos_uid
    audit_bytes = b"".join(p.read_bytes() for p in (node.home / "audit").rglob("*") if p.is_file())
    assert REASON.encode() not in audit_bytes
    assert REASON not in node.log_text()
    assert node.log_problems() == []


def _refused_again(node: CdsNode, uid: str) -> None:
    """A second retraction is refused by the CLI (exit 1) and the API (409); an unknown
    UID is CLI exit 4."""
    again = _cli(node, "results", "retract", uid, "--reason", "again")
    assert again.returncode == 1
    assert "retracted already" in again.stderr
    r = node.http.post(f"/api/results/{uid}/retract", json={"reason": "again", "user": "x"})
    assert r.status_code == 409, r.text
    assert "retracted already" in r.json()["detail"]
    unknown = _cli(node, "results", "retract", "1.2.3.4", "--reason", "x")
    assert unknown.returncode == 4


def test_i25_a_cli_retraction_reaches_pacs_ris_and_fhir_once(
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    peers: tuple[Ris, FhirEndpoint],
    tmp_path: Path,
) -> None:
    """issue 25 'The retraction reaches all three kinds of target once': a KOS (113001)
    referencing the retracted SR in the same Orthanc study, one ORU with OBR-25 and
    OBX-11 W under a new control ID, one DiagnosticReport entered-in-error with the
    same identifier; the result is ``retracted``; a second retraction is refused (CLI
    exit 1, API 409) and sends nothing; the observatory counts 1; the audit has it,
    without the reason."""
    if not ORTHANC_BIN.exists():
        pytest.skip(f"Orthanc not installed ({ORTHANC_BIN} missing)")
    ris, fhir = peers
    pacs_port = free_port()
    node = node_factory(_setup(tmp_path, pacs_port, ris.port, fhir.url))
    orthanc = orthanc_factory(node, dicom_port=pacs_port)
    files, study_uid = write_bone_study(tmp_path / "study")
    key, study_id = _deliver_and_notify(node, orthanc, files, ris, fhir)

    rows = _get(node, "/api/results", study_key=key)
    (sr,) = rows  # both pipelines run the model on the same series: one result, one SR
    assert (sr["modality"], sr["model"]) == ("SR", MODEL)
    assert sr["state"] == "current"
    assert sr["study_instance_uid"] == study_uid

    t0 = time.monotonic()
    done = _cli(node, "results", "retract", sr["sop_instance_uid"], "--reason", REASON,
                "--by", "dr.martin", "--json")  # fmt: skip
    cli_s = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert (said["state"], said["who"], said["destinations"]) == (
        "retracted", "cli:dr.martin", ["pacs"],
    )  # fmt: skip
    assert said["objects_withdrawn"] == [sr["sop_instance_uid"]]
    assert "reason" not in said

    _pacs_has_the_note(orthanc, study_id, study_uid, said["kos_uid"], sr["sop_instance_uid"])
    _ris_has_one_withdrawn_oru(ris, study_uid)
    # the FHIR endpoint: the same report, entered in error
    wait_for(lambda: len(fhir.received()) == 2, PROMPT_S, what="the entered-in-error report")
    first_report, report = fhir.received()
    assert report["resourceType"] == "DiagnosticReport"
    assert report["status"] == "entered-in-error"
    assert report["identifier"] == first_report["identifier"]
    picked_up_s = time.monotonic() - t0

    # the state: retracted, and its note listed as the rejection
    by_uid = {r["sop_instance_uid"]: r for r in _get(node, "/api/results", study_key=key)}
    assert by_uid[sr["sop_instance_uid"]]["state"] == "retracted"
    assert by_uid[said["kos_uid"]]["state"] == "rejection"
    retracted = _get(node, "/api/results", state="retracted")
    assert [r["sop_instance_uid"] for r in retracted] == [sr["sop_instance_uid"]]
    # every row of both outboxes is sent: nothing is left to send
    notes = _get(node, "/api/notifications")
    assert sorted(n["state"] for n in notes) == ["sent"] * 4
    wait_for(
        lambda: {d["state"] for d in node.deliveries(key)} == {"delivered"},
        PROMPT_S,
        what="the rejection note's delivery recorded",
    )
    assert len(node.deliveries(key)) == 2

    _refused_again(node, sr["sop_instance_uid"])
    assert len(_get(node, "/api/notifications")) == 4  # nothing more queued, nor sent
    assert len(node.deliveries(key)) == 2
    assert len(_rejection_notes(orthanc, study_id)) == 1
    assert len(ris.messages) == 2
    assert len(fhir.received()) == 2

    _counted_and_audited(node, key, said["kos_uid"])
    print(f"\nretract: CLI ran {cli_s:.2f} s; all three withdrawals in {picked_up_s:.2f} s")
