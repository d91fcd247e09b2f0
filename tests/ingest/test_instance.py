"""issue 2: read what ingest needs without decoding pixels; refuse clearly what cannot be read."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import config, dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cds.errors import IngestError, safe_message
from cds.ingest.instance import (
    IMPLEMENTATION_CLASS_UID,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_INVALID_UID,
    STATUS_MISSING_ATTRIBUTE,
    STATUS_TOO_DEEP,
    check_nesting,
    encode_file_meta,
    is_valid_uid,
    may_be_un_alias,
    read_header,
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


def test_safe_message_keeps_no_value() -> None:
    """issue 16: a library's message is described (type, reason, attribute), never kept."""
    assert safe_message(ValueError("invalid value 'DOE^JOHN' in (0010,0010)")) == (
        "ValueError: invalid value in (0010,0010) PatientName"
    )


def as_un(ds: Dataset, padding: bytes, *keywords: str, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """``ds``'s bytes with ``keywords`` encoded as UN (VR unknown), each value + ``padding``
    (pydicom writes UN as given only while it does not replace UN with the known VR)."""
    with monkeypatch.context() as m:
        m.setattr(config, "replace_un_with_known_vr", False)
        for kw in keywords:
            raw = str(ds[kw].value).encode("ascii") + padding
            ds.add_new(ds[kw].tag, "UN", raw + b"\0" * (len(raw) % 2))
        return dataset_bytes(ds)


_UN_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@pytest.mark.parametrize("padding", [b"", b"\0", b" ", b"\0\0", b" \0", b"  \0\0\0"])
def test_identifiers_encoded_as_un_are_read_with_their_dictionary_vr(
    padding: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 16: known tags encoded as UN are decoded with the dictionary VR, padding
    stripped; DCMTK's name for an UN UID (its first byte in hex) is known too."""
    ds = make_ds(StudyInstanceUID="2.25.77", Modality="MR")
    sop, series = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
    meta = encode_file_meta(CT, sop, ExplicitVRLittleEndian, "X")
    plain = read_header(meta, dataset_bytes(make_ds(SOPInstanceUID=sop)))
    data = as_un(ds, padding, *_UN_KEYWORDS, "Modality", "SeriesNumber", monkeypatch=monkeypatch)
    assert data.count(b"UN") == 6  # written as UN, not converted back
    header = read_header(meta, data)
    assert (header.sop_class_uid, header.sop_uid) == (CT, sop)
    assert (header.study_uid, header.series_uid) == ("2.25.77", series)
    assert (header.modality, header.series_number) == ("MR", 3)
    assert (header.sop_class_alias, header.sop_uid_alias) == ("31", "31")
    assert may_be_un_alias(header.sop_uid_alias)
    assert (plain.sop_class_alias, plain.sop_uid_alias) == ("", "")  # UI: no alias
    assert not may_be_un_alias(sop)


def test_a_sequence_encoded_as_un_is_bounded_and_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 16: a known sequence encoded as UN (its items in implicit VR, PS3.5 6.2.2)
    counts in the nesting bound and reads back as the sequence it is."""
    item = Dataset()
    item.ReferencedSOPClassUID = CT
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, item)
    value = b"\xfe\xff\x00\xe0" + len(body.getvalue()).to_bytes(4, "little") + body.getvalue()
    ds = make_ds()
    sop = str(ds.SOPInstanceUID)
    with monkeypatch.context() as m:
        m.setattr(config, "replace_un_with_known_vr", False)
        ds.add_new(0x00081140, "UN", value)  # ReferencedImageSequence
        data = dataset_bytes(ds)
    meta = encode_file_meta(CT, sop, ExplicitVRLittleEndian, "X")
    assert check_nesting(meta, data, ExplicitVRLittleEndian, 1) == 1
    with pytest.raises(IngestError) as err:
        check_nesting(meta, data, ExplicitVRLittleEndian, 0)
    assert err.value.status == STATUS_TOO_DEEP
    assert read_header(meta, data).sop_uid == sop
    read = dcmread(BytesIO(b"\0" * 128 + b"DICM" + meta + data))
    assert read.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
