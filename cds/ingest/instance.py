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
import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from cds import __version__
from cds.errors import IngestError, safe_message

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
STATUS_TOO_DEEP = 0xC212  # sequences nested deeper than dicom.limits.max_sequence_depth
# A size limit is a resource this node refuses to spend: "Refused: Out of Resources"
# (PS3.4 B.2.3), the same family as a full disk, with a comment naming the limit.
STATUS_TOO_LARGE = 0xA700

DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

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
    #: what a DCMTK-based sender (storescu, dcmsend, Orthanc) puts in its C-STORE request
    #: for the SOP Class / Instance UID when the data set encodes it as UN: DCMTK reads
    #: an UN value as OB and renders its first byte in hex ("31" for "1.2...");
    #: empty when the data set gives the UID its own VR
    sop_class_alias: str = ""
    sop_uid_alias: str = ""


def un_alias(ds: Dataset, tag: int) -> str:
    """``Header.sop_uid_alias`` of the element ``tag`` of a data set just read: call it
    before the element is accessed (pydicom then replaces UN with the dictionary VR)."""
    raw = ds.get_item(tag)
    if raw is None or raw.VR != "UN" or not isinstance(raw.value, bytes) or not raw.value:
        return ""
    return f"{raw.value[0]:02x}"


def may_be_un_alias(uid: str) -> bool:
    """Whether a request UID may be DCMTK's rendering of an UN-encoded UID (see
    ``Header.sop_uid_alias``): the first byte of a UID, a digit, in hex."""
    return len(uid) == 2 and uid[0] == "3" and uid[1].isdigit()


def is_valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and _UID_RE.match(value) is not None


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
    """Parse the identifying UIDs of a data set, stopping before Pixel Data.

    Call ``check_limits`` first: it bounds what this parse (which recurses into
    sequences) may meet. A RecursionError here is still answered, never raised.
    """
    buf = BytesIO(b"\x00" * 128 + b"DICM" + file_meta + dataset)
    try:
        ds = dcmread(buf, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        # known tags encoded as UN are decoded with their dictionary VR, padding
        # stripped (pydicom's config.replace_un_with_known_vr): read the aliases first
        aliases = (un_alias(ds, 0x00080016), un_alias(ds, 0x00080018))
        values = {
            "study": str(ds.get("StudyInstanceUID", "") or "").strip(),
            "series": str(ds.get("SeriesInstanceUID", "") or "").strip(),
            "sop": str(ds.get("SOPInstanceUID", "") or "").strip(),
            "sop_class": str(ds.get("SOPClassUID", "") or "").strip(),
            "modality": str(ds.get("Modality", "") or "").strip(),
        }
        series_number_raw = ds.get("SeriesNumber")
    except RecursionError as exc:
        raise IngestError(STATUS_TOO_DEEP, "sequences nested too deeply to parse") from exc
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
        sop_class_alias=aliases[0],
        sop_uid_alias=aliases[1],
    )


# --- bounds checked before any parse (issue 7, bad input) --------------------


def inflate(dataset: bytes, max_bytes: int) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian data set (raw deflate, PS3.5 A.5),
    never holding more than ``max_bytes`` of output: a decompression bomb is refused
    after at most that much work, not after it has filled memory.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    pending = dataset
    chunk = 1 << 20
    try:
        while True:
            room = max_bytes + 1 - len(out)
            part = inflater.decompress(pending, min(chunk, room))
            out += part
            if len(out) > max_bytes:
                raise IngestError(
                    STATUS_TOO_LARGE,
                    f"inflated size over dicom.limits.max_inflated_mb ({max_bytes // 2**20} MiB)",
                )
            pending = inflater.unconsumed_tail
            if not pending:
                break
        out += inflater.flush()
    except zlib.error as exc:
        raise IngestError(STATUS_CANNOT_UNDERSTAND, "deflated data set is corrupt") from exc
    if len(out) > max_bytes:
        raise IngestError(
            STATUS_TOO_LARGE,
            f"inflated size over dicom.limits.max_inflated_mb ({max_bytes // 2**20} MiB)",
        )
    return bytes(out)


_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
#: explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)


@dataclass(slots=True)
class _Frame:
    """One open level while scanning: a data set (or item) or a sequence."""

    is_sequence: bool
    end: int | None  # None: undefined length, ends at a delimiter
    implicit: bool
    little: bool
    fresh: bool = True  # no element read yet: its encoding is still to be confirmed


