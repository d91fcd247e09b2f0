"""Issue 4: a study sent over several associations is assembled into one study,
completes after the quiet time, and a late instance re-opens it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from integration_tests.conftest import CdsNode
from integration_tests.support import CORPUS, dcmsend, spooled_files

pytestmark = pytest.mark.integration

SERIES = CORPUS / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
QUIET_S = 2.5


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def send_ok(node: CdsNode, files: list[Path], calling_ae: str) -> None:
    r = dcmsend(node.dicom_port, node.ae_title, files, calling_ae=calling_ae)
    assert r.returncode == 0, r.stdout
    assert f"with status SUCCESS  : {len(files)}" in r.stdout, r.stdout


@pytest.mark.skipif(not SERIES.is_dir(), reason=f"corpus series missing: {SERIES}")
def test_i2_r4_study_over_three_associations_completes_and_reopens(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """issue 2, req. 4: 28 CT slices in 3 dcmsend runs -> 1 study of 28 instances, complete
    only after the quiet time; an identical re-send does not re-open it, a late new
    instance does (receiving, reopened_count 1) and it completes again."""
    node = node_factory({"assembly": {"quiet_time_s": QUIET_S}})
    files = sorted(SERIES.iterdir())
    assert len(files) == 28
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    groups = [files[:10], files[10:20], files[20:]]

    for n, group in enumerate(groups, start=1):
        send_ok(node, group, calling_ae=f"CT_SCANNER{n}")
        study = node.study_by_uid(study_uid)
        assert study is not None
        # the gap between associations is shorter than the quiet time: still receiving
        assert study["state"] == "receiving", study
        assert study["instance_count"] == sum(len(g) for g in groups[:n])

    assert len(node.studies()) == 1
    study = node.study_by_uid(study_uid)
    assert study is not None
    assert (study["series_count"], study["instance_count"]) == (1, 28)
    assert study["series"][0]["instance_count"] == 28
    assert study["modalities"] == ["CT"]
    assert study["calling_ae_title"] == "CT_SCANNER3"

    done = node.wait_study(
        study_uid, lambda s: s["state"] == "complete", QUIET_S + 10, "study complete"
    )
    waited = ts(done["completed_at"]) - ts(done["last_received_at"])
    assert QUIET_S - 0.05 <= waited <= QUIET_S + 3, waited
    assert done["instance_count"] == 28
    kinds = [e["kind"] for e in done["history"]]
    assert kinds[0] == "receiving"
    assert kinds.count("complete") == 1
    assert "reopened" not in kinds

    # an identical instance again: Success, nothing changes, no re-open
    send_ok(node, [files[3]], calling_ae="CT_SCANNER1")
    again = node.study_by_uid(study_uid)
    assert again is not None
    assert again["state"] == "complete"
    assert again["reopened_count"] == 0
    assert again["instance_count"] == 28

    # a late instance of the same series (new SOP Instance UID) re-opens the study
    late = pydicom.dcmread(files[27])
    late.SOPInstanceUID = late.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    late.InstanceNumber = 29
    late_path = tmp_path / "late.dcm"
    late.save_as(late_path)
    send_ok(node, [late_path], calling_ae="CT_SCANNER2")
    reopened = node.study_by_uid(study_uid)
    assert reopened is not None
    assert reopened["state"] == "receiving"
    assert reopened["reopened_count"] == 1
    assert reopened["instance_count"] == 29
    assert [e["kind"] for e in reopened["history"]].count("reopened") == 1
    assert len(spooled_files(node.home, str(late.SOPInstanceUID))) == 1

    final = node.wait_study(
        study_uid, lambda s: s["state"] == "complete", QUIET_S + 10, "study complete again"
    )
    assert final["instance_count"] == 29
    assert final["reopened_count"] == 1
    assert [e["kind"] for e in final["history"]].count("complete") == 2
    assert not node.log_problems()
