"""Issue 7 (audit): ``cds audit`` lists records by time, event, study and actor, the
last --limit of them; ``cds audit verify`` exits non-zero naming the first bad seq;
``cds audit export`` writes DICOM audit messages (and is itself audited)."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from cds.audit import AuditEvent, AuditTrail
from cds.audit.trail import LOG_NAME, read_records
from cds.cli import app as cli_app

DAY = 86_400.0


def _trail(home: Path) -> Path:
    path = home / "audit"
    trail = AuditTrail(path)
    for i, (event, who) in enumerate(
        [
            (AuditEvent.INSTANCES_RECEIVED, "AE:PACS"),
            (AuditEvent.RESULTS_PRODUCED, "system"),
            (AuditEvent.FEEDBACK_GIVEN, "user:anna"),
            (AuditEvent.PURGE, "user:root"),
        ]
    ):
        trail.record(event, who=who, study_key="k1" if i < 3 else "k2")
    trail.close()
    return path


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli_app, ["audit", *args])
    return r.exit_code, r.output


def test_query_filters_and_limit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _trail(home)
    code, out = run("--home", str(home), "--json")
    assert code == 0, out
    assert [x["seq"] for x in json.loads(out)] == [1, 2, 3, 4]
    code, out = run("--home", str(home), "--json", "--limit", "2")
    assert [x["seq"] for x in json.loads(out)] == [3, 4]
    code, out = run("--home", str(home), "--json", "--who", "user:")
    assert [x["who"] for x in json.loads(out)] == ["user:anna", "user:root"]
    code, out = run("--home", str(home), "--json", "--study", "k2")
    assert [x["event"] for x in json.loads(out)] == ["purge"]
    code, out = run("--home", str(home), "--json", "--since", "2000-01-01", "--until", "2001-01-01")
    assert json.loads(out) == []
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + DAY))
    code, out = run("--home", str(home), "--until", tomorrow)
    assert code == 0
    assert "feedback_given" in out
    assert "user:anna" in out
    code, out = run("--home", str(home), "--since", "yesterday")
    assert code == 2
    assert "--since" in out


def test_verify_exit_codes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = _trail(home)
    assert run("verify", "--home", str(home))[0] == 0
    lines = (path / LOG_NAME).read_bytes().splitlines(keepends=True)
    (path / LOG_NAME).write_bytes(b"".join(lines[:2]))  # the last two cut off
    code, out = run("verify", "--home", str(home))
    assert code == 1
    assert "seq 3" in out
    assert "truncated" in out


def test_export_writes_audit_messages_and_is_audited(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = _trail(home)
    out = tmp_path / "audit.xml"
    code, text = run("export", "--home", str(home), "--out", str(out), "--event", "purge")
    assert code == 0, text
    root = ET.fromstring(out.read_bytes())  # noqa: S314 - our own output
    assert root.tag == "AuditMessages"
    assert [m.tag for m in root] == ["AuditMessage"]
    last = list(read_records(path))[-1]
    assert last.event is AuditEvent.EXPORT
    assert last.who.startswith("user:")
    assert last.detail["records"] == 1
