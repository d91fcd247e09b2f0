"""issue 2: the C-STORE SCP over real sockets (pynetdicom as the sender).

Success only once the instance is on disk and in the store; every refusal is a
DIMSE status with an Error Comment; the association stays usable after one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from cds.config import Settings
from cds.domain import StudyState
from cds.ingest.instance import encode_file_meta
from cds.orchestrator import Node
from cds.requestor import PauseSafeAE

from ..conftest import make_settings

CT = "1.2.840.10008.5.1.4.1.1.2"


def ct(study: str | None = None, sop: str | None = None, **attrs: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop or generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "CANARY^NAME"
    ds.PatientID = "CANARY-ID-123"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x01\x00" * 16
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def connect(
    node: Node,
    calling: str = "TESTSCU",
    called: str | None = None,
    *,
    bind: str = "",
    evt_handlers: list[Any] | None = None,
) -> Association:
    """An association to the node's plain port (from ``bind``, e.g. 127.0.0.2)."""
    ae = PauseSafeAE(ae_title=calling)
    # one transfer syntax per context: the node accepts the first one proposed
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    ae.add_requested_context(CT, ImplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    host, port = node.listener.address
    return ae.associate(
        host,
        port,
        ae_title=called or node.settings.dicom.ae_title,
        bind_address=(bind, 0),
        evt_handlers=evt_handlers,
    )


@pytest.fixture
def assoc(node: Node) -> Iterator[Association]:
    a = connect(node)
    assert a.is_established
    yield a
    a.release()


def stored_files(node: Node) -> list[Path]:
    return sorted(node.spool.iter_files())


def test_echo(assoc: Association) -> None:
    assert assoc.send_c_echo().Status == 0x0000


def test_store_is_on_disk_and_recorded_when_success_returns(node: Node, assoc: Association) -> None:
    ds = ct()
    status = assoc.send_c_store(ds)
    assert status.Status == 0x0000
    (f,) = stored_files(node)
    assert f.name.startswith(ds.SOPInstanceUID + ".")
    back = dcmread(f)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.SourceApplicationEntityTitle == "TESTSCU"
    assert f.read_bytes()[:128] == b"\0" * 128  # zeroed preamble
    (s,) = node.store.list_studies()
    assert (s.instance_count, s.state) == (1, StudyState.RECEIVING)
    assert s.study_uid == ds.StudyInstanceUID


def test_refusals_carry_status_and_comment_and_association_survives(
    node: Node, assoc: Association
) -> None:
    no_study = ct()
    del no_study.StudyInstanceUID
    st = assoc.send_c_store(no_study)
    assert st.Status == 0xC220
    assert "StudyInstanceUID" in st.ErrorComment

    bad_uid = ct(SeriesInstanceUID="1.2.abc")
    st = assoc.send_c_store(bad_uid)
    assert st.Status == 0xC221
    assert "(0020,000E)" in st.ErrorComment

    # the same association still stores a good instance
    assert assoc.send_c_store(ct()).Status == 0x0000
    assert len(stored_files(node)) == 1


def send_raw(  # noqa: PLR0917 - mirrors the C-STORE command fields
    assoc: Association, tmp: Path, sop_class: str, sop_uid: str, ts: str, data: bytes
) -> Dataset:
    """C-STORE arbitrary data set bytes under the given command UIDs.

    pynetdicom sends a file's data set unparsed when STORE_SEND_CHUNKED_DATASET
    is on, taking the command's UIDs and transfer syntax from the File Meta.
    """
    path = tmp / f"raw-{generate_uid()}.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + encode_file_meta(sop_class, sop_uid, ts, "X") + data)
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False


def encoded(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def test_sop_instance_uid_mismatch_is_refused(
    node: Node, assoc: Association, tmp_path: Path
) -> None:
    ds = ct()
    rsp = send_raw(assoc, tmp_path, CT, generate_uid(), ExplicitVRLittleEndian, encoded(ds))
    assert rsp.Status == 0xC222
    assert "SOPInstanceUID" in rsp.ErrorComment
    assert stored_files(node) == []


def test_sop_class_mismatch_is_a900(node: Node, assoc: Association, tmp_path: Path) -> None:
    ds = ct(SOPClassUID="1.2.840.10008.5.1.4.1.1.4")  # MR in a CT context
    rsp = send_raw(assoc, tmp_path, CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, encoded(ds))
    assert rsp.Status == 0xA900
    assert "SOPClassUID" in rsp.ErrorComment


def test_unparseable_data_set_is_c210(node: Node, assoc: Association, tmp_path: Path) -> None:
    garbage = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00\x01"
    rsp = send_raw(assoc, tmp_path, CT, generate_uid(), ExplicitVRLittleEndian, garbage)
    assert rsp.Status == 0xC210
    assert rsp.ErrorComment.startswith("cannot parse data set")
    assert assoc.send_c_store(ct()).Status == 0x0000


def test_duplicate_same_bytes_is_success_without_second_file(
    node: Node, assoc: Association
) -> None:
    ds = ct()
    assert assoc.send_c_store(ds).Status == 0x0000
    assert assoc.send_c_store(ds).Status == 0x0000
    assert len(stored_files(node)) == 1
    (s,) = node.store.list_studies()
    assert s.instance_count == 1


def test_duplicate_other_bytes_keeps_both_newest_wins(node: Node, assoc: Association) -> None:
    ds = ct()
    assert assoc.send_c_store(ds).Status == 0x0000
    ds.SeriesDescription = "corrected"
    assert assoc.send_c_store(ds).Status == 0x0000
    files = stored_files(node)
    assert len(files) == 2
    current = node.store.find_instance(ds.SOPInstanceUID)
    assert current is not None
    assert dcmread(node.spool.absolute(current[1])).SeriesDescription == "corrected"


def test_study_completes_after_quiet_time_across_associations(node: Node) -> None:
    study = generate_uid()
    for _ in range(3):
        a = connect(node)
        assert a.send_c_store(ct(study=study)).Status == 0x0000
        a.release()
    (s,) = node.store.list_studies()
    assert (s.instance_count, s.series_count) == (3, 3)
    deadline = time.monotonic() + 5
    while node.store.list_studies()[0].state is StudyState.RECEIVING:
        assert time.monotonic() < deadline, "study never completed"
        time.sleep(0.05)
    assert node.store.list_studies()[0].state is StudyState.COMPLETE


def test_consumer_is_called_for_completed_study(node: Node) -> None:
    seen: list[str] = []
    node.on_study_complete(seen.append)
    a = connect(node)
    a.send_c_store(ct())
    a.release()
    deadline = time.monotonic() + 5
    while not seen:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert seen == [node.store.list_studies()[0].study_key]


def test_wrong_called_ae_title_is_rejected(node: Node) -> None:
    a = connect(node, called="NOT_CDS")
    assert a.is_rejected


def test_calling_ae_allow_list(tmp_path: Path) -> None:
    s: Settings = make_settings(tmp_path, dicom={"allowed_calling_ae_titles": ["PACS1"]})
    n = Node(s)
    n.start()
    try:
        assert connect(n, calling="INTRUDER").is_rejected
        ok = connect(n, calling="PACS1")
        assert ok.is_established
        ok.release()
    finally:
        n.stop()


def test_watermark_answers_a700_with_comment(tmp_path: Path) -> None:
    n = Node(make_settings(tmp_path, spool={"min_free_mb": 10**9}))
    n.start()
    try:
        a = connect(n)
        st = a.send_c_store(ct())
        assert st.Status == 0xA700
        assert "watermark" in st.ErrorComment
        assert a.send_c_echo().Status == 0x0000  # the association stays usable
        a.release()
        assert list(n.spool.iter_files()) == []
        assert n.health()["status"] == "unavailable"
    finally:
        n.stop()


def test_identical_duplicate_below_watermark_is_success_without_writing(
    node: Node, assoc: Association
) -> None:
    """issue 14: below the disk watermark, an identical re-send of a spooled instance is
    answered Success and writes nothing; the same SOP Instance UID with other bytes, and
    a new instance, are still refused 0xA700."""
    ds = ct()
    assert assoc.send_c_store(ds).Status == 0x0000
    (spooled,) = stored_files(node)
    before = spooled.stat()
    node.spool.min_free_bytes = 2**62  # no disk has that much free: below the watermark
    assert assoc.send_c_store(ds).Status == 0x0000
    other = ct(sop=ds.SOPInstanceUID, study=ds.StudyInstanceUID, InstanceNumber=2)
    other.SeriesInstanceUID = ds.SeriesInstanceUID
    for refused in (other, ct()):
        rsp = assoc.send_c_store(refused)
        assert rsp.Status == 0xA700
        assert "watermark" in rsp.ErrorComment
    assert stored_files(node) == [spooled]
    after = spooled.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not list((node.spool.root / "tmp").iterdir())
    (study,) = node.store.list_studies()
    assert study.instance_count == 1


def test_no_patient_data_in_logs(
    node: Node, assoc: Association, json_logs: StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    """Canaries in patient fields (and in a value pydicom warns about) reach no log or stderr."""
    assoc.send_c_store(ct())
    bad = ct(PatientBirthDate="CANARY-DATE", SeriesInstanceUID="1.2.CANARY")
    assert assoc.send_c_store(bad).Status == 0xC221
    no_study = ct(AccessionNumber="CANARY-ACC")
    del no_study.StudyInstanceUID
    assert assoc.send_c_store(no_study).Status == 0xC220
    assoc.release()
    time.sleep(0.2)
    out = json_logs.getvalue()
    assert "ingest.instance_refused" in out
    assert "ingest.association_closed" in out
    assert "CANARY" not in out
    captured = capfd.readouterr()
    assert "CANARY" not in captured.err
    assert "CANARY" not in captured.out


def test_stock_pynetdicom_receive_path_still_works(tmp_path: Path) -> None:
    """dicom.fast_receive: false falls back to pynetdicom's own loops, same behaviour."""
    from cds.ingest.fastpath import FastRequestHandler

    n = Node(make_settings(tmp_path, dicom={"fast_receive": False}))
    n.start()
    try:
        assert n.listener._server is not None
        assert n.listener._server.RequestHandlerClass is not FastRequestHandler
        a = connect(n)
        assert a.send_c_store(ct()).Status == 0x0000
        no_study = ct()
        del no_study.StudyInstanceUID
        assert a.send_c_store(no_study).Status == 0xC220
        a.release()
        assert len(list(n.spool.iter_files())) == 1
    finally:
        n.stop()
