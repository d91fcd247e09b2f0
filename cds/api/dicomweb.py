"""STOW-RS in, the parts that need no node: the request body read into instances, and
the Store Instances Response (PS3.18 10.5) built from what became of each.

A request is ``multipart/related; type="application/dicom"``: each part one PS3.10 file.
Anything else (another media type, the JSON or XML metadata + bulk data form) is a 415;
a body that is not multipart as its header says is a 400. A part that is not a
readable PS3.10 file fails alone (a per-instance failure), the others are stored.

Every text here names a part by its number and a problem by its tag: never a value.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

# the media types and the Store Instances Response's tags (PS3.18 10.5.3): the client's
from cds.delivery.dicomweb import (
    DICOM,
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_CLASS_UID,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
)
from cds.errors import IngestError
from cds.ingest.instance import STATUS_CANNOT_UNDERSTAND, STATUS_MISSING_ATTRIBUTE

#: Failure Reason of an instance of another study than the one the URL names (PS3.18
#: 10.5.1: "shall not be stored"): "Data Set does not match SOP Class" is the nearest
#: C-STORE failure, used for it by other origin servers
STATUS_STUDY_MISMATCH = 0xA900

_MAX_PART_HEADERS = 16 * 1024
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)


class BadRequest(ValueError):
    """The request as a whole cannot be read: ``status`` is 400 or 415."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Part:
    """One body part: its media type (lower case, no parameters) and content."""

    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Part10:
    """A PS3.10 file split as the C-STORE receiver takes it: the data set bytes after
    the File Meta, and the UIDs the File Meta gives (as a C-STORE request would)."""

    sop_class_uid: str
    sop_uid: str
    transfer_syntax_uid: str
    file_meta: bytes  # group 0002 as encoded, without preamble and "DICM"
    dataset: bytes


@dataclass(frozen=True, slots=True)
class InstanceOutcome:
    """What became of one part: stored (``failure`` None), or refused with a reason."""

    sop_class_uid: str
    sop_uid: str
    failure: int | None = None
    reason: str = ""


