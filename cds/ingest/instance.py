"""What the node reads of an incoming instance, without decoding pixels.

``encode_file_meta`` builds the File Meta Information for the data set bytes
exactly as received (no re-encoding, so the spooled data set is byte-identical
to what the sender sent); ``read_header`` parses just the attributes the node
needs and checks them, turning every problem into an ``IngestError`` whose
message can be sent back as a DIMSE Error Comment.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.tag import Tag

from cds import __version__
from cds.errors import IngestError

#: cds' implementation class UID (UUID-derived root, PS3.5 B.2)
IMPLEMENTATION_CLASS_UID = "2.25.260187945178043591834155128263512402661"
IMPLEMENTATION_VERSION_NAME = f"CDS_{__version__}"[:16]

# Failure statuses of the C-STORE SCP; the conformance statement lists them.
STATUS_CANNOT_UNDERSTAND = 0xC210  # data set cannot be parsed
STATUS_MISSING_ATTRIBUTE = 0xC220  # a required UID is absent
STATUS_INVALID_UID = 0xC221  # a UID is not a valid DICOM UID
STATUS_UID_MISMATCH = 0xC222  # data set SOP Instance UID differs from the request
STATUS_SOP_CLASS_MISMATCH = 0xA900  # data set SOP Class UID differs from the request
STATUS_PROCESSING_FAILURE = 0xC211  # unexpected error in the node

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")

_HEADER_TAGS = [
    Tag(0x0008, 0x0016),  # SOPClassUID
    Tag(0x0008, 0x0018),  # SOPInstanceUID
    Tag(0x0008, 0x0060),  # Modality
    Tag(0x0020, 0x000D),  # StudyInstanceUID
    Tag(0x0020, 0x000E),  # SeriesInstanceUID
    Tag(0x0020, 0x0011),  # SeriesNumber
]


@dataclass(frozen=True, slots=True)
class Header:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str
    series_number: int | None


def is_valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and _UID_RE.match(value) is not None


def safe_message(exc: BaseException) -> str:
    """An exception's message with quoted values masked, so no data set value leaks."""
    return _QUOTED.sub("'…'", str(exc)).strip() or type(exc).__name__


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def encode_file_meta(
    sop_class_uid: str, sop_uid: str, transfer_syntax_uid: str, calling_ae: str
) -> bytes:
    """File Meta Information group (PS3.10 7.1), Explicit VR Little Endian."""
    body = b"".join(
        (
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", _text(sop_class_uid, b"\x00")),
            _element(0x00020003, b"UI", _text(sop_uid, b"\x00")),
            _element(0x00020010, b"UI", _text(transfer_syntax_uid, b"\x00")),
            _element(0x00020012, b"UI", _text(IMPLEMENTATION_CLASS_UID, b"\x00")),
            _element(0x00020013, b"SH", _text(IMPLEMENTATION_VERSION_NAME, b" ")),
            _element(0x00020016, b"AE", _text(calling_ae.strip() or "UNKNOWN", b" ")),
        )
    )
    return _element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def read_header(file_meta: bytes, dataset: bytes) -> Header:
    """Parse the identifying UIDs of a data set, stopping before Pixel Data."""
    buf = BytesIO(b"\x00" * 128 + b"DICM" + file_meta + dataset)
    try:
        ds = dcmread(buf, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        values = {
            "study": str(ds.get("StudyInstanceUID", "") or "").strip(),
            "series": str(ds.get("SeriesInstanceUID", "") or "").strip(),
            "sop": str(ds.get("SOPInstanceUID", "") or "").strip(),
            "sop_class": str(ds.get("SOPClassUID", "") or "").strip(),
            "modality": str(ds.get("Modality", "") or "").strip(),
        }
        series_number_raw = ds.get("SeriesNumber")
    except Exception as exc:
        raise IngestError(
            STATUS_CANNOT_UNDERSTAND, f"cannot parse data set: {safe_message(exc)}"
        ) from exc
    try:
        series_number = int(series_number_raw) if series_number_raw not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None  # tolerant: a bad IS here does not stop ingest
    for key, name in (
        ("study", "(0020,000D) StudyInstanceUID"),
        ("series", "(0020,000E) SeriesInstanceUID"),
        ("sop", "(0008,0018) SOPInstanceUID"),
    ):
        if not values[key]:
            raise IngestError(STATUS_MISSING_ATTRIBUTE, f"missing {name}")
        if not is_valid_uid(values[key]):
            raise IngestError(STATUS_INVALID_UID, f"invalid UID in {name}")
    return Header(
        study_uid=values["study"],
        series_uid=values["series"],
        sop_uid=values["sop"],
        sop_class_uid=values["sop_class"],
        modality=values["modality"] or "OT",
        series_number=series_number,
    )
