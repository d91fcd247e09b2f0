"""The cds exception hierarchy: one base, one subclass per stage.

Messages name the field, file or DICOM tag at fault. Bad arguments to our own
functions still raise the built-ins (ValueError, TypeError).

``safe_message`` is the one way an exception's text reaches anything stored or
shown (a job's error, a study's history, process.json, a log line, an HTTP answer,
a DIMSE Error Comment): pydicom, highdicom, numpy and onnxruntime quote the values
they refuse, a patient's name or birth date among them.
"""

from __future__ import annotations

import enum
import re


class CdsError(Exception):
    """Base of every error cds raises on purpose."""


class ConfigError(CdsError):
    """The configuration is invalid; ``errors`` lists every problem as 'path: message'."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}:\n  " + "\n  ".join(errors))


class IngestError(CdsError):
    """An incoming instance cannot be accepted.

    ``status`` is the DIMSE status the C-STORE SCP answers with and the message
    becomes its Error Comment, so it must name the problem and carry no patient data.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class StoreError(CdsError):
    """The state store cannot be reached or refused an operation."""


class RoutingError(CdsError):
    """A routing rule or routing file is invalid."""


class ModelError(CdsError):
    """A model package is invalid or failed to run."""


class EncodingError(CdsError):
    """A result object could not be built as valid DICOM."""


class DeliveryError(CdsError):
    """A result could not be sent to its destination."""


class Refusal(enum.StrEnum):
    """Why an operation is refused, in the operation's terms (the HTTP API maps each
    to its status in ``cds.api``; the CLI prints the message and exits 1)."""

    NOT_FOUND = "not_found"  # no such job, study, delivery or finding
    CONFLICT = "conflict"  # not allowed in its current state
    INVALID = "invalid"  # the request itself is wrong
    UNAVAILABLE = "unavailable"  # the node is stopping


class AdminError(CdsError):
    """An admin operation (retry, re-run, cancel, purge) is refused, and why."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        self.refusal = refusal
        super().__init__(message)


class FeedbackError(CdsError):
    """Feedback refused (unknown finding, invalid correction), and why."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        self.refusal = refusal
        super().__init__(message)


# --- what of an exception may be stored or shown -----------------------------------

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_TAG = re.compile(r"\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]+")
#: "VR DA", "VR of DA", "to 'DA' object": where a library names the VR it refused
_VR = re.compile(r"\bVR(?:\s+of)?\s*['\"]?([A-Z]{2})\b|['\"]([A-Z]{2})['\"]\s+object")
#: a few words a message may say, first match wins; the message itself is never kept
_GENERIC = tuple(
    (re.compile(pattern, re.IGNORECASE), words)
    for pattern, words in (
        (r"exceed|too long|maximum (allowed )?length", "value too long"),
        (r"timed out|timeout", "timed out"),
        (r"abort|connection|association|refused|reset by peer", "connection lost or refused"),
        (r"out of memory|unable to allocate|bad_alloc|cannot allocate", "out of memory"),
        (r"invalid dimension|shape|broadcast", "array shape does not fit"),
        (r"pixel data|transfer syntax|decompress|decod", "pixel data cannot be decoded"),
        (
            r"unable to convert|could not convert|invalid|not valid|malformed|must be",
            "invalid value",
        ),
        (r"missing|required|not found|no such|not present", "missing value"),
    )
)
_MAX_ATTRIBUTES = 4
_MAX_CHAIN = 8


def safe_message(exc: BaseException) -> str:
    """What may be stored or shown of ``exc``: never a data value.

    cds' own errors (``CdsError``) are written to name the field, file or tag at fault
    and keep their words, but the text of a library's exception they quote (their
    cause, ``raise ... from exc``) is replaced by its description (``describe``). Any
    other exception is described. Quoted strings left are masked, last.
    """
    if not isinstance(exc, CdsError):
        return describe(exc)
    text = str(exc)
    for inner in _chain(exc):
        raw = str(inner)
        if not isinstance(inner, CdsError) and raw and raw in text:
            text = text.replace(raw, describe(inner))
    return _QUOTED.sub("'…'", text).strip() or type(exc).__name__


def error_text(exc: BaseException) -> str:
    """``safe_message`` after the exception's type, e.g. ``EncodingError: SR ...``."""
    if not isinstance(exc, CdsError):
        return describe(exc)
    return f"{type(exc).__name__}: {safe_message(exc)}"


def describe(exc: BaseException) -> str:
    """A library's exception without its text: its type, a generic reason, and the VR
    and the attributes (tag and keyword) its message names, where it names them, e.g.
    ``ValueError: invalid value for VR DA in (0010,0030) PatientBirthDate``."""
    text = str(exc)
    reason = next((words for pattern, words in _GENERIC if pattern.search(text)), "")
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror  # the system's words (a file name is left out)
    elif not reason and isinstance(exc, KeyError | AttributeError):
        reason = "missing attribute"
    found = _VR.search(text)
    vr = (found.group(1) or found.group(2)) if found else ""
    out = f"{type(exc).__name__}: {reason or 'details withheld (they may quote data values)'}"
    if vr and _is_vr(vr):
        out += f" for VR {vr}"
    named = attributes_named(text)
    if named:
        out += f" in {', '.join(named)}"
    return out


def attributes_named(text: str) -> list[str]:
    """The DICOM attributes a message names, as "(gggg,eeee) Keyword": by tag, or by
    keyword (a quoted string only when it is exactly a keyword, as it may be a value)."""
    from pydicom.datadict import keyword_for_tag, tag_for_keyword  # noqa: PLC0415 (light module)

    tags: dict[int, None] = {}
    for group, elem in _TAG.findall(text):
        tags[int(group + elem, 16)] = None
    for quoted in _QUOTED.findall(text):
        tag = tag_for_keyword(quoted[1:-1])
        if tag is not None:
            tags[tag] = None
    for word in _WORD.findall(_QUOTED.sub(" ", text)):
        tag = tag_for_keyword(word) if len(word) > 3 and word[0].isupper() else None
        if tag is not None:
            tags[tag] = None
    return [
        f"({t >> 16:04X},{t & 0xFFFF:04X}) {keyword_for_tag(t)}".rstrip()
        for t in list(tags)[:_MAX_ATTRIBUTES]
    ]


def _is_vr(text: str) -> bool:
    from pydicom.valuerep import VR  # noqa: PLC0415 (light module)

    return text in VR.__members__


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``'s causes and contexts, nearest first, without cycles."""
    out: list[BaseException] = []
    seen = {id(exc)}
    current = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen and len(out) < _MAX_CHAIN:
        out.append(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return out
