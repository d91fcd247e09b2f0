"""HL7 v2.5.1 ORU^R01 over MLLP: an urgent finding announced to a RIS (``format: hl7v2``).

The message (built with hl7apy, validated against the 2.5.1 ORU^R01 structure before
it is queued):

- ``MSH``: sending application ``cds``, receiving application and facility from the
  target, MSH-10 the notification's deterministic id (the same finding sent again has
  the same control ID, so the RIS can recognise a repeat), MSH-18 ``UNICODE UTF-8``.
- no ``PID``: no patient identifier leaves the node, as with the FHIR report; the RIS
  maps the Study Instance UID, in an OBX coded DCM 113014 "Study Instance UID" (not in
  OBR-3: 2.5.1's EI holds 16 characters, a UID up to 64).
- ``OBR``: LOINC 18748-4 "Diagnostic imaging study", result status ``P``
  (preliminary: an AI suggestion, not a report), and the priority, ``S`` (STAT) or
  ``A`` (ASAP), in OBR-5 and in OBR-27's priority component.
- ``OBX`` per finding: OBX-3 the model's code (code, meaning, coding scheme), OBX-5 its
  score (NM), OBX-8 ``A`` (abnormal), OBX-11 ``P``; then the model, its version and
  SHA-256 (DCM 111001 "Algorithm Name", DCM 111003 "Algorithm Version", 99CDS), and the
  advisory text (TX: an AI suggestion to be reviewed by a radiologist, naming the model;
  one OBX per line of at most 199 characters, the same code, as long texts are sent).

Sending: one message per connection (plain TCP, or TLS as a DIMSE destination's
``tls``), framed ``<VT> message <FS><CR>``; the RIS must answer an ACK for this control
ID: AA (or CA) is sent; AE, AR, another control ID, or nothing within ``timeout_s``
raises ``Hl7Error`` (tried again, then dead). The ACK's text is not kept: a RIS may
quote the message in it.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

from cds.destinations import Hl7v2Target

if TYPE_CHECKING:  # the inference stack (onnxruntime) is not needed to send
    from cds.findings import Finding, InferenceResult

VERSION = "2.5.1"
START, END = b"\x0b", b"\x1c\r"
#: an ACK longer than this is not an ACK
MAX_ACK_BYTES = 1 << 20
#: MSH-10 is an ST of at most 20 characters in 2.5.1
CONTROL_ID_LENGTH = 20
_PRIORITY = {"stat": "S", "asap": "A"}
STUDY_UID_CODE = "113014^Study Instance UID^DCM"
MODEL_CODES = (
    "111001^Algorithm Name^DCM",
    "111003^Algorithm Version^DCM",
    "sha256^Model SHA-256^99CDS",
)
ADVISORY_CODE = "18782-3^Radiology Study observation (narrative)^LN"


class Hl7Error(Exception):
    """The RIS did not accept the message (``detail`` says how, never with its text)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- the message ---------------------------------------------------------------
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def escape(text: str) -> str:
    """``text`` as one HL7 value: separators escaped, line breaks as ``\\.br\\``."""
    for raw, esc in _ESCAPES:
        text = text.replace(raw, esc)
    return text.replace("\r\n", "\\.br\\").replace("\n", "\\.br\\").replace("\r", "\\.br\\")


def unescape(text: str) -> str:
    """The text an escaped HL7 value stands for (``escape`` undone)."""
    out = text.replace("\\.br\\", "\n")
    for raw, esc in reversed(_ESCAPES):
        out = out.replace(esc, raw)
    return out


def _check_control_id(control_id: str) -> None:
    if not (0 < len(control_id) <= CONTROL_ID_LENGTH) or not all(
        c.isascii() and (c.isalnum() or c in ".-") for c in control_id
    ):
        raise ValueError("an HL7 control ID is 1 to 20 letters, digits, '.' or '-'")


def _coded(code: str, meaning: str, scheme: str) -> str:
    return f"{escape(code)}^{escape(meaning)}^{escape(scheme)}"


