"""Issue 16: dirty real-world input never costs the radiologist a result.

Identifiers encoded as UN (VR unknown), as Orthanc forwards data converted from
implicit VR without the dictionary: DCMTK-based senders (dcmsend, Orthanc) read such a
UID as OB and put its first byte in hex ("31") in the C-STORE request, and DCMTK's
storescp takes them (it reads the data set the same way). The node decodes the known
tags with their dictionary VR, stores the instance byte for byte under its real UIDs,
and assembles and routes the study by them; a UID that really differs is still refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cds.requestor import PauseSafeAE
from integration_tests.conftest import CdsNode, Orthanc
from integration_tests.support import (
    CT_IMAGE_STORAGE,
    dcmsend,
    nodelay,
    send_raw_store,
    split_part10,
    spooled_file_for,
    write_un_series,
)

pytestmark = pytest.mark.integration

#: trailing paddings an UN value was seen with, one instance each
PADDINGS = [b"", b"\0", b" ", b"\0\0", b" \0", b"  \0\0\0"]
ROUTING = """
pipelines:
  triage: {model: cds-ref-cxr-triage, results: [SR]}
rules:
  - name: chest
    match:
      - {attribute: Modality, equals: CT}
      - {attribute: BodyPartExamined, equals: CHEST}
      - {attribute: SOPClassUID, equals: 1.2.840.10008.5.1.4.1.1.2}
    pipelines: [triage]
"""


def _routed_node(node_factory: Callable[..., CdsNode], tmp_path: Path) -> CdsNode:
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    return node_factory({"routing": {"file": str(routing)}, "assembly": {"quiet_time_s": 1}})


def _check_stored(node: CdsNode, files: list[Path], study_uid: str) -> None:
    """Every instance spooled byte for byte under its real UIDs; the study assembled by
    them and routed on the UN-encoded attributes."""
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    for f in files:
        sent = split_part10(f.read_bytes())[1]
        sop_uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        spooled = spooled_file_for(node.home, sop_uid, sent)
        assert spooled is not None, f"{f.name} not spooled byte for byte"
        assert split_part10(spooled.read_bytes())[1] == sent
        meta = pydicom.filereader.read_file_meta_info(spooled)
        assert (meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID) == (
            CT_IMAGE_STORAGE,
            sop_uid,
        )
    study = node.wait_study(study_uid, lambda s: s["instance_count"] == len(files), 15)
    assert study["study_instance_uid"] == study_uid
    assert [(s["series_instance_uid"], s["modality"]) for s in study["series"]] == [
        (series_uid, "CT")
    ]
    plan = node.http.post("/api/route/explain", json={"study_key": study["study_key"]})
    assert plan.status_code == 200, plan.text
    (rule,) = plan.json()["studies"][0]["rules"]
    assert rule["matched"], rule
    assert rule["selected"] == [series_uid]


def test_i16_un_identifiers_from_dcmsend_are_stored_as_sent(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """DCMTK's dcmsend sends UN-encoded identifiers (its request names them "31"):
    Success for each padding, stored byte for byte, the study assembled and routed by
    the real UIDs. (DCMTK's storescu does not send such a file: "No SOP Class or
    Instance UID in file".)"""
    node = _routed_node(node_factory, tmp_path)
    files, study_uid = write_un_series(tmp_path / "un", PADDINGS)
    sent = dcmsend(node.dicom_port, node.ae_title, files)
    assert sent.returncode == 0, sent.stdout
    assert f"with status SUCCESS  : {len(files)}" in sent.stdout, sent.stdout
    assert "Error" not in sent.stdout, sent.stdout
    _check_stored(node, files, study_uid)
    assert not node.log_problems()


def test_i16_a_uid_that_differs_is_still_refused(node: CdsNode, tmp_path: Path) -> None:
    """A request UID that is neither the data set's UID nor DCMTK's name for its UN
    encoding is refused 0xC222 (0xA900 for the SOP Class), nothing stored."""
    files, _ = write_un_series(tmp_path / "un", [b"\0"])
    data = split_part10(files[0].read_bytes())[1]
    real = str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
    plain, _ = write_un_series(tmp_path / "plain", [b""], keywords=())  # UIDs as UI
    plain_data = split_part10(plain[0].read_bytes())[1]
    ae = PauseSafeAE(ae_title="TESTSCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established
    nodelay(assoc)
    try:
        cases = [
            (CT_IMAGE_STORAGE, generate_uid(), data, 0xC222),  # another UID
            (CT_IMAGE_STORAGE, "32", data, 0xC222),  # not the first byte of the UN UID
            (CT_IMAGE_STORAGE, "31", plain_data, 0xC222),  # the data set's UID is UI
            ("1.2.840.10008.5.1.4.1.1.7", "31", data, 0xA900),  # another SOP Class
            (CT_IMAGE_STORAGE, real, data, 0x0000),  # the real UID: Success
        ]
        for n, (sop_class, sop_uid, body, status) in enumerate(cases, 1):
            rsp = send_raw_store(
                assoc,
                context_id=1,
                sop_class_uid=sop_class,
                sop_uid=sop_uid,
                dataset=body,
                message_id=n,
            )
            assert rsp.Status == status, (n, hex(rsp.Status))
    finally:
        assoc.release()
    (stored,) = (node.home / "spool" / "studies").rglob("*.dcm")  # the real UID's only
    assert stored.name.startswith(f"{real}.")


def test_i16_orthanc_forwards_un_identifiers_to_the_node(
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[[CdsNode], Orthanc],
    tmp_path: Path,
) -> None:
    """A study with UN-encoded identifiers stored in Orthanc and sent to the node with
    POST /modalities/cds/store: Orthanc reports success (it failed with HTTP 500,
    DIMSE 0xC222, before), the node holds every instance as Orthanc sent it."""
    node = _routed_node(node_factory, tmp_path)
    orthanc = orthanc_factory(node)
    # one padding: Orthanc itself keeps an UN value's padding, so that "UID\0" and
    # "UID " would be two studies to it
    files, study_uid = write_un_series(tmp_path / "un", [b"\0"] * 3)
    job = orthanc.send_to_cds(orthanc.upload(files))
    assert job.get("FailedInstancesCount", 0) == 0, job
    _check_stored(node, files, study_uid)
    assert not node.log_problems()
