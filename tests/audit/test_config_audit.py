"""Issue 7 (audit): a configuration change between two starts is recorded, naming the
sections that changed, never their values."""

from __future__ import annotations

from pathlib import Path

from cds.audit import AuditEvent, AuditTrail
from cds.audit.config import record_config
from cds.audit.trail import read_records

from ..conftest import make_settings


def test_config_changes_between_starts_are_recorded(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    trail = AuditTrail(tmp_path / "audit")
    first = record_config(trail, settings)
    assert record_config(trail, settings) == first  # unchanged: nothing recorded
    retention = settings.retention.model_copy(update={"spool_days": 30.0})
    changed = settings.model_copy(update={"retention": retention})
    assert record_config(trail, changed) != first
    recs = list(read_records(tmp_path / "audit"))
    assert [r.event for r in recs] == [AuditEvent.CONFIG_CHANGED] * 2
    assert recs[0].detail["sections"] == ["(first start)"]
    assert recs[1].detail["sections"] == ["retention"]
    assert "30.0" not in str(recs[1].detail)  # values are never recorded
