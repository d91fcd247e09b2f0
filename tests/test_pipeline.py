"""issue 4: a completed study is routed and its models run; the kill switch skips them;
an invalid routing file is refused and the previous rules stay in force."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path

import pydicom
import pytest

from cds import admin
from cds.audit import AuditEvent
from cds.audit.trail import read_records
from cds.config import Settings
from cds.domain import JobState, StudyState
from cds.errors import ConfigError
from cds.orchestrator import Node
from cds.requestor import PauseSafeAE
from cds.store import open_store
from cds.store.claims import default_node

from .conftest import make_settings

REPO = Path(__file__).resolve().parent.parent
ROUTING = """
destinations:
  pacs: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}
pipelines:
  bone: {model: cds-ref-ct-bone, results: [SEG, SR], destinations: [pacs]}
  blobs: {model: cds-ref-blob-detect, results: [GSPS], destinations: [pacs]}
rules:
  - name: head CT
    match: [{attribute: Modality, equals: CT}]
    exclude: [{attribute: ImageType, equals: LOCALIZER}]
    select: thinnest
    pipelines: [bone, blobs]
"""


def settings_with_routing(tmp_path: Path, routing: str, **routing_over: object) -> Settings:
    f = tmp_path / "routing.yaml"
    f.write_text(routing)
    return make_settings(
        tmp_path / "home",
        inference={"model_dirs": [str(REPO / "models")], "providers": "cpu"},
        routing={"file": str(f), "reload_interval_s": 0.1, **routing_over},
    )


def send_files(node: Node, files: list[Path]) -> None:
    ae = PauseSafeAE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    host, port = node.listener.address
    assoc = ae.associate(host, port, ae_title="CDS")
    assert assoc.is_established
    for f in files:
        assert assoc.send_c_store(f).Status == 0
    assoc.release()


def wait_state(node: Node, states: set[StudyState], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        studies = node.store.list_studies()
        if studies and studies[0].state in states:
            return
        assert time.monotonic() < deadline, f"study state {studies[0].state if studies else None}"
        time.sleep(0.1)


@pytest.fixture
def ct_files(corpus: Path) -> list[Path]:
    return sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:6]


def test_completed_study_runs_its_routed_models(tmp_path: Path, ct_files: list[Path]) -> None:
    node = Node(settings_with_routing(tmp_path, ROUTING))
    node.start()
    try:
        send_files(node, ct_files)
        wait_state(node, {StudyState.DONE, StudyState.FAILED})
        (s,) = node.store.list_studies()
        assert s.state is StudyState.DONE
        jobs = {j.kind: j for j in node.store.list_jobs(s.study_key)}
        assert set(jobs) == {"bone:cds-ref-ct-bone", "blobs:cds-ref-blob-detect"}
        assert all(j.state is JobState.DONE for j in jobs.values())
        detail = node.store.get_study(s.study_key)
        assert detail is not None
        text = "\n".join(f"{e.kind}: {e.detail}" for e in detail.events)
        assert "routed: rule 'head CT' -> bone (run)" in text
        assert "inferred: cds-ref-ct-bone 1.0.0 sha256 140b2b0c37ed on CPU: 6 images" in text
        assert "Bone structure present" in text
        # issue 5: the pipelines' result objects are kept durably, valid, advisory
        out = node.settings.results_path / s.study_key
        kinds = {p.parent.name: p for p in out.glob("*/*.dcm")}
        assert set(kinds) == {"SEG", "SR", "PR"}, sorted(out.rglob("*"))
        assert "encoded: 2 object(s): SEG AI ADVISORY" in text
        assert "encoded: 1 object(s): PR AI ADVISORY" in text
        for path in kinds.values():
            ds = pydicom.dcmread(path)
            assert str(ds.SeriesDescription).startswith("AI ADVISORY")
            if shutil.which("dciodvfy"):
                res = subprocess.run(
                    ["dciodvfy", str(path)], check=False, capture_output=True, text=True
                )
                errors = [
                    x for x in (res.stdout + res.stderr).splitlines() if x.startswith("Error")
                ]
                assert errors == [], (path, errors)
    finally:
        node.stop()


def test_kill_switch_records_skipped_jobs(tmp_path: Path, ct_files: list[Path]) -> None:
    node = Node(settings_with_routing(tmp_path, ROUTING, disabled_models=["cds-ref-blob-detect"]))
    node.start()
    try:
        node.routing.set_disabled("cds-ref-ct-bone", True)  # as the API does
        send_files(node, ct_files[:2])
        wait_state(node, {StudyState.DONE, StudyState.FAILED})
        jobs = node.store.list_jobs()
        assert {j.state for j in jobs} == {JobState.SKIPPED}
        assert {j.error for j in jobs} == {"skipped: model disabled"}
    finally:
        node.stop()
    # the API's switch survives a restart
    assert "cds-ref-ct-bone" in Node(node.settings).routing.disabled()


def test_invalid_routing_file_refused_at_start(tmp_path: Path) -> None:
    bad = ROUTING.replace("equals: CT", "contains: CT")
    with pytest.raises(ConfigError) as err:
        Node(settings_with_routing(tmp_path, bad)).start()
    assert "rules.0.match.0.contains: unknown field" in str(err.value)
    # nothing the refused start began keeps running (the routing watcher used to, and
    # died later writing to an audit folder that was gone)
    assert "cds-routing" not in {t.name for t in threading.enumerate()}


def test_invalid_routing_change_keeps_previous_rules(tmp_path: Path) -> None:
    node = Node(settings_with_routing(tmp_path, ROUTING))
    node.start()
    try:
        f = tmp_path / "routing.yaml"
        f.write_text(ROUTING.replace("pipelines: [bone, blobs]", "pipelines: [bone, nope]"))
        deadline = time.monotonic() + 5
        while not node.routing.last_errors:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "rules.0.pipelines.1: unknown pipeline 'nope'" in node.routing.last_errors[0]
        assert [r.name for r in node.routing.rules.rules] == ["head CT"]
        assert node.routing.rules.rules[0].pipelines == ["bone", "blobs"]
        f.write_text(ROUTING.replace("name: head CT", "name: any CT"))
        deadline = time.monotonic() + 5
        while node.routing.rules.rules[0].name != "any CT":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert node.routing.last_errors == []
    finally:
        node.stop()


def test_rule_quiet_time_defers_the_run(tmp_path: Path, ct_files: list[Path]) -> None:
    """issue 4: a rule's own quiet time (longer than the node's) delays its pipelines."""
    routing = ROUTING.replace(
        "    select: thinnest\n", "    select: thinnest\n    completeness: {quiet_time_s: 2.5}\n"
    )
    node = Node(settings_with_routing(tmp_path, routing))
    node.start()
    try:
        send_files(node, ct_files[:2])
        sent = time.monotonic()
        wait_state(node, {StudyState.DONE, StudyState.FAILED}, timeout=15)
        assert time.monotonic() - sent >= 2.0
        (s,) = node.store.list_studies()
        detail = node.store.get_study(s.study_key)
        assert detail is not None
        assert any("waiting" in e.detail and "rule quiet time" in e.detail for e in detail.events)
        assert {j.state for j in node.store.list_jobs()} == {JobState.DONE}
    finally:
        node.stop()


def test_restart_resumes_interrupted_studies(tmp_path: Path, ct_files: list[Path]) -> None:
    """issue 2/4: a study completed (or processing) when the node stopped is run at restart;
    jobs that were running are recorded as interrupted."""
    settings = settings_with_routing(tmp_path, ROUTING)
    node = Node(settings)
    node.start()
    try:
        node._consumers.clear()  # the node goes down before the pipelines run
        send_files(node, ct_files[:2])
        wait_state(node, {StudyState.COMPLETE})
        key = node.store.list_studies()[0].study_key
        stale = node.store.create_job(key, "bone:cds-ref-ct-bone")
        node.store.set_job_state(stale.job_id, JobState.RUNNING)
    finally:
        node.stop()
    again = Node(settings)
    again.start()
    try:
        wait_state(again, {StudyState.DONE, StudyState.FAILED})
        jobs = {j.job_id: j for j in again.store.list_jobs()}
        assert jobs[stale.job_id].state is JobState.FAILED
        name = default_node()  # node.name not set: the host name
        assert jobs[stale.job_id].error == f"interrupted: node stopped (node {name})"
        assert {j.claimed_by for j in jobs.values()} == {name}
        assert sum(j.state is JobState.DONE for j in jobs.values()) == 2
    finally:
        again.stop()


def test_required_series_start_before_the_quiet_time(tmp_path: Path, ct_files: list[Path]) -> None:
    """issue 4: a rule whose required series are present runs when the sender's association
    ends, before the study's quiet time; completion does not run it a second time."""
    routing = ROUTING.replace(
        "    select: thinnest\n",
        "    select: thinnest\n"
        "    completeness:\n"
        "      required_series: [[{attribute: Modality, equals: CT}]]\n",
    )
    s = settings_with_routing(tmp_path, routing)
    s = s.model_copy(update={"assembly": s.assembly.model_copy(update={"quiet_time_s": 3.0})})
    node = Node(s)
    node.start()
    try:
        send_files(node, ct_files[:3])
        deadline = time.monotonic() + 2.5
        while len([j for j in node.store.list_jobs() if j.state is JobState.DONE]) < 2:
            assert time.monotonic() < deadline, "no early start"
            time.sleep(0.05)
        assert node.store.list_studies()[0].state is StudyState.RECEIVING
        wait_state(node, {StudyState.DONE, StudyState.FAILED}, timeout=10)
        jobs = node.store.list_jobs()
        assert len(jobs) == 2  # not run again at completion
        detail = node.store.get_study(node.store.list_studies()[0].study_key)
        assert detail is not None
        kinds = [e.kind for e in detail.events]
        assert "early_start" in kinds
        assert kinds.index("early_start") < kinds.index("complete")
    finally:
        node.stop()


