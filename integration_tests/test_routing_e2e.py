"""issue 4: a study sent by DCMTK is routed by the rules in force and its models run;
the same decisions are visible through the admin API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from integration_tests.conftest import CdsNode
from integration_tests.support import CORPUS, dcmsend

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
SERIES = CORPUS / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
MR = CORPUS / "mr" / "MR_small.dcm"


@pytest.mark.skipif(not SERIES.is_dir(), reason=f"corpus series missing: {SERIES}")
def test_i4_dcmtk_study_is_routed_and_its_models_run(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """issue 4: head CT -> the CT rule's two pipelines run (jobs done, inference in the
    history); an MR study matches no rule and is done with nothing run; the explain API
    gives the reason."""
    node = node_factory(
        {
            "assembly": {"quiet_time_s": 1.5},
            "inference": {"model_dirs": [str(REPO / "models")], "providers": "cpu"},
            "routing": {"file": str(REPO / "deploy" / "routing.example.yaml")},
        }
    )
    files = sorted(SERIES.iterdir())[:8]
    assert dcmsend(node.dicom_port, node.ae_title, files, calling_ae="MODALITY").returncode == 0
    assert dcmsend(node.dicom_port, node.ae_title, [MR], calling_ae="MODALITY").returncode == 0
    ct_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    mr_uid = str(pydicom.dcmread(MR, stop_before_pixels=True).StudyInstanceUID)
    ct = node.wait_study(ct_uid, lambda s: s["state"] in ("done", "failed"), 60, "CT done")
    mr = node.wait_study(mr_uid, lambda s: s["state"] in ("done", "failed"), 60, "MR done")
    assert ct["state"] == "done"
    assert mr["state"] == "done"

    jobs = node.http.get("/api/jobs", params={"study_key": ct["study_key"]}).json()
    assert sorted(j["kind"] for j in jobs) == [
        "ct-bone:cds-ref-ct-bone",
        "ct-hyperdensity:cds-ref-blob-detect",
    ]
    assert {j["state"] for j in jobs} == {"done"}
    history = node.study(ct["study_key"])["history"]
    text = "\n".join(f"{h['kind']}: {h['detail']}" for h in history)
    assert "rule 'adult CT' -> ct-bone (run)" in text
    assert "inferred: cds-ref-ct-bone 1.0.0" in text
    assert node.http.get("/api/jobs", params={"study_key": mr["study_key"]}).json() == []

    plan = node.http.post("/api/route/explain", json={"study_key": mr["study_key"]}).json()
    reasons = [r["series"][0]["reasons"] for r in plan["studies"][0]["rules"]]
    assert reasons[0][0] == "Modality is 'MR', not equal to 'CT'"
    queue = node.http.get("/api/queue").json()
    assert queue["jobs_queued"] == 0
    assert queue["jobs_running"] == 0
    assert node.log_problems() == []
