"""The node announces an urgent finding to the configured RIS (issue 5, optional
notification), and sends nothing when no pipeline asks for it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cds.domain import StudyState
from cds.orchestrator import Node

from ..test_pipeline import send_files, settings_with_routing, wait_state
from .test_notify import Ris

ROUTING = """
notifications:
  worklist: {{url: "{url}", format: fhir-r4}}
pipelines:
  bone: {{model: cds-ref-ct-bone, results: [SR]{notify}}}
rules:
  - name: CT
    match: [{{attribute: Modality, equals: CT}}]
    pipelines: [bone]
"""


def run(tmp_path: Path, corpus: Path, notify: str) -> tuple[Node, Ris]:
    ris = Ris()
    routing = ROUTING.format(url=ris.url, notify=notify)
    node = Node(settings_with_routing(tmp_path, routing))
    node.start()
    files = sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]
    send_files(node, files)
    wait_state(node, {StudyState.DONE, StudyState.FAILED})
    return node, ris


def test_urgent_finding_reaches_the_worklist(tmp_path: Path, corpus: Path) -> None:
    node, ris = run(tmp_path, corpus, ", notify: {target: worklist, findings: [any]}")
    try:
        deadline = time.monotonic() + 20
        while not ris.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        (req,) = ris.requests
        report = json.loads(req["body"])
        assert report["resourceType"] == "DiagnosticReport"
        assert report["status"] == "preliminary"
        (study,) = node.store.list_studies()
        assert study.study_uid in json.dumps(report["imagingStudy"])

        # the history line is written once the worklist has answered: wait for it
        def kinds() -> list[str]:
            return [e.kind for e in node.store.get_study(study.study_key).events]  # type: ignore[union-attr]

        deadline = time.monotonic() + 10
        while "notified" not in kinds() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "notified" in kinds()
    finally:
        node.stop()
        ris.close()


def test_nothing_is_sent_when_no_pipeline_notifies(tmp_path: Path, corpus: Path) -> None:
    node, ris = run(tmp_path, corpus, "")
    try:
        time.sleep(1.0)
        assert ris.requests == []
    finally:
        node.stop()
        ris.close()
