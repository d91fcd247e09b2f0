"""The identifying header of a received data set, read without pydicom when plain.

``read_header`` (pydicom's ``dcmread``) costs about 0.5 ms per instance, a
quarter of the C-STORE handler's time. Most data sets are plain: little
endian, every top-level element before Pixel Data of defined length, tags in
ascending order, the six attributes the node reads in their dictionary VR and
in ASCII. For those, ``scan_header`` walks the top-level element headers
(values skipped, as pydicom skips the values of tags it was not asked for) and
returns the same ``Header`` in a few microseconds. For anything else it
returns None and the caller uses ``read_header``, so that what is refused, and
with which status and comment, stays pydicom's decision: an element of
undefined length (a sequence pydicom parses and may refuse), a truncated or
garbled element, tags out of order, File Meta elements inside the data set, a
VR other than the dictionary's (UN: see ``Header.sop_uid_alias``), a value
that is multi-valued, not ASCII or not a plain integer, or a required UID
missing or invalid. tests/ingest/test_header_scan.py checks it against
``read_header`` on every variant.
"""

from __future__ import annotations

import re
import struct

from cds.ingest.instance import EXPLICIT_LE, IMPLICIT_LE, Header, is_valid_uid

#: the attributes read (tag -> dictionary VR), in ascending tag order
_WANTED = {
    0x00080016: b"UI",  # SOPClassUID
    0x00080018: b"UI",  # SOPInstanceUID
    0x00080060: b"CS",  # Modality
    0x0020000D: b"UI",  # StudyInstanceUID
    0x0020000E: b"UI",  # SeriesInstanceUID
    0x00200011: b"IS",  # SeriesNumber
}
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # where pydicom's stop_before_pixels stops
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
_SHORT_VRS = frozenset(
    (b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
     b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US")
)  # fmt: skip
_EXPLICIT_HEADER = struct.Struct("<HH2sH")
_IMPLICIT_HEADER = struct.Struct("<HHI")
_LONG_LENGTH = struct.Struct("<I")
_PRINTABLE = re.compile(rb"[\x20-\x5b\x5d-\x7e]*\x00?")  # printable ASCII but "\", one NUL pad
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NOT_UI = frozenset(tag for tag, vr in _WANTED.items() if vr != b"UI")


def transfer_syntax_of(file_meta: bytes) -> str | None:
    """The Transfer Syntax UID of a File Meta group as ``encode_file_meta`` writes it."""
    pos, end = 0, len(file_meta)
    while pos + 8 <= end:
        group, elem, vr, length = _EXPLICIT_HEADER.unpack_from(file_meta, pos)
        if group != 0x0002:
            return None
        if vr in _LONG_VRS:
            if pos + 12 > end:
                return None
            (length,) = _LONG_LENGTH.unpack_from(file_meta, pos + 8)
            pos += 12
        else:
            pos += 8
        if elem == 0x0010:
            return file_meta[pos : pos + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos += length
    return None


def scan_header(file_meta: bytes, dataset: bytes) -> Header | None:
    """The data set's ``Header`` as ``read_header`` returns it, or None where the data
    set is not plain (see the module docstring): then call ``read_header``."""
    ts = transfer_syntax_of(file_meta)
    if ts == EXPLICIT_LE:
        raw = _scan(dataset, implicit=False)
    elif ts == IMPLICIT_LE:
        raw = _scan(dataset, implicit=True)
    else:
        return None
    if raw is None:
        return None
    return _header(raw)


def _scan(dataset: bytes, *, implicit: bool) -> dict[int, bytes] | None:
    """The raw values of the wanted attributes, or None if the data set is not plain."""
    found: dict[int, bytes] = {}
    pos, size, last = 0, len(dataset), -1
    if size >= 6 and _looks_like_vr(dataset[4:6]) == implicit:
        return None  # pydicom would switch encoding (with a warning): let it
    while pos + 8 <= size:
        element = _implicit_element(dataset, pos) if implicit else _explicit_element(dataset, pos)
        if element is None:
            return None
        tag, length, pos = element
        if tag <= last or tag >> 16 in (0x0002, 0xFFFE):
            return None
        last = tag
        if tag in _PIXEL_TAGS:
            return found
        if length == _UNDEFINED or pos + length > size:
            return None
        if tag in _WANTED:
            found[tag] = dataset[pos : pos + length]
        pos += length
    return found if pos == size else None


def _implicit_element(dataset: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, value length, offset of the value) of the element at ``pos``."""
    group, elem, length = _IMPLICIT_HEADER.unpack_from(dataset, pos)
    return group << 16 | elem, length, pos + 8


def _explicit_element(dataset: bytes, pos: int) -> tuple[int, int, int] | None:
    """As ``_implicit_element``; None where pydicom would guess (an unknown VR), where
    a wanted attribute has another VR than the dictionary's (UN: ``read_header`` knows
    what to make of it) or where the header is cut short."""
    group, elem, vr, length = _EXPLICIT_HEADER.unpack_from(dataset, pos)
    tag = group << 16 | elem
    if tag in _WANTED and vr != _WANTED[tag]:
        return None
    if vr in _SHORT_VRS:
        return tag, length, pos + 8
    if vr not in _LONG_VRS or pos + 12 > len(dataset):
        return None
    (length,) = _LONG_LENGTH.unpack_from(dataset, pos + 8)
    return tag, length, pos + 12


def _header(raw: dict[int, bytes]) -> Header | None:
    """``Header`` from the raw values, or None where pydicom's conversion is needed."""
    text: dict[int, str] = {}
    for tag, value in raw.items():
        if _PRINTABLE.fullmatch(value) is None or (value[-1:] == b"\0" and tag in _NOT_UI):
            return None  # pydicom strips a NUL pad from UI values only
        text[tag] = value.decode("ascii").rstrip("\0").strip()
    study, series, sop = (text.get(t, "") for t in (0x0020000D, 0x0020000E, 0x00080018))
    if not (is_valid_uid(study) and is_valid_uid(series) and is_valid_uid(sop)):
        return None  # read_header words the refusal
    number = text.get(0x00200011, "")
    if number and _INTEGER.fullmatch(number) is None:
        return None
    return Header(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=text.get(0x00080016, ""),
        modality=text.get(0x00080060, "") or "OT",
        series_number=int(number) if number else None,
    )


def _looks_like_vr(raw: bytes) -> bool:
    return len(raw) == 2 and 0x40 < raw[0] < 0x5B and 0x40 < raw[1] < 0x5B
