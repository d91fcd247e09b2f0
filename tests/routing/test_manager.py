"""The routing watcher: a failed reload never stops it (issue 14, found by CI's warnings)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from cds.audit.events import AuditEvent
from cds.routing.manager import RoutingManager

RULES = """
destinations: {pacs: {ae_title: PACS, host: 127.0.0.1, port: 4242}}
pipelines: {p: {model: m, results: [SR], destinations: [pacs]}}
rules: [{name: NAME, pipelines: [p], match: [{attribute: Modality, equals: CT}]}]
"""


class FlakyAudit:
    """An audit trail whose folder vanished once: the first record raises."""

    def __init__(self) -> None:
        self.calls = 0
        self.raised = threading.Event()
        self.recorded = threading.Event()

    def record(self, event: AuditEvent, **_: Any) -> None:
        self.calls += 1
        if self.calls == 2:
            self.raised.set()
            raise FileNotFoundError("audit folder gone")
        if self.calls >= 3:
            self.recorded.set()


def test_watcher_survives_a_failed_reload(tmp_path: Path) -> None:
    f = tmp_path / "routing.yaml"
    f.write_text(RULES.replace("NAME", "first"))
    audit = FlakyAudit()
    mgr = RoutingManager(f, [], tmp_path / "disabled.json", 0.02, audit=audit)  # type: ignore[arg-type]
    mgr.start()
    try:
        assert mgr.rules.rules[0].name == "first"
        f.write_text(RULES.replace("NAME", "second") + "\n")  # this reload's audit raises
        assert audit.raised.wait(5)
        f.write_text(RULES.replace("NAME", "third") + "\n\n")  # the next must still happen
        assert audit.recorded.wait(5), "the watcher died after the failed reload"
        assert mgr.running
    finally:
        mgr.stop()
