"""Issue 7: duplicate policy. Same SOP Instance UID and same bytes: Success, nothing
changes. Same UID, different bytes: Success, newest wins, the old file is kept."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from integration_tests.conftest import CdsNode
from integration_tests.support import CORPUS, dcmsend, spooled_files

pytestmark = pytest.mark.integration

SOURCE = CORPUS / "ct" / "CT_small.dcm"


def send_one(node: CdsNode, path: Path) -> None:
    r = dcmsend(node.dicom_port, node.ae_title, [path])
    assert r.returncode == 0, r.stdout
    assert "with status SUCCESS  : 1" in r.stdout, r.stdout


@pytest.mark.skipif(not SOURCE.is_file(), reason=f"corpus file missing: {SOURCE}")
def test_i2_r7_duplicate_then_changed_instance(node: CdsNode, tmp_path: Path) -> None:
    """issue 2, req. 7: the same file twice -> both Success, 1 instance, 1 file, study untouched;
    a changed version with the same SOP Instance UID -> Success, still 1 instance,
    2 files on disk (old kept), history records instance_replaced."""
    ds = pydicom.dcmread(SOURCE)
    sop_uid, study_uid = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)

    send_one(node, SOURCE)
    first = node.study_by_uid(study_uid)
    assert first is not None
    assert first["instance_count"] == 1
    assert len(spooled_files(node.home, sop_uid)) == 1

    send_one(node, SOURCE)
    dup = node.study_by_uid(study_uid)
    assert dup is not None
    assert dup["instance_count"] == 1
    assert dup["last_received_at"] == first["last_received_at"]
    assert dup["complete_due_at"] == first["complete_due_at"]
    assert dup["history"] == first["history"]
    assert len(spooled_files(node.home, sop_uid)) == 1
    assert any(e["event"] == "ingest.duplicate_ignored" for e in node.events())

    changed = tmp_path / "changed.dcm"
    ds.StudyDescription = "CHANGED BY INTEGRATION TEST"
    ds.save_as(changed)
    send_one(node, changed)
    rep = node.study_by_uid(study_uid)
    assert rep is not None
    assert rep["instance_count"] == 1
    assert rep["series_count"] == 1
    replaced = [e for e in rep["history"] if e["kind"] == "instance_replaced"]
    assert len(replaced) == 1
    assert sop_uid in replaced[0]["detail"]

    files = spooled_files(node.home, sop_uid)
    assert len(files) == 2, files
    descriptions = sorted(
        str(pydicom.dcmread(f, stop_before_pixels=True).get("StudyDescription", "")) for f in files
    )
    original = str(pydicom.dcmread(SOURCE, stop_before_pixels=True).get("StudyDescription", ""))
    assert descriptions == sorted([original, "CHANGED BY INTEGRATION TEST"])

    # the changed version again is a duplicate of what is now current
    send_one(node, changed)
    again = node.study_by_uid(study_uid)
    assert again is not None
    assert [e["kind"] for e in again["history"]].count("instance_replaced") == 1
    assert len(spooled_files(node.home, sop_uid)) == 2
    assert not node.log_problems()
