"""issue 19 (receive): the header scan answers exactly as read_header, or leaves it to it.

``scan_header`` is the receive hot path's shortcut past pydicom; whatever it
returns must equal ``read_header``'s ``Header``, and wherever ``read_header``
refuses (or needs pydicom's rules: UN, sequences of undefined length, odd
values) it must return None so that the refusal stays pydicom's.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from cds.errors import IngestError
from cds.ingest.header_scan import scan_header, transfer_syntax_of
from cds.ingest.instance import BIG_ENDIAN, Header, encode_file_meta, read_header

CT = "1.2.840.10008.5.1.4.1.1.2"


def ct(**attrs: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.SeriesNumber = 3
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    ds.PixelData = b"\0" * 8
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def encode(ds: Dataset, ts: str = ExplicitVRLittleEndian) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian = ts != BIG_ENDIAN
    buf.is_implicit_VR = ts == ImplicitVRLittleEndian
    write_dataset(buf, ds)
    return bytes(buf.getvalue())


def meta_for(ts: str) -> bytes:
    return encode_file_meta(CT, "1.2.3", ts, "TESTSCU")


def outcome(meta: bytes, data: bytes) -> Header | str:
    try:
        return read_header(meta, data)
    except IngestError as exc:
        return f"0x{exc.status:04X} {exc}"


def agrees(meta: bytes, data: bytes) -> Header | None:
    """scan_header's answer, after checking it is read_header's (or None)."""
    scanned = scan_header(meta, data)
    if scanned is not None:
        assert outcome(meta, data) == scanned
    return scanned


def test_transfer_syntax_is_read_from_our_file_meta() -> None:
    assert transfer_syntax_of(meta_for(ExplicitVRLittleEndian)) == ExplicitVRLittleEndian
    assert transfer_syntax_of(meta_for(ImplicitVRLittleEndian)) == ImplicitVRLittleEndian
    assert transfer_syntax_of(b"") is None


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_plain_data_set_is_scanned_to_the_same_header(ts: str) -> None:
    ds = ct(PatientName="Doe^Jane", ImageType=["ORIGINAL", "PRIMARY"])
    scanned = agrees(meta_for(ts), encode(ds, ts))
    assert scanned is not None
    assert (scanned.study_uid, scanned.sop_uid, scanned.modality, scanned.series_number) == (
        ds.StudyInstanceUID,
        ds.SOPInstanceUID,
        "CT",
        3,
    )


def test_a_defined_length_sequence_is_skipped() -> None:
    item = Dataset()
    item.ReferencedSOPClassUID = CT
    item.ReferencedSOPInstanceUID = generate_uid()
    raw = encode(ct(ReferencedImageSequence=Sequence([item])))
    assert b"\xff\xff\xff\xff" not in raw  # pydicom writes defined lengths
    assert agrees(meta_for(ExplicitVRLittleEndian), raw) is not None


@pytest.mark.parametrize(
    "attrs",
    [
        {"SeriesNumber": None},
        {"Modality": ""},
        {"Modality": "CT "},
        {"SOPClassUID": ""},
        {"SOPInstanceUID": "1.2.3 "},
        {"SeriesNumber": "+7"},
    ],
    ids=repr,
)
def test_values_read_as_pydicom_reads_them(attrs: dict[str, object]) -> None:
    ds = ct(**attrs)
    assert agrees(meta_for(ExplicitVRLittleEndian), encode(ds)) is not None


def _with_value(data: bytes, tag: bytes, value: bytes) -> bytes:
    """``data`` with the short-VR element ``tag`` given ``value`` (same VR)."""
    at = data.index(tag)
    (length,) = struct.unpack_from("<H", data, at + 6)
    return data[: at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + length :]


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        (b"\x08\x00\x60\x00CS", b"CT\\MR "),  # multi-valued
        (b"\x08\x00\x60\x00CS", b"C\xc9"),  # not ASCII
        (b"\x08\x00\x60\x00CS", b"CT\0\0"),  # NUL padding where pydicom keeps it
        (b"\x20\x00\x11\x00IS", b"2.0 "),  # not a plain integer
        (b"\x20\x00\x11\x00IS", b"x "),
        (b"\x20\x00\x0d\x00UI", b""),  # a required UID missing
        (b"\x20\x00\x0d\x00UI", b"1.2.x."),  # invalid
        (b"\x08\x00\x18\x00UI", b"1.2\\3."),
    ],
    ids=repr,
)
def test_odd_values_are_left_to_read_header(tag: bytes, value: bytes) -> None:
    data = _with_value(encode(ct()), tag, value)
    assert agrees(meta_for(ExplicitVRLittleEndian), data) is None


def test_uid_padding_is_stripped_as_pydicom_strips_it() -> None:
    data = _with_value(encode(ct()), b"\x20\x00\x0d\x00UI", b"1.2.3 \0")
    scanned = agrees(meta_for(ExplicitVRLittleEndian), data)
    assert scanned is not None
    assert scanned.study_uid == "1.2.3"


def test_structures_pydicom_must_judge_are_left_to_read_header() -> None:
    meta = meta_for(ExplicitVRLittleEndian)
    plain = encode(ct())
    item = Dataset()
    item.CodeValue = "1"
    with_sq = ct(DerivationCodeSequence=Sequence([item]))
    with_sq["DerivationCodeSequence"].is_undefined_length = True
    undefined_sq = encode(with_sq)
    assert b"\xff\xff\xff\xff" in undefined_sq
    un_uid = plain.replace(b"\x08\x00\x18\x00UI", b"\x08\x00\x18\x00UN", 1)  # wrong length form
    cut = plain[: plain.index(b"\x20\x00\x0e\x00") + 12]
    garbled_vr = plain.replace(b"\x08\x00\x60\x00CS", b"\x08\x00\x60\x00c5", 1)
    swapped = plain.replace(b"\x08\x00\x60\x00", b"\x08\x00\x05\x00", 1)  # out of order
    with_meta = encode_file_meta(CT, "1.2.3", ExplicitVRLittleEndian, "X")[12:] + plain
    for data in (undefined_sq, un_uid, cut, garbled_vr, swapped, with_meta):
        assert agrees(meta, data) is None
    assert scan_header(meta_for(BIG_ENDIAN), encode(ct(), BIG_ENDIAN)) is None
    # implicit VR data announced as explicit (and back): pydicom switches, we do not
    assert agrees(meta, encode(ct(), ImplicitVRLittleEndian)) is None
    assert agrees(meta_for(ImplicitVRLittleEndian), plain) is None


def test_every_corpus_file_agrees(corpus: Path) -> None:
    scanned = files = 0
    for path in sorted(corpus.rglob("*")):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        if raw[128:132] != b"DICM":
            continue
        if raw[132:136] != b"\x02\x00\x00\x00" or raw[136:138] != b"UL":
            continue  # no group length: not worth walking here
        offset = 144 + int.from_bytes(raw[140:144], "little")
        ts = transfer_syntax_of(raw[132:offset]) or ""
        files += 1
        scanned += agrees(meta_for(ts), raw[offset:]) is not None
    assert 0 < scanned < files  # taken on real files, and not on every one