class _Crashing:
    """An executor whose work never finishes: the node "crashes" before it does."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, fn: object, /, *args: object, **kwargs: object) -> object:
        self.submitted.append(str(args[-1]) if args else "")
        return None

    def shutdown(self, wait: bool = True) -> None:
        pass


def test_poison_study_goes_to_the_dead_letter(tmp_path: Path, ct_files: list[Path]) -> None:
    """issue 7: a study that takes the node down while processing is run again at restart,
    up to inference.max_job_attempts times; then it is failed with a dead-letter reason
    instead of taking the node down again, until an admin re-runs it."""
    settings = settings_with_routing(tmp_path, ROUTING)
    settings = settings.model_copy(
        update={"inference": settings.inference.model_copy(update={"max_job_attempts": 2})}
    )
    node = Node(settings)
    node.start()
    try:
        node._consumers.clear()
        send_files(node, ct_files[:2])
        wait_state(node, {StudyState.COMPLETE})
        key = node.store.list_studies()[0].study_key
        node.store.set_study_state(key, StudyState.PROCESSING, "routed")  # then: kill -9
    finally:
        node.stop()

    def restart() -> tuple[list[str], StudyState]:
        ex = _Crashing()
        n = Node(settings, executor=ex)  # type: ignore[arg-type]
        n.start()
        n.stop()  # the work handed out never finished: as if the node crashed again
        with closing(open_store(settings)) as store:
            return ex.submitted, store.list_studies()[0].state

    first, state = restart()  # interruption 1: run again
    assert key in first
    assert state is StudyState.PROCESSING
    second, state = restart()  # interruption 2 = the limit: dead letter, not run
    assert key not in second
    assert state is StudyState.FAILED
    third, state = restart()  # stays there across restarts
    assert key not in third
    assert state is StudyState.FAILED
    with closing(open_store(settings)) as store:
        detail = store.get_study(key)
        assert detail is not None
        kinds = [e.kind for e in detail.events]
        assert kinds.count("processing_interrupted") == 2
        (dead,) = [e for e in detail.events if e.kind == "dead_letter"]
        assert "inference.max_job_attempts = 2" in dead.detail
    alerts = [
        r
        for r in read_records(settings.audit_path)
        if r.event is AuditEvent.SECURITY_ALERT and r.study_key == key
    ]
    assert [(r.detail["what"], r.detail["interruptions"]) for r in alerts] == [
        ("poison study sent to the dead letter", 2)
    ]
    with closing(open_store(settings)) as store:
        # an admin re-run resets the count: the re-run crashes once, and runs again
        time.sleep(0.01)
        admin.rerun_study(store, lambda k: None, key)
        store.set_study_state(key, StudyState.PROCESSING, "routed")
    fourth, state = restart()
    assert key in fourth
    assert state is StudyState.PROCESSING