def boundary_of(content_type: str) -> str:
    """The boundary of a STOW-RS request's Content-Type; BadRequest (415, 400) if it is
    not ``multipart/related; type="application/dicom"`` with a boundary."""
    msg = Message()
    msg["content-type"] = content_type
    if msg.get_content_type() != "multipart/related":
        raise BadRequest(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    kind = msg.get_param("type")
    if not isinstance(kind, str) or kind.strip().lower() != DICOM:
        raise BadRequest(
            415, 'only type="application/dicom" parts are accepted (no metadata + bulk data)'
        )
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise BadRequest(400, "the Content-Type has no valid boundary")
    return boundary


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body (RFC 2046 5.1.1); BadRequest(400) when its framing
    is broken (no first or closing delimiter) or it holds no part."""
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise BadRequest(400, "multipart body: no opening boundary delimiter")
    parts: list[Part] = []
    pos = start + len(delimiter)
    while True:
        if body[pos : pos + 2] == b"--":
            break  # the close delimiter
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise BadRequest(400, f"multipart body: part {len(parts) + 1} is not framed")
        pos = line_end + 2
        end = _next_delimiter(body, b"\r\n" + delimiter, pos)
        if end < 0:
            raise BadRequest(400, "multipart body: no closing boundary delimiter")
        parts.append(_part(body[pos:end], len(parts) + 1))
        pos = end + 2 + len(delimiter)
    if not parts:
        raise BadRequest(400, "multipart body holds no part")
    return parts


def _next_delimiter(body: bytes, delimiter: bytes, pos: int) -> int:
    """Where the next delimiter line starts: CRLF, "--boundary", then "--" or optional
    white space and CRLF (a line that merely starts with the boundary is content)."""
    while (found := body.find(delimiter, pos)) >= 0:
        after = found + len(delimiter)
        if body[after : after + 2] == b"--":
            return found
        line_end = body.find(b"\r\n", after)
        if line_end >= 0 and not body[after:line_end].strip(b" \t"):
            return found
        pos = after
    return -1


def _part(raw: bytes, number: int) -> Part:
    if raw.startswith(b"\r\n"):  # no header at all: text/plain by RFC 2046, refused later
        return Part("text/plain", raw[2:])
    head_end = raw.find(b"\r\n\r\n", 0, _MAX_PART_HEADERS)
    if head_end < 0:
        raise BadRequest(400, f"multipart body: part {number} has no end of headers")
    content_type = "text/plain"
    for line in raw[:head_end].split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-type":
            msg = Message()
            msg["content-type"] = value.decode("latin-1").strip()
            content_type = msg.get_content_type()
    return Part(content_type, raw[head_end + 4 :])


def read_part10(part: Part) -> Part10:
    """Split one part as ``Receiver.receive`` takes it. IngestError (0xC210, 0xC220)
    when it is not a PS3.10 file with the UIDs the receiver needs in its File Meta."""
    if part.content_type != DICOM:
        raise IngestError(STATUS_CANNOT_UNDERSTAND, f"part is {part.content_type}, not {DICOM}")
    raw = part.content
    if raw[128:132] != b"DICM":
        raise IngestError(
            STATUS_CANNOT_UNDERSTAND, "not a PS3.10 file (no DICM prefix after the preamble)"
        )
    meta_end, values = _file_meta(raw)
    uids = {}
    for elem, name in (
        (0x0002, "(0002,0002) MediaStorageSOPClassUID"),
        (0x0003, "(0002,0003) MediaStorageSOPInstanceUID"),
        (0x0010, "(0002,0010) TransferSyntaxUID"),
    ):
        value = values.get(elem, b"").rstrip(b"\x00 ").decode("ascii", "replace")
        if not value:
            raise IngestError(STATUS_MISSING_ATTRIBUTE, f"File Meta has no {name}")
        uids[elem] = value
    return Part10(
        sop_class_uid=uids[0x0002],
        sop_uid=uids[0x0003],
        transfer_syntax_uid=uids[0x0010],
        file_meta=raw[132:meta_end],
        dataset=raw[meta_end:],
    )


def _file_meta(raw: bytes) -> tuple[int, dict[int, bytes]]:
    """(offset of the data set, {element: value}) of the File Meta group, walked element
    by element in Explicit VR Little Endian (its group length may be absent or wrong)."""
    pos, values = 132, {}
    while pos + 8 <= len(raw) and raw[pos : pos + 2] == b"\x02\x00":
        (elem,) = struct.unpack_from("<H", raw, pos + 2)
        if raw[pos + 4 : pos + 6] in _LONG_VRS:
            if pos + 12 > len(raw):
                break
            (length,) = struct.unpack_from("<I", raw, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", raw, pos + 6)
            start = pos + 8
        if start + length > len(raw):
            raise IngestError(STATUS_CANNOT_UNDERSTAND, "File Meta element runs past the part")
        values[elem] = raw[start : start + length]
        pos = start + length
    if not values:
        raise IngestError(STATUS_CANNOT_UNDERSTAND, "no File Meta Information after DICM")
    return pos, values


# --- the response ---------------------------------------------------------------


def http_status(outcomes: list[InstanceOutcome]) -> int:
    """PS3.18 table 10.5.3-2: 200 every instance stored, 202 some, none: 409 (a conflict:
    refused SOP Class, another study, a UID mismatch), 400 if every part was unreadable,
    503 if every refusal was for want of resources (the client should try again)."""
    failures = [o.failure for o in outcomes if o.failure is not None]
    if not failures:
        return 200
    if len(failures) < len(outcomes):
        return 202
    if all(f == 0xA700 for f in failures):
        return 503
    if all(f in _BAD_SYNTAX for f in failures):
        return 400
    return 409


#: failure reasons that say the part could not be read at all
_BAD_SYNTAX = frozenset((STATUS_CANNOT_UNDERSTAND, STATUS_MISSING_ATTRIBUTE, 0xC212, 0xC221))


def response_body(outcomes: list[InstanceOutcome]) -> dict[str, object]:
    """The Store Instances Response in the DICOM JSON model (PS3.18 F.2)."""
    body: dict[str, object] = {}
    failed = [o for o in outcomes if o.failure is not None]
    stored = [o for o in outcomes if o.failure is None]
    if failed:
        body[FAILED_SOP_SEQUENCE] = _sequence(
            {**_refs(o), FAILURE_REASON: {"vr": "US", "Value": [o.failure]}} for o in failed
        )
    if stored:
        body[REFERENCED_SOP_SEQUENCE] = _sequence(_refs(o) for o in stored)
    return body


def warnings(outcomes: list[InstanceOutcome], limit: int = 20) -> list[str]:
    """``Warning`` header values (RFC 7234 5.5, as PS3.18 8.6.2 uses them) naming why
    each part was refused, by its number: the texts carry no data set value."""
    out: list[str] = []
    for number, o in enumerate(outcomes, 1):
        if o.failure is not None and len(out) < limit:
            text = o.reason.replace('"', "'").replace("\\", "/")
            text = text.encode("latin-1", "replace").decode("latin-1")
            out.append(f'299 cds "part {number}: {o.failure:04X} {text}"')
    return out


def _refs(o: InstanceOutcome) -> dict[str, object]:
    refs: dict[str, object] = {}
    refs[REFERENCED_SOP_CLASS_UID] = _ui(o.sop_class_uid)
    refs[REFERENCED_SOP_INSTANCE_UID] = _ui(o.sop_uid)
    return refs


def _ui(value: str) -> dict[str, object]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _sequence(items: Iterable[dict[str, object]]) -> dict[str, object]:
    return {"vr": "SQ", "Value": list(items)}
