"""Issue 7 (audit): the trail is append-only and tamper-evident.

The hash chain catches an edited, deleted or moved record, the signed head a
truncated tail; a line torn by a crash is reported, and closed (and said so)
by the next writer. Threads and a second process write one valid chain.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cds.audit import AuditEvent, AuditOutcome, AuditTrail
from cds.audit.trail import HEAD_NAME, LOG_NAME, read_records
from cds.audit.verify import verify


def _fill(path: Path, n: int = 5) -> AuditTrail:
    trail = AuditTrail(path)
    for i in range(n):
        trail.record(
            AuditEvent.INSTANCES_RECEIVED,
            who="AE:PACS",
            where="10.0.0.7",
            study_key=f"study{i}",
            detail={"instances": i + 1},
        )
    return trail


def _lines(path: Path) -> list[bytes]:
    return (path / LOG_NAME).read_bytes().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> None:
    (path / LOG_NAME).write_bytes(b"".join(lines))


def test_intact_chain_verifies_and_survives_reopen(tmp_path: Path) -> None:
    _fill(tmp_path, 3).close()
    trail = AuditTrail(tmp_path)  # a restart continues the chain
    rec = trail.record(AuditEvent.PURGE, who="system", outcome=AuditOutcome.SUCCESS)
    assert rec.seq == 4
    v = verify(tmp_path)
    assert v.ok, v
    assert (v.records, v.last_seq) == (4, 4)
    seqs = [r.seq for r in read_records(tmp_path)]
    assert seqs == [1, 2, 3, 4]
    assert (tmp_path / LOG_NAME).stat().st_mode & 0o077 == 0  # not readable by others


def test_edit_is_detected(tmp_path: Path) -> None:
    _fill(tmp_path).close()
    lines = _lines(tmp_path)
    lines[2] = lines[2].replace(b'"who":"AE:PACS"', b'"who":"AE:OTHER"')
    _write(tmp_path, lines)
    v = verify(tmp_path)
    assert not v.ok
    assert v.bad_seq == 3
    assert "altered" in v.reason


def test_edit_with_recomputed_hash_breaks_the_chain(tmp_path: Path) -> None:
    """An editor who recomputes the edited record's hash still breaks the next link."""
    from cds.audit.trail import canonical, digest

    _fill(tmp_path).close()
    lines = _lines(tmp_path)
    obj = json.loads(lines[1])
    obj["detail"] = {"instances": 999}
    del obj["hash"]
    obj["hash"] = digest(obj)
    lines[1] = canonical(obj) + b"\n"
    _write(tmp_path, lines)
    v = verify(tmp_path)
    assert not v.ok
    assert v.bad_seq == 3
    assert "chain broken" in v.reason


def test_deletion_is_detected(tmp_path: Path) -> None:
    _fill(tmp_path).close()
    lines = _lines(tmp_path)
    del lines[1]
    _write(tmp_path, lines)
    v = verify(tmp_path)
    assert not v.ok
    assert v.bad_seq == 2
    assert "missing" in v.reason


def test_reordering_is_detected(tmp_path: Path) -> None:
    _fill(tmp_path).close()
    lines = _lines(tmp_path)
    lines[1], lines[2] = lines[2], lines[1]
    _write(tmp_path, lines)
    v = verify(tmp_path)
    assert not v.ok
    assert v.bad_seq == 2


def test_truncation_is_detected_by_the_head(tmp_path: Path) -> None:
    _fill(tmp_path).close()
    _write(tmp_path, _lines(tmp_path)[:3])
    v = verify(tmp_path)
    assert not v.ok
    assert "truncated" in v.reason
    assert v.bad_seq == 4


def test_forged_head_is_detected(tmp_path: Path) -> None:
    """Truncating and rewriting the head to match needs the head key."""
    _fill(tmp_path).close()
    lines = _lines(tmp_path)[:3]
    _write(tmp_path, lines)
    last = json.loads(lines[-1])
    (tmp_path / HEAD_NAME).write_text(json.dumps({"seq": 3, "hash": last["hash"], "mac": "0" * 64}))
    v = verify(tmp_path)
    assert not v.ok
    assert "HMAC" in v.reason


def test_torn_last_line_is_reported_then_closed_by_the_next_writer(tmp_path: Path) -> None:
    _fill(tmp_path, 2).close()
    with (tmp_path / LOG_NAME).open("ab") as f:
        f.write(b'{"at":17000,"detail":{"instanc')  # a crash in the middle of a write
    v = verify(tmp_path)
    assert not v.ok
    assert "torn" in v.reason
    assert v.line == 3

    trail = AuditTrail(tmp_path)
    rec = trail.record(AuditEvent.APPLICATION_START, who="system")
    trail.close()
    records = list(read_records(tmp_path))
    alert = records[-2]
    assert alert.event is AuditEvent.SECURITY_ALERT
    assert alert.detail["reason"] == "torn_record"
    assert alert.detail["line"] == 3
    assert rec.seq == 4
    assert verify(tmp_path).ok


def test_garbage_line_in_the_middle_is_not_accepted(tmp_path: Path) -> None:
    _fill(tmp_path, 3).close()
    lines = _lines(tmp_path)
    lines.insert(1, b"not a record\n")
    _write(tmp_path, lines)
    v = verify(tmp_path)
    assert not v.ok
    assert v.line == 2


def test_threads_write_one_valid_chain(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path)

    def work(n: int) -> None:
        for i in range(25):
            trail.record(AuditEvent.QUERY, who=f"user:t{n}", detail={"i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trail.close()
    v = verify(tmp_path)
    assert v.ok, v
    assert v.records == 100


WRITER = """
import sys
from pathlib import Path
from cds.audit import AuditEvent, AuditTrail
t = AuditTrail(Path(sys.argv[1]))
for i in range(int(sys.argv[2])):
    t.record(AuditEvent.EXPORT, who="user:cli", detail={"i": i})
"""


def test_second_process_and_threads_keep_a_valid_chain(tmp_path: Path) -> None:
    """The CLI records while the node runs: both continue one chain."""
    trail = AuditTrail(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "60"])
    threads = [
        threading.Thread(
            target=lambda: [trail.record(AuditEvent.QUERY, who="system") for _ in range(30)]
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proc.wait(timeout=60) == 0
    trail.record(AuditEvent.APPLICATION_STOP, who="system")
    trail.close()
    v = verify(tmp_path)
    assert v.ok, v
    assert v.records == 60 + 60 + 1
    whos = {r.who for r in read_records(tmp_path)}
    assert whos == {"system", "user:cli"}


def test_empty_trail_verifies(tmp_path: Path) -> None:
    assert verify(tmp_path / "none").ok


@pytest.mark.parametrize("bad_detail", [{"path": Path("/x")}, {"t": (1, 2)}])
def test_non_json_details_still_verify(tmp_path: Path, bad_detail: dict[str, object]) -> None:
    trail = AuditTrail(tmp_path)
    trail.record(AuditEvent.EXPORT, who="system", detail=bad_detail)
    trail.close()
    assert verify(tmp_path).ok