def oru_r01(
    control_id: str,
    study_uid: str,
    result: InferenceResult,
    findings: Sequence[Finding],
    *,
    target: Hl7v2Target,
    conclusion: str,
    issued: float,
) -> str:
    """The ORU^R01 (ER7, segments ended by CR) announcing ``findings`` on a study.

    ``conclusion`` is the advisory text (the FHIR report's, in the node's language).
    ValueError for a control ID that is not 1 to 20 characters of [0-9A-Za-z.-]."""
    _check_control_id(control_id)
    when = datetime.fromtimestamp(issued, UTC).strftime("%Y%m%d%H%M%S+0000")
    rec = result.record
    m = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    msh = m.msh
    msh.msh_3 = "cds"
    if target.receiving_application:
        msh.msh_5 = target.receiving_application
    if target.receiving_facility:
        msh.msh_6 = target.receiving_facility
    msh.msh_7 = when
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = control_id
    msh.msh_11 = "P"
    msh.msh_12 = VERSION
    msh.msh_18 = "UNICODE UTF-8"
    order = m.add_group("ORU_R01_PATIENT_RESULT").add_group("ORU_R01_ORDER_OBSERVATION")
    obr = order.add_segment("OBR")
    priority = _PRIORITY[target.priority]
    obr.obr_1 = "1"
    obr.obr_4 = "18748-4^Diagnostic imaging study^LN"
    obr.obr_5 = priority
    obr.obr_7 = when
    obr.obr_22 = when
    obr.obr_24 = "RAD"
    obr.obr_25 = "P"
    obr.obr_27 = f"^^^^^{priority}"
    observations: list[tuple[str, str, str, str, str]] = [
        ("ST", STUDY_UID_CODE, "", escape(study_uid), "")
    ]
    for n, f in enumerate(findings, start=1):
        c = f.label.code
        coded = _coded(c.value, c.meaning, c.scheme)
        observations.append(("NM", coded, str(n), f"{f.score:.4g}", "A"))
    for code, value in zip(MODEL_CODES, (rec.model, rec.version, rec.sha256), strict=True):
        observations.append(("ST", code, "", escape(value), ""))
    for line in lines(conclusion):  # hl7apy holds OBX-5 to 199 characters: one per line
        observations.append(("TX", ADVISORY_CODE, "", line, ""))
    for i, (kind, code, sub_id, value, flag) in enumerate(observations, start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
        obx.obx_1 = str(i)
        obx.obx_2 = kind
        obx.obx_3 = code
        if sub_id:
            obx.obx_4 = sub_id
        obx.obx_5 = value
        if flag:
            obx.obx_8 = flag
        obx.obx_11 = "P"
        obx.obx_14 = when
    m.validate()  # hl7apy raises on a message that is not a valid 2.5.1 ORU^R01
    return str(m.to_er7())


def withdrawn_oru(message: str, control_id: str, issued: float) -> str:
    """The retraction of a sent ORU^R01 (``message``): the same message with result
    status ``W`` (withdrawn, HL7 2.5.1 tables 0123 and 0085) in OBR-25 and in every
    OBX-11, a new MSH-10 ``control_id`` (an ACK must tell the two apart) and MSH-7
    ``issued``; validated against the 2.5.1 ORU^R01 structure, as the original was.
    ValueError for something that is not an ORU^R01 or a bad control ID."""
    _check_control_id(control_id)
    when = datetime.fromtimestamp(issued, UTC).strftime("%Y%m%d%H%M%S+0000")
    out = []
    for seg in message.replace("\n", "\r").split("\r"):
        if not seg:
            continue
        fields = seg.split("|")
        if fields[0] == "MSH" and len(fields) > 9:
            fields[6], fields[9] = when, control_id  # MSH-7, MSH-10 (MSH-1 is the "|")
        elif fields[0] == "OBR":
            fields.extend([""] * (26 - len(fields)))
            fields[25] = "W"
        elif fields[0] == "OBX":
            fields.extend([""] * (12 - len(fields)))
            fields[11] = "W"
        out.append("|".join(fields))
    if not out or not out[0].startswith("MSH|") or "ORU^R01" not in out[0]:
        raise ValueError("not an HL7 ORU^R01 message")
    er7 = "\r".join(out)
    try:
        parsed = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        parsed.validate()
    except Exception as exc:  # hl7apy's errors name the segment, never a value of ours
        raise ValueError(f"the withdrawn ORU is not valid 2.5.1 ({type(exc).__name__})") from None
    return er7


def lines(text: str, width: int = 199) -> list[str]:
    """``text`` escaped, cut between words into values of at most ``width`` characters
    (a word longer than that is cut where it must)."""
    out: list[str] = []
    line = ""
    for word in text.split(" "):
        piece = escape(word)
        while len(piece) > width:  # rare: a word longer than a line
            head = piece[:width]
            cut = head.rindex("\\") if head.count("\\") % 2 else width  # not in an escape
            out.extend([line] if line else [])
            line = ""
            out.append(piece[:cut])
            piece = piece[cut:]
        joined = f"{line} {piece}" if line else piece
        if len(joined) > width:
            out.append(line)
            joined = piece
        line = joined
    return [*out, line] if line else out


def control_id_of(message: str) -> str:
    """MSH-10 of an ER7 message (ValueError if it has no MSH)."""
    fields = _segment(message, "MSH")
    if fields is None or len(fields) < 11:
        raise ValueError("not an HL7 message: no MSH-10")
    return fields[10]  # fields[n] is MSH-n (MSH-1: the field separator)


def _segment(message: str, name: str) -> list[str] | None:
    """The fields of the first ``name`` segment (MSH: MSH-1 is the separator)."""
    if not message.startswith("MSH") or len(message) < 8:
        return None
    sep = message[3]
    for seg in message.replace("\n", "\r").split("\r"):
        if seg.startswith(name + sep):
            parts = seg.split(sep)
            return [parts[0], sep, *parts[1:]] if name == "MSH" else parts
    return None


# --- MLLP ------------------------------------------------------------------------
def _context(target: Hl7v2Target) -> ssl.SSLContext:
    tls = target.tls
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
        )
        if tls.cert_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise Hl7Error(f"cannot read the TLS files ({why})") from None
    return ctx


