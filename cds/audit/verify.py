"""Check an audit trail's chain and head: edits, deletions, reordering, truncation.

``verify(path)`` walks the log once and stops at the first fault, naming the
record (seq, or the line where a record cannot be read) and why.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from cds.audit.events import AuditEvent
from cds.audit.trail import (
    GENESIS,
    HEAD_NAME,
    LOG_NAME,
    TORN,
    AuditRecord,
    digest,
    head_mac,
    iter_lines,
    read_key,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    records: int
    last_seq: int
    bad_seq: int | None = None  # the first record at fault (or the one expected there)
    line: int | None = None
    reason: str = ""


def verify(path: Path) -> Verdict:  # noqa: PLR0911 - one return per kind of fault
    """Walk ``<path>/audit.jsonl`` and compare its end with ``audit.head``."""
    seq, last, count = 0, GENESIS, 0
    pending_torn: int | None = None  # line of a torn record, to be owned by the next one
    head_seq = _head_seq(path)
    at_head: str | None = None  # the hash of record head_seq, as the log has it

    def bad(reason: str, line: int, at_seq: int | None = None) -> Verdict:
        return Verdict(False, count, seq, seq + 1 if at_seq is None else at_seq, line, reason)

    for n, raw in iter_lines(path / LOG_NAME):
        if not raw.endswith(b"\n"):
            return bad("torn last record: the write was cut short (crash?)", n)
        try:
            obj = json.loads(raw)
            rec = AuditRecord.from_json(obj)
        except (ValueError, KeyError, TypeError):
            if pending_torn is not None:
                return bad("unreadable record", n)
            pending_torn = n
            continue
        body = rec.body()
        if digest(body) != rec.hash:
            return bad("record altered: its hash does not match its content", n, rec.seq)
        if rec.seq != seq + 1:
            why = "a record is missing" if rec.seq > seq + 1 else "records out of order"
            return bad(f"{why}: seq {rec.seq} follows seq {seq}", n)
        if rec.prev != last:
            return bad("chain broken: prev is not the hash of the record before", n, rec.seq)
        if pending_torn is not None:
            owned = (
                rec.event is AuditEvent.SECURITY_ALERT
                and rec.detail.get("reason") == TORN
                and rec.detail.get("line") == pending_torn
            )
            if not owned:
                return bad("unreadable record (not a crash the writer reported)", pending_torn)
            pending_torn = None
        seq, last, count = rec.seq, rec.hash, count + 1
        if seq == head_seq:
            at_head = last
    if pending_torn is not None:
        return bad("unreadable record", pending_torn)
    return _check_head(path, seq, at_head, count)


def _head_seq(path: Path) -> int | None:
    try:
        return int(json.loads((path / HEAD_NAME).read_text())["seq"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_head(  # noqa: PLR0911 - one return per kind of fault
    path: Path, seq: int, at_head: str | None, count: int
) -> Verdict:
    head_file = path / HEAD_NAME
    if not head_file.exists():
        if seq == 0:
            return Verdict(True, 0, 0)
        return Verdict(False, count, seq, None, None, f"{HEAD_NAME} is missing")
    try:
        head = json.loads(head_file.read_text())
        h_seq, h_hash, mac = int(head["seq"]), str(head["hash"]), str(head["mac"])
    except (OSError, ValueError, KeyError, TypeError):
        return Verdict(False, count, seq, None, None, f"{HEAD_NAME} is unreadable")
    key = read_key(path, create=False)
    if key is None or not hmac.compare_digest(mac, head_mac(key, h_seq, h_hash)):
        return Verdict(False, count, seq, None, None, f"{HEAD_NAME}: bad HMAC (head forged?)")
    if h_seq > seq:
        return Verdict(
            False, count, seq, seq + 1, None,
            f"truncated: the head says seq {h_seq}, the log ends at seq {seq}",
        )  # fmt: skip
    if h_seq > 0 and h_hash != at_head:
        return Verdict(False, count, seq, h_seq, None, f"record {h_seq} differs from the head")
    # h_seq < seq: the head lags after a crash between the log and the head: fine
    return Verdict(True, count, seq)
