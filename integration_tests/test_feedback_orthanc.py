"""issue 6: DICOM-native feedback from a real PACS. A radiologist rejects cds' SR in
the viewer; the viewer stores an IOCM rejection note (KOS, 113001) in Orthanc, and
Orthanc sends it to the node. The node records one rejection per finding of that SR,
by ``AE:ORTHANC``, and the observatory counts them.

The KOS is built here with highdicom, from the SR as Orthanc holds it (not with cds'
own KOS builder), the way a viewer or the PACS would make it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import generate_uid

from integration_tests.conftest import CdsNode, Orthanc, wait_for
from integration_tests.support import free_port
from integration_tests.test_roundtrip import (
    SERIES,
    all_in,
    needs_series,
    node_overrides,
    study_key_of,
    wait_deliveries,
)

pytestmark = pytest.mark.integration

BLOBS = "cds-ref-blob-detect"


def _sr_in_orthanc(orthanc: Orthanc, study_id: str, sop_uid: str) -> tuple[str, Any]:
    """Orthanc's id and the data set of the instance ``sop_uid`` of the study."""
    for inst in orthanc.http.get(f"/studies/{study_id}/instances").json():
        tags = orthanc.http.get(f"/instances/{inst['ID']}/simplified-tags").json()
        if tags.get("SOPInstanceUID") == sop_uid:
            raw = orthanc.http.get(f"/instances/{inst['ID']}/file").content
            return str(inst["ID"]), pydicom.dcmread(io.BytesIO(raw))
    raise AssertionError(f"Orthanc does not hold {sop_uid}")


def _viewer_rejection_note(sr: Any) -> pydicom.Dataset:
    """What a viewer stores when a radiologist rejects ``sr``: a KOS titled 113001."""
    content = hd.ko.KeyObjectSelection(
        document_title=hd.sr.CodedConcept("113001", "DCM", "Rejected for Quality Reasons"),
        referenced_objects=[sr],
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=[sr],
        content=content,
        series_instance_uid=generate_uid(),
        series_number=77,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Some Viewer",
    )


def _observatory_rejected(node: CdsNode, model: str) -> int:
    rows = node.http.get("/api/observatory/models").json()
    return sum(int(r["rejected"]) for r in rows if r["model"] == model)


@needs_series
def test_i6_rejection_note_stored_in_orthanc_rejects_our_findings(
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    tmp_path: Path,
) -> None:
    pacs_port = free_port()
    node = node_factory(node_overrides(tmp_path, pacs_port))
    orthanc = orthanc_factory(node, dicom_port=pacs_port)
    files = sorted(SERIES.iterdir())
    study_id = orthanc.upload(files)
    orthanc.send_to_cds(study_id)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    key = study_key_of(node, study_uid)
    wait_deliveries(node, key, all_in("delivered"), 60, "every result delivered")

    findings = node.http.get(f"/api/studies/{key}/findings").json()
    ours = [f for f in findings if f["model"] == BLOBS]
    assert ours, findings
    (sr_uid,) = {f["result_sop_instance_uid"] for f in ours}
    assert all(f["verdict"] is None for f in findings)
    assert _observatory_rejected(node, BLOBS) == 0

    # the radiologist rejects the SR in the viewer: the KOS goes to Orthanc, then to us
    _, sr = _sr_in_orthanc(orthanc, study_id, sr_uid)
    kos = _viewer_rejection_note(sr)
    buf = io.BytesIO()
    kos.save_as(buf, enforce_file_format=True)
    r = orthanc.http.post("/instances", content=buf.getvalue())
    assert r.status_code == 200, r.text
    job = orthanc.http.post("/modalities/cds/store", content=r.json()["ID"])
    assert job.status_code == 200, job.text
    assert job.json().get("FailedInstancesCount", 0) == 0, job.json()

    def rejected() -> list[dict[str, Any]] | None:
        rows = node.http.get("/api/feedback", params={"study_key": key}).json()
        return rows if len(rows) >= len(ours) else None

    fb = wait_for(rejected, 60, 0.2, "one rejection per finding of the SR")
    assert len(fb) == len(ours)
    assert {f["tracking_uid"] for f in fb} == {f["tracking_uid"] for f in ours}
    assert {f["action"] for f in fb} == {"reject"}
    assert {f["source"] for f in fb} == {"dicom"}
    assert {f["user"] for f in fb} == {"AE:ORTHANC"}
    assert {f["result_sop_instance_uid"] for f in fb} == {sr_uid}
    assert {f["model"] for f in fb} == {BLOBS}
    assert all(f["model_version"] and len(f["model_sha256"]) == 64 for f in fb)

    # the findings show the verdict; the other model's findings are untouched
    after = node.http.get(f"/api/studies/{key}/findings").json()
    for f in after:
        assert f["verdict"] == ("reject" if f["model"] == BLOBS else None), f
    # the observatory counts exactly these rejections
    assert _observatory_rejected(node, BLOBS) == len(ours)
    # the note is feedback, not a reason to run the models again
    jobs = node.http.get("/api/jobs", params={"study_key": key}).json()
    assert len(jobs) == 2, jobs
    assert node.log_problems() == []
