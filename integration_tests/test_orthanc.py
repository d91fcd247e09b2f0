"""Issue 5: Orthanc as the PACS sends a study to the node (C-ECHO and C-STORE)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pydicom
import pytest

from integration_tests.conftest import CdsNode, Orthanc
from integration_tests.support import CORPUS, split_part10, spooled_file_for

pytestmark = pytest.mark.integration

SERIES = CORPUS / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
ORTHANC_QUIET_S = 1.5


def test_i2_r5_orthanc_echo(node: CdsNode, orthanc_factory: Callable[[CdsNode], Orthanc]) -> None:
    """issue 2, req. 5: Orthanc's C-ECHO to the node (POST /modalities/cds/echo) succeeds."""
    orthanc = orthanc_factory(node)
    r = orthanc.http.post("/modalities/cds/echo", json={})
    assert r.status_code == 200, r.text
    accepted = [e for e in node.events() if e["event"] == "ingest.association_accepted"]
    assert [e["calling_ae"] for e in accepted] == ["ORTHANC"]


@pytest.mark.skipif(not SERIES.is_dir(), reason=f"corpus series missing: {SERIES}")
def test_i2_r5_orthanc_sends_study_completes_under_its_quiet_time(
    node_factory: Callable[..., CdsNode], orthanc_factory: Callable[[CdsNode], Orthanc]
) -> None:
    """issue 2, req. 5: a study uploaded to Orthanc and sent with /modalities/cds/store arrives
    whole and byte for byte, and completes under ORTHANC's quiet time (the default
    quiet time is 60 s here, so completing in seconds proves the per-AE override)."""
    node = node_factory(
        {"assembly": {"quiet_time_s": 60, "quiet_time_by_calling_ae": {"ORTHANC": ORTHANC_QUIET_S}}}
    )
    orthanc = orthanc_factory(node)
    files = sorted(SERIES.iterdir())
    study_ids = set()
    for f in files:
        r = orthanc.http.post("/instances", content=f.read_bytes())
        assert r.status_code == 200, r.text
        study_ids.add(r.json()["ParentStudy"])
    assert len(study_ids) == 1
    (orthanc_study,) = study_ids

    r = orthanc.http.post("/modalities/cds/store", content=orthanc_study)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job.get("InstancesCount", 28) == 28, job
    assert job.get("FailedInstancesCount", 0) == 0, job

    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    done = node.wait_study(
        study_uid, lambda s: s["state"] == "complete", ORTHANC_QUIET_S + 10, "study complete"
    )
    assert done["instance_count"] == 28
    assert done["series_count"] == 1
    assert done["calling_ae_title"] == "ORTHANC"
    waited = (
        datetime.fromisoformat(done["completed_at"])
        - datetime.fromisoformat(done["last_received_at"])
    ).total_seconds()
    assert ORTHANC_QUIET_S - 0.05 <= waited <= ORTHANC_QUIET_S + 3, waited

    # Orthanc forwards the files it stored as they are: data sets identical to the source
    for f in files:
        sop_uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        dataset = split_part10(f.read_bytes())[1]
        assert spooled_file_for(node.home, sop_uid, dataset) is not None, f.name

    sessions = [e for e in node.events() if e["event"] == "ingest.association_closed"]
    assert sessions, "no association from Orthanc was closed"
    assert all(e["calling_ae"] == "ORTHANC" for e in sessions)
    assert sum(e["stored"] for e in sessions) == 28
    assert not node.log_problems()