def send_mllp(target: Hl7v2Target, message: str) -> str:
    """Send ``message`` to the RIS and read its ACK: ``"ACK AA"`` when accepted,
    Hl7Error otherwise (not reached, refused, no ACK in time, or an ACK for another
    message)."""
    control_id = control_id_of(message)
    frame = START + message.encode("utf-8") + END
    try:
        with socket.create_connection((target.host, target.port), target.timeout_s) as raw:
            raw.settimeout(target.timeout_s)
            if target.tls.enabled:
                with _context(target).wrap_socket(raw, server_hostname=target.host) as sock:
                    return _exchange(sock, frame, control_id, target.timeout_s)
            return _exchange(raw, frame, control_id, target.timeout_s)
    except Hl7Error:
        raise
    except ssl.SSLError as exc:
        raise Hl7Error(f"TLS: {exc.reason or type(exc).__name__}") from None
    except TimeoutError:
        raise Hl7Error(f"no ACK within {target.timeout_s:g} s") from None
    except OSError as exc:
        why = (exc.strerror or type(exc).__name__).lower()
        raise Hl7Error(f"not reached ({why})") from None


def _exchange(sock: socket.socket, frame: bytes, control_id: str, timeout_s: float) -> str:
    sock.sendall(frame)
    got = b""
    while END not in got:
        chunk = sock.recv(65536)
        if not chunk:
            raise Hl7Error("the RIS closed the connection without an ACK")
        got += chunk
        if len(got) > MAX_ACK_BYTES:
            raise Hl7Error("the RIS answered more than an ACK")
    start = got.find(START)
    ack = got[start + 1 if start >= 0 else 0 : got.find(END)].decode("utf-8", "replace")
    code, acked = read_ack(ack)
    if acked != control_id:
        raise Hl7Error(f"ACK {code} for another message (MSA-2 is not our control ID)")
    if code not in ("AA", "CA"):
        raise Hl7Error(f"ACK {code}")
    return f"ACK {code}"


def read_ack(ack: str) -> tuple[str, str]:
    """(MSA-1 acknowledgment code, MSA-2 control ID) of an ACK; Hl7Error if it has none."""
    msa = _segment(ack, "MSA")
    if msa is None or len(msa) < 3:
        raise Hl7Error("the RIS answered something that is not an ACK (no MSA segment)")
    code = msa[1].strip().upper()
    if code not in ("AA", "AE", "AR", "CA", "CE", "CR"):
        raise Hl7Error("the RIS answered an unknown acknowledgment code")
    component = ack[4] if len(ack) > 4 else "^"  # MSH-2's first character
    return code, msa[2].split(component)[0].strip()
