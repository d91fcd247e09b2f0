"""STOW-RS client: send a batch of result files to a DICOMweb destination in one request.

Each file goes as it is on disk (its PS3.10 bytes, one ``application/dicom`` part of a
``multipart/related`` body, PS3.18 10.5), to ``<url>/studies``. The answer is read per
instance, as ``scu.store_batch`` reads C-STORE statuses: 200 is every one stored; on
202, 400 or 409 the Store Instances Response says which were refused
(FailedSOPSequence, with their FailureReason) and which were stored
(ReferencedSOPSequence); any other answer, or none, fails the whole batch, with the
HTTP status or the network error as its reason. A failure is not permanent: the worker
retries it with backoff, as it does a C-STORE failure.

httpx, not dicomweb-client: the files must go byte for byte as they were written (the
latter re-encodes pydicom data sets), its own retries would hide failures from the
outbox, and the refusals need the response body of a 409, which it raises away.

The bearer token or password is read from its file for each request and only ever put
in the ``Authorization`` header: never in a log line, an outcome or the audit trail.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterable, Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
from pydicom import dcmread

from cds import __version__
from cds.delivery.scu import Outcome
from cds.destinations import DicomWebDestination
from cds.errors import describe as describe_error

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
# Store Instances Response Module (PS3.18 10.5.3)
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
#: answers that carry a Store Instances Response to read per instance
_PER_INSTANCE = (200, 202, 400, 409)


def encode_multipart(parts: Iterable[bytes], boundary: str | None = None) -> tuple[bytes, str]:
    """(body, Content-Type) of a ``multipart/related; type="application/dicom"`` request."""
    boundary = boundary or f"cds-{secrets.token_hex(16)}"
    delimiter = f"--{boundary}".encode("ascii")
    out = BytesIO()
    for part in parts:
        out.write(delimiter + b"\r\nContent-Type: " + DICOM.encode() + b"\r\n\r\n")
        out.write(part)
        out.write(b"\r\n")
    out.write(delimiter + b"--\r\n")
    return out.getvalue(), f'multipart/related; type="{DICOM}"; boundary={boundary}'


def read_response(body: Mapping[str, Any]) -> tuple[dict[str, int], set[str]]:
    """({SOP Instance UID: FailureReason} refused, {SOP Instance UID} stored) of a Store
    Instances Response in the DICOM JSON model (PS3.18 F.2). Tolerant: an item it cannot
    read is left out (and its instance then counts as not acknowledged)."""
    failed: dict[str, int] = {}
    for item in _items(body, FAILED_SOP_SEQUENCE):
        uid = _first(item, REFERENCED_SOP_INSTANCE_UID)
        reason = _first(item, FAILURE_REASON)
        if isinstance(uid, str):
            failed[uid] = reason if isinstance(reason, int) else 0x0110  # processing failure
    stored = {
        uid
        for item in _items(body, REFERENCED_SOP_SEQUENCE)
        if isinstance(uid := _first(item, REFERENCED_SOP_INSTANCE_UID), str)
    }
    return failed, stored


def _items(body: Mapping[str, Any], tag: str) -> list[Mapping[str, Any]]:
    element = body.get(tag)
    value = element.get("Value") if isinstance(element, Mapping) else None
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _first(item: Mapping[str, Any], tag: str) -> object:
    element = item.get(tag)
    value = element.get("Value") if isinstance(element, Mapping) else None
    return value[0] if isinstance(value, list) and value else None


def _read(files: Sequence[Path], outcomes: list[Outcome | None]) -> list[tuple[int, str, bytes]]:
    """(index, SOP Instance UID, bytes) of each readable file; the others fail alone."""
    out = []
    for i, f in enumerate(files):
        try:
            raw = f.read_bytes()
            ds = dcmread(BytesIO(raw), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            out.append((i, str(ds.SOPInstanceUID), raw))
        except (OSError, ValueError, AttributeError) as exc:
            why = f"result file unreadable: {describe_error(exc)}"
            outcomes[i] = Outcome(False, why, permanent=True)
    return out


def stow_batch(files: Sequence[Path], dest: DicomWebDestination, timeout_s: float) -> list[Outcome]:
    """Send ``files`` to ``dest`` in one STOW-RS request; one Outcome per file, in order.
    Never raises for a network or server problem (that is an outcome)."""
    outcomes: list[Outcome | None] = [None] * len(files)
    parts = _read(files, outcomes)
    if parts:
        for (i, _, _), outcome in zip(parts, _post(parts, dest, timeout_s), strict=True):
            outcomes[i] = outcome
    return [o if o is not None else Outcome(False, "not sent") for o in outcomes]


def _post(
    parts: list[tuple[int, str, bytes]], dest: DicomWebDestination, timeout_s: float
) -> list[Outcome]:
    where = dest.describe()
    try:
        authorization = dest.auth.header() if dest.auth is not None else None
    except OSError as exc:
        return [Outcome(False, f"{where}: cannot read its credentials file ({exc.strerror})")]
    body, content_type = encode_multipart(raw for _, _, raw in parts)
    headers = {
        "Content-Type": content_type,
        "Accept": DICOM_JSON,
        "User-Agent": f"cds/{__version__}",
    }
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        with httpx.Client(verify=dest.tls.context(), timeout=timeout_s) as client:
            answer = client.post(f"{dest.url}/studies", content=body, headers=headers)
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        why = f"{where}: no answer ({type(exc).__name__}: {describe_error(exc)})"
        return [Outcome(False, why)] * len(parts)
    return _outcomes(answer, [uid for _, uid, _ in parts], where)


def _outcomes(answer: httpx.Response, uids: list[str], where: str) -> list[Outcome]:
    status = f"HTTP {answer.status_code}"
    if answer.status_code not in _PER_INSTANCE:
        return [Outcome(False, f"{where} answered {status} {answer.reason_phrase}")] * len(uids)
    try:
        parsed = answer.json() if answer.content else {}
    except ValueError:
        parsed = {}  # an XML or empty answer: the status alone says what happened
    failed, stored = read_response(parsed if isinstance(parsed, Mapping) else {})
    out = []
    for uid in uids:
        if uid in failed:
            out.append(Outcome(False, f"{where} refused it ({status}, FailureReason "
                                      f"{failed[uid]:04X})"))  # fmt: skip
        elif uid in stored or answer.status_code == 200:
            out.append(Outcome(True, f"{status} stored"))
        else:
            out.append(Outcome(False, f"{where} answered {status} without acknowledging it"))
    return out
