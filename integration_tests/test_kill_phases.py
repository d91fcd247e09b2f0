"""issue 8: kill -9 the node at each moment of the data flow after the study was
acknowledged: while a job runs (before the model), when the result objects are on
disk but not yet in the outbox, and when the PACS has acknowledged a batch that is
not yet recorded as delivered. (A kill during receive: test_crash.py.)

After a restart on the same home: every acknowledged instance is still there, the
study's results are delivered, and Orthanc (the PACS) holds each result exactly
once: re-made results carry the same SOP Instance UIDs (they derive from the inputs
and the model version), and a batch sent again is the same instances.

The kill comes from failpoints (``cds/faults.py``): SIGKILL by the node itself at an
exact point, so each case is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from integration_tests.conftest import CdsNode, Orthanc, wait_for
from integration_tests.support import dcmsend, free_port, write_bone_study

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def _setup(tmp_path: Path, pacs_port: int) -> dict[str, object]:
    routing = {
        "destinations": {"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}},
        "pipelines": {
            "bone": {"model": "cds-ref-ct-bone", "results": ["SEG", "SR"], "destinations": ["pacs"]}
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
        "delivery": {"poll_interval_s": 0.1, "backoff_initial_s": 0.5},
    }


def _result_instances(orthanc: Orthanc) -> list[str]:
    """SOP Instance UIDs of every SEG/SR instance Orthanc holds (repeats included)."""
    out = []
    for study in orthanc.study_ids():
        for s in orthanc.series(study):
            if s["modality"] in ("SEG", "SR"):
                out.extend(s["sop_uids"])
    return out


@pytest.mark.parametrize("point", ["pipeline.inferring", "pipeline.encoded", "delivery.sent"])
def test_i8_kill_at_each_phase_loses_nothing_and_delivers_once(
    point: str,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pacs_port = free_port()
    monkeypatch.setenv("CDS_FAILPOINTS", f"{point}=kill")
    node = node_factory(_setup(tmp_path, pacs_port))
    orthanc = orthanc_factory(node, dicom_port=pacs_port)
    files, study_uid = write_bone_study(tmp_path / "study")
    assert dcmsend(node.dicom_port, node.ae_title, files).returncode == 0  # all acknowledged

    assert node.proc is not None
    node.proc.wait(60)  # the failpoint fires: the node SIGKILLs itself
    assert node.proc.returncode == -9, node.log_tail(30)

    monkeypatch.delenv("CDS_FAILPOINTS")
    node.start()
    s = node.wait_study(study_uid, lambda s: s["state"] == "done", 120, "study done after restart")
    assert s["instance_count"] == len(files)  # nothing acknowledged was lost
    key = str(s["study_key"])
    rows = wait_for(
        lambda: (r := node.deliveries(key)) and all(x["state"] == "delivered" for x in r) and r,
        60,
        0.2,
        "every result delivered after the restart",
    )
    assert {r["modality"] for r in rows} == {"SEG", "SR"}
    held = _result_instances(orthanc)
    assert sorted(held) == sorted({r["sop_uid"] for r in rows}), "a duplicate in the PACS"
    history = [h["kind"] for h in node.study(key)["history"]]
    if point.startswith("pipeline."):
        assert "processing_interrupted" in history  # counted by the poison-study guard
    assert node.log_problems() == []
