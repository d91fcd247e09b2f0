"""issue 2: read what ingest needs without decoding pixels; refuse clearly what cannot be read."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cds.errors import IngestError
from cds.ingest.instance import (
    IMPLEMENTATION_CLASS_UID,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_INVALID_UID,
    STATUS_MISSING_ATTRIBUTE,
    encode_file_meta,
    is_valid_uid,
    read_header,
    safe_message,
)

CT = "1.2.840.10008.5.1.4.1.1.2"


def dataset_bytes(ds: Dataset, ts: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=False, implicit_vr=False, little_endian=True)
    raw = buf.getvalue()
    return (
        raw[132 + 12 + int.from_bytes(raw[140:144], "little") :] if raw[128:132] == b"DICM" else raw
    )


def make_ds(**attrs: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.SeriesNumber = 3
    ds.PatientName = "CANARY^PATIENT"
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def test_file_meta_reads_back_with_pydicom() -> None:
    meta = encode_file_meta(CT, "1.2.3.4", ExplicitVRLittleEndian, "MODALITY1")
    ds = dcmread(BytesIO(b"\0" * 128 + b"DICM" + meta + b""), force=True)
    fm = ds.file_meta
    assert fm.MediaStorageSOPClassUID == CT
    assert fm.MediaStorageSOPInstanceUID == "1.2.3.4"
    assert fm.TransferSyntaxUID == ExplicitVRLittleEndian
    assert fm.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert fm.SourceApplicationEntityTitle == "MODALITY1"
    assert fm.FileMetaInformationGroupLength == len(meta) - 12


def test_read_header_takes_uids_modality_series_number() -> None:
    ds = make_ds()
    meta = encode_file_meta(CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, "X")
    h = read_header(meta, dataset_bytes(ds))
    assert (h.study_uid, h.series_uid, h.sop_uid) == (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
    )
    assert (h.modality, h.series_number, h.sop_class_uid) == ("CT", 3, CT)


def test_read_header_on_real_files(corpus: Path) -> None:
    for name in (
        "ct/CT_small.dcm",
        "mr/MR_small.dcm",
        "compressed/MR2_J2KR.dcm",
        "compressed/image_dfl.dcm",
        "compressed/MR_small_bigendian.dcm",
    ):
        src = dcmread(corpus / name, stop_before_pixels=True)
        raw = (corpus / name).read_bytes()
        start = 132 + 12 + int.from_bytes(raw[140:144], "little")
        ts = str(src.file_meta.TransferSyntaxUID)
        meta = encode_file_meta(src.SOPClassUID, src.SOPInstanceUID, ts, "X")
        h = read_header(meta, raw[start:])
        assert h.sop_uid == src.SOPInstanceUID, name
        assert h.study_uid == src.StudyInstanceUID, name


def test_missing_study_uid_is_refused_with_the_tag() -> None:
    ds = make_ds()
    del ds.StudyInstanceUID
    meta = encode_file_meta(CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, "X")
    with pytest.raises(IngestError) as err:
        read_header(meta, dataset_bytes(ds))
    assert err.value.status == STATUS_MISSING_ATTRIBUTE
    assert "(0020,000D)" in str(err.value)


def test_path_like_uid_is_refused() -> None:
    ds = make_ds(SeriesInstanceUID="../../etc")
    meta = encode_file_meta(CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, "X")
    with pytest.raises(IngestError) as err:
        read_header(meta, dataset_bytes(ds))
    assert err.value.status == STATUS_INVALID_UID
    assert "(0020,000E)" in str(err.value)


@pytest.mark.parametrize(
    ("ts", "data"),
    [
        # an undefined-length sequence cut short
        (ExplicitVRLittleEndian, b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00\x01"),
        # a "deflated" data set that does not inflate
        ("1.2.840.10008.1.2.1.99", b"\x00\x01\x02garbage"),
    ],
)
def test_unparseable_data_set_is_cannot_understand(ts: str, data: bytes) -> None:
    meta = encode_file_meta(CT, "1.2.3", ts, "X")
    with pytest.raises(IngestError) as err:
        read_header(meta, data)
    assert err.value.status == STATUS_CANNOT_UNDERSTAND
    assert str(err.value).startswith("cannot parse data set: ")


def test_bytes_without_identifiers_are_refused() -> None:
    meta = encode_file_meta(CT, "1.2.3", ExplicitVRLittleEndian, "X")
    with pytest.raises(IngestError) as err:
        read_header(meta, b"\x08\x00\x16\x00\x00\x00\x04\x00abcd")
    assert err.value.status == STATUS_MISSING_ATTRIBUTE


@pytest.mark.parametrize(
    ("uid", "ok"),
    [
        ("1.2.840.10008.1.2", True),
        ("1.2.3.", False),
        ("", False),
        ("1" * 65, False),
        ("1.2.a", False),
        ("../1", False),
    ],
)
def test_uid_validation(uid: str, ok: bool) -> None:
    assert is_valid_uid(uid) is ok


def test_safe_message_masks_quoted_values() -> None:
    assert safe_message(ValueError("invalid value 'DOE^JOHN' in (0010,0010)")) == (
        "invalid value '…' in (0010,0010)"
    )
