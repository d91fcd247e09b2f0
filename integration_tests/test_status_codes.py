"""Issue 3 (contract): each C-STORE failure status of the conformance statement, with
its Error Comment, over one association that stays usable."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from integration_tests.conftest import CdsNode
from integration_tests.support import (
    CORPUS,
    CT_IMAGE_STORAGE,
    nodelay,
    send_raw_store,
    split_part10,
    spooled_files,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning"),
]

SOURCE = CORPUS / "ct" / "CT_small.dcm"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: (0008,0018) as an undefined-length SQ whose item claims 16 bytes but has 3
UNPARSEABLE = b"\x08\x00\x18\x00SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x10\x00\x00\x00abc"


def encoded(ds: pydicom.Dataset) -> bytes:
    """The data set alone, Explicit VR Little Endian."""
    buf = BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True)
    return split_part10(buf.getvalue())[1]


@pytest.mark.skipif(not SOURCE.is_file(), reason=f"corpus file missing: {SOURCE}")
def test_i2_r3_failure_statuses_carry_an_error_comment(node: CdsNode) -> None:
    """issue 2, req. 3: 0xA900, 0xC220, 0xC221 (request and data set), 0xC222, 0xC210 each come
    back with an Error Comment, nothing is spooled for them, and the association then
    stores the good instance."""
    from cds.requestor import PauseSafeAE

    good = split_part10(SOURCE.read_bytes())[1]
    sop_uid = str(pydicom.dcmread(SOURCE, stop_before_pixels=True).SOPInstanceUID)

    no_series = pydicom.dcmread(SOURCE)
    del no_series.SeriesInstanceUID
    bad_study = pydicom.dcmread(SOURCE)
    bad_study.StudyInstanceUID = "1.2.840.abc"

    cases = [
        # (what, SOP Class in the request, SOP Instance UID in the request, data set, status)
        ("SOP Class differs", MR_IMAGE_STORAGE, sop_uid, good, 0xA900),
        ("SOP Instance UID differs", CT_IMAGE_STORAGE, generate_uid(), good, 0xC222),
        ("invalid UID in request", CT_IMAGE_STORAGE, "1.2.3.x", good, 0xC221),
        ("invalid Study Instance UID", CT_IMAGE_STORAGE, sop_uid, encoded(bad_study), 0xC221),
        ("no Series Instance UID", CT_IMAGE_STORAGE, sop_uid, encoded(no_series), 0xC220),
        ("unparseable data set", CT_IMAGE_STORAGE, sop_uid, UNPARSEABLE, 0xC210),
        ("good", CT_IMAGE_STORAGE, sop_uid, good, 0x0000),
    ]

    ae = PauseSafeAE(ae_title="STATUSES")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE):
        ae.add_requested_context(UID(sop_class), [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established
    nodelay(assoc)
    cx_of = {str(cx.abstract_syntax): cx.context_id for cx in assoc.accepted_contexts}
    got = {}
    try:
        for msg_id, (what, sop_class, uid, data, _) in enumerate(cases, start=1):
            if what == "good":
                assert not spooled_files(node.home, sop_uid), "a refused instance was spooled"
            st = send_raw_store(
                assoc,
                context_id=cx_of[sop_class],
                sop_class_uid=sop_class,
                sop_uid=uid,
                dataset=data,
                message_id=msg_id,
            )
            got[what] = (int(st.Status), str(st.get("ErrorComment", "")))
            assert assoc.is_established, f"association lost after {what}"
    finally:
        assoc.release()

    assert {k: v[0] for k, v in got.items()} == {c[0]: c[4] for c in cases}
    for what, (status, comment) in got.items():
        if status != 0x0000:
            assert comment.strip(), f"{what}: no Error Comment"
            assert len(comment) <= 64, f"{what}: Error Comment longer than LO allows"
    assert len(spooled_files(node.home, sop_uid)) == 1
    assert node.health().status_code == 200
    assert not node.log_problems()