def check_nesting(file_meta: bytes, dataset: bytes, transfer_syntax_uid: str, limit: int) -> int:
    """Refuse (IngestError STATUS_TOO_DEEP) a data set nesting sequences past ``limit``.

    The bounded scan decides; where it cannot follow the encoding to the end (a
    garbled element a tolerant parser may still get past), the data set is parsed
    in full and its depth measured, any RecursionError counting as too deep.
    Returns the depth found.
    """
    deepest, complete = sequence_depth(dataset, transfer_syntax_uid, limit)
    if complete:
        return deepest
    buf = BytesIO(b"\x00" * 128 + b"DICM" + file_meta + dataset)
    try:
        ds = dcmread(buf, force=True)
        deepest = _parsed_depth(ds, limit)
    except RecursionError as exc:
        raise _too_deep(limit) from exc
    except IngestError:
        raise
    except Exception:  # unreadable: read_header answers with its own status
        return deepest
    return deepest


def check_file(raw: bytes, *, max_inflated_bytes: int, max_sequence_depth: int) -> None:
    """The ingest bounds for a Part 10 file read from disk rather than received (``cds
    process`` on local files, tools): call before any full parse. Raises IngestError.
    """
    if raw[128:132] != b"DICM":  # no File Meta: the data set starts at 0, encoding detected
        check_nesting(b"", raw, EXPLICIT_LE, max_sequence_depth)
        return
    meta_end, ts = _read_meta(raw)
    dataset = raw[meta_end:]
    if ts == DEFLATED:
        dataset, ts = inflate(dataset, max_inflated_bytes), EXPLICIT_LE
    meta = encode_file_meta("1.2.3", "1.2.3", ts, "FILE")  # only for a fallback parse
    check_nesting(meta, dataset, ts, max_sequence_depth)


