"""issue 25, items 1 and 2: a routed study's urgent finding reaches a RIS as an HL7 v2.5.1
ORU^R01 over MLLP, through the durable notification outbox of a running node.

The RIS is hl7apy's MLLP server (``tests/delivery/mllp_peer.py``) on a free loopback
port. The node is ``cds serve`` in a subprocess (``node_factory``), killed with SIGKILL
while the RIS is down: the notification is in the store, and once the node is back
and the RIS listens, it is sent, and the RIS sees one control ID.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml

from integration_tests.conftest import CdsNode, wait_for
from integration_tests.support import dcmsend, free_port, write_bone_study
from tests.delivery.mllp_peer import Ris

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def _setup(tmp_path: Path, ris_port: int) -> dict[str, Any]:
    routing = {
        "notifications": {
            "ris": {
                "format": "hl7v2",
                "host": "127.0.0.1",
                "port": ris_port,
                "timeout_s": 2,
                "receiving_application": "RIS",
                "receiving_facility": "HOSP",
            }
        },
        "pipelines": {
            "bone": {
                "model": "cds-ref-ct-bone",
                "results": ["SR"],
                "notify": {"target": "ris", "findings": ["any"]},
            }
        },
        "rules": [
            {
                "name": "CT",
                "match": [{"attribute": "Modality", "equals": "CT"}],
                "pipelines": ["bone"],
            }
        ],
    }
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(routing), encoding="utf-8")
    models = tmp_path / "models"
    models.mkdir()
    (models / "cds-ref-ct-bone").symlink_to(REPO / "models" / "cds-ref-ct-bone")
    return {
        "assembly": {"quiet_time_s": 1.0},
        "inference": {"model_dirs": [str(models)], "providers": "cpu", "warm_up": False},
        "routing": {"file": str(tmp_path / "routing.yaml")},
        "delivery": {"backoff_initial_s": 0.5, "backoff_max_s": 1.0, "max_attempts": 1000},
    }


def _notifications(node: CdsNode) -> list[dict[str, Any]]:
    r = node.http.get("/api/notifications")
    r.raise_for_status()
    return list(r.json())


def test_i25_oru_after_a_routed_study_survives_kill9_and_an_outage(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """The RIS is down: the node writes the notification, tries, backs off; kill -9;
    the RIS comes back; the restarted node sends it: one ORU^R01, one control ID, no
    patient value, the finding coded in an OBX, priority STAT; it is ``sent``."""
    ris_port = free_port()
    node = node_factory(_setup(tmp_path, ris_port))
    files, study_uid = write_bone_study(tmp_path / "study")
    assert dcmsend(node.dicom_port, node.ae_title, files).returncode == 0

    def tried() -> list[dict[str, Any]]:
        return [n for n in _notifications(node) if n["attempts"] >= 1]

    (waiting,) = wait_for(tried, 90, what="a notification tried while the RIS is down")
    assert waiting["state"] == "pending"
    assert waiting["format"] == "hl7v2"
    assert waiting["last_error"] == "not reached (connection refused)"
    node.kill9()

    ris = Ris(ris_port)
    try:
        node.start()
        (message,) = ris.wait_for(1, timeout_s=30)

        def sent() -> list[dict[str, Any]]:
            return [n for n in _notifications(node) if n["state"] == "sent"]

        (done,) = wait_for(sent, 30, what="the notification recorded as sent")
        assert ris.control_ids == [done["notification_id"]]  # one message, one control ID
        segments = message.split("\r")
        assert segments[0].startswith("MSH|^~\\&|cds||RIS|HOSP|")
        assert "|ORU^R01^ORU_R01|" in segments[0]
        assert not any(s.startswith("PID") for s in segments)
        obr = next(s for s in segments if s.startswith("OBR|"))
        assert obr.split("|")[5] == "S"
        assert f"|113014^Study Instance UID^DCM||{study_uid}|" in message
        assert "|111001^Algorithm Name^DCM||cds-ref-ct-bone|" in message
        assert any(s.startswith("OBX|") and "|NM|" in s for s in segments)
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        for value in (str(ds.PatientName), str(ds.PatientID)):  # never leave the node
            if value:
                assert value not in message
        study = node.study_by_uid(study_uid)
        assert study is not None
        assert any(e["kind"] == "notified" for e in study["history"])
        assert node.log_problems() == []
    finally:
        ris.close()