def _read_meta(raw: bytes) -> tuple[int, str]:
    """(offset of the data set, Transfer Syntax UID) of a Part 10 file: File Meta walked
    element by element (its group length may be absent or wrong), Explicit VR LE."""
    pos, ts = 132, EXPLICIT_LE
    while pos + 8 <= len(raw) and raw[pos : pos + 2] == b"\x02\x00":
        (elem,) = struct.unpack_from("<H", raw, pos + 2)
        if raw[pos + 4 : pos + 6] in _LONG_VRS:
            (length,) = struct.unpack_from("<I", raw, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", raw, pos + 6)
            start = pos + 8
        if elem == 0x0010:
            ts = raw[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return pos, ts


def _parsed_depth(ds: Dataset, limit: int) -> int:
    """Nesting of sequences in a parsed data set, walked with an explicit stack."""
    todo: list[tuple[Dataset, int]] = [(ds, 0)]
    deepest = 0
    while todo:
        item, depth = todo.pop()
        for elem in item:
            if elem.VR == "SQ":
                if depth + 1 > limit:
                    raise _too_deep(limit)
                deepest = max(deepest, depth + 1)
                todo.extend((child, depth + 1) for child in elem.value)
    return deepest


def _too_deep(limit: int) -> IngestError:
    return IngestError(
        STATUS_TOO_DEEP,
        f"sequence nesting over dicom.limits.max_sequence_depth ({limit})",
    )


def sequence_depth(  # noqa: PLR0912, PLR0915 (one flat loop over element kinds, one stack)
    dataset: bytes, transfer_syntax_uid: str, limit: int
) -> tuple[int, bool]:
    """The deepest nesting of sequences in an encoded data set, found without recursion.

    Scans element headers only (values are skipped, pixels never read), with an
    explicit stack, so a hostile file cannot exhaust Python's call stack. Raises
    IngestError(STATUS_TOO_DEEP) as soon as ``limit`` is passed. Stops quietly at
    anything it cannot follow (a truncated or garbled element): the parse that comes
    next reports those. Returns (deepest, complete): complete is False where the
    scan stopped at an element it could not follow (``check_nesting`` then parses).
    """
    implicit = transfer_syntax_uid == IMPLICIT_LE
    little = transfer_syntax_uid != BIG_ENDIAN
    stack = [_Frame(is_sequence=False, end=len(dataset), implicit=implicit, little=little)]
    depth = deepest = 0
    pos, size = 0, len(dataset)
    while stack:
        frame = stack[-1]
        if frame.end is not None and pos >= frame.end:
            stack.pop()
            depth -= frame.is_sequence
            continue
        if pos + 8 > size:
            break  # truncated: no parser can read further either
        fmt = "<HHI" if frame.little else ">HHI"
        group, elem, length = struct.unpack_from(fmt, dataset, pos)
        tag = group << 16 | elem
        if tag in (_ITEM, _ITEM_END, _SEQ_END):  # delimiters are always 8 bytes
            pos += 8
            if tag == _ITEM and frame.is_sequence:
                item_end = None if length == _UNDEFINED else pos + length
                stack.append(_Frame(False, item_end, frame.implicit, frame.little))
            elif tag == _ITEM_END and not frame.is_sequence and frame.end is None:
                stack.pop()
            elif tag == _SEQ_END and frame.is_sequence and frame.end is None:
                stack.pop()
                depth -= 1
            elif tag == _ITEM and not frame.is_sequence:
                return deepest, False  # an item outside a sequence
            continue
        if frame.is_sequence:
            return deepest, False  # a sequence holds items only
        if frame.fresh:
            frame.fresh = False
            # as parsers do: the first element shows whether a data set is really
            # explicit VR (two capital letters where a VR goes); an item of a
            # sequence in implicit VR stays implicit (PS3.5 6.2.2)
            if not (frame.implicit and len(stack) > 1):
                frame.implicit = not _looks_like_vr(dataset[pos + 4 : pos + 6])
        vr, length, header = _element_header(dataset, pos, tag, frame, length)
        if header == 0:
            break  # truncated
        pos += header
        if vr == b"SQ" or (vr in (b"UN", None) and _holds_items(dataset, pos, length, frame, tag)):
            depth += 1
            deepest = max(deepest, depth)
            if depth > limit:
                raise _too_deep(limit)
            # an undefined-length UN is a sequence encoded in implicit VR (PS3.5 6.2.2)
            inner_implicit = frame.implicit or vr == b"UN"
            end = None if length == _UNDEFINED else pos + length
            stack.append(_Frame(True, end, inner_implicit, frame.little))
        elif length == _UNDEFINED:
            # encapsulated pixel data: fragments in items, up to a sequence delimiter
            pos = _skip_fragments(dataset, pos, frame.little)
            if pos < 0:
                return deepest, False
        else:
            pos += length
    return deepest, True


def _element_header(
    data: bytes, pos: int, tag: int, frame: _Frame, implicit_length: int
) -> tuple[bytes | None, int, int]:
    """(VR, value length, header size) of the element at ``pos``; header size 0 if it
    runs past the end. VR is None where implicit and not in the dictionary."""
    if frame.implicit:
        try:
            vr: bytes | None = dictionary_VR(tag).encode("ascii")[:2]
        except KeyError:
            vr = None
        return vr, implicit_length, 8
    vr = data[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        if pos + 12 > len(data):
            return vr, 0, 0
        (length,) = struct.unpack_from("<I" if frame.little else ">I", data, pos + 8)
        return vr, length, 12
    (length,) = struct.unpack_from("<H" if frame.little else ">H", data, pos + 6)
    return vr, length, 8


def _looks_like_vr(raw: bytes) -> bool:
    return len(raw) == 2 and 0x40 < raw[0] < 0x5B and 0x40 < raw[1] < 0x5B


def _holds_items(data: bytes, pos: int, length: int, frame: _Frame, tag: int) -> bool:
    """Whether an element of unknown VR is a sequence, as a parser would take it:
    undefined length, or a value that starts with an Item tag."""
    if tag == _PIXEL_DATA:
        return False
    if length == _UNDEFINED:
        return True
    if length < 8 or pos + 4 > len(data):
        return False
    group, elem = struct.unpack_from("<HH" if frame.little else ">HH", data, pos)
    return bool((group << 16 | elem) == _ITEM)


def _skip_fragments(data: bytes, pos: int, little: bool) -> int:
    """The offset after an encapsulated Pixel Data's sequence delimiter, or -1."""
    fmt = "<HHI" if little else ">HHI"
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from(fmt, data, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM or length == _UNDEFINED:
            return -1
        pos += length
    return -1
