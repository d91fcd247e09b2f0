"""issue 16: one result object's failure never discards the others.

A CT study sent over C-STORE to a running node routed to the blob detector (SR and
GSPS, delivered to a PACS); the GSPS encoder fails with a message quoting a data value.
The SR is made and delivered anyway; the job is ``partial``, with the GSPS's reason in
words (no value) in the store, ``/api/jobs``, ``cds jobs``, the review page and
``/metrics``; the admin retries it like a failed job and, the encoder mended, the GSPS
is made and delivered and the SR is not sent twice.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cds import pipeline
from cds.cli import app as cli
from cds.domain import JobState, ObjectOutcome, StudyState
from cds.orchestrator import Node
from cds.results import encode as encode_module

from .admin.helpers import admin_app, wait_for
from .delivery.test_node_delivery import delivered
from .delivery.test_worker import Pacs
from .test_pipeline import send_files, settings_with_routing, wait_state

ROUTING = """
destinations:
  pacs: {{ae_title: PACS, host: 127.0.0.1, port: {port}}}
pipelines:
  blobs: {{model: cds-ref-blob-detect, results: [SR, GSPS], destinations: [pacs]}}
rules:
  - name: CT
    match: [{{attribute: Modality, equals: CT}}]
    pipelines: [blobs]
"""
#: what the broken encoder quotes: it must reach no stored or shown error
QUOTED = "CANARYX^JEANNE"


@pytest.fixture
def pacs() -> Iterator[Pacs]:
    p = Pacs()
    yield p
    p.close()


class BrokenGsps:
    """build_gsps failing the way a library does (quoting the value it refuses), until
    mended."""

    def __init__(self) -> None:
        self.broken = True
        self.real = encode_module.build_gsps

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.broken:
            raise ValueError(f"Invalid value for VR PN: '{QUOTED}' in (0010,0010), {QUOTED}")
        return self.real(*args, **kwargs)


def _jobs(client: TestClient, **query: str) -> list[dict[str, Any]]:
    r = client.get("/api/jobs", params=query)
    assert r.status_code == 200, r.text
    return list(r.json())


def test_i16_a_failed_object_leaves_the_others_made_and_the_job_partial(
    tmp_path: Path, corpus: Path, pacs: Pacs, monkeypatch: pytest.MonkeyPatch
) -> None:
    gsps = BrokenGsps()
    monkeypatch.setattr(encode_module, "build_gsps", gsps)
    settings = settings_with_routing(tmp_path, ROUTING.format(port=pacs.port))
    node = Node(settings)
    node.start()
    with TestClient(admin_app(settings, node)) as client:  # stops the node at exit
        send_files(node, sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3])
        wait_state(node, {StudyState.DONE, StudyState.FAILED}, timeout=60)
        (study,) = node.store.list_studies()
        assert study.state is StudyState.DONE  # a partial job does not fail the study
        (job,) = node.store.list_jobs(study.study_key)
        assert job.state is JobState.PARTIAL
        sr, gsps_outcome = job.objects
        assert sr == ObjectOutcome("SR", made=True)
        assert (gsps_outcome.kind, gsps_outcome.made, gsps_outcome.failed) == ("GSPS", False, True)
        assert (
            gsps_outcome.reason == "ValueError: invalid value for VR PN in (0010,0010) PatientName"
        )
        assert job.error == f"GSPS not made: {gsps_outcome.reason}"

        # the SR was made and delivered all the same
        results = node.store.list_results(study.study_key)
        assert [r.modality for r in results] == ["SR"]
        wait_for(lambda: delivered(node) == [results[0].sop_uid], 30, "the SR delivered")
        assert pacs.received == [results[0].sop_uid]

        # shown: /api/jobs (and by state), cds jobs, the review page, /metrics
        (shown,) = _jobs(client, study_key=study.study_key)
        assert shown["state"] == "partial"
        assert shown["objects"] == [
            {"kind": "SR", "made": True, "failed": False, "reason": ""},
            {"kind": "GSPS", "made": False, "failed": True, "reason": gsps_outcome.reason},
        ]
        assert [j["job_id"] for j in _jobs(client, state="partial")] == [job.job_id]
        listed = CliRunner().invoke(cli, ["jobs", "--home", str(settings.home)])
        assert listed.exit_code == 0, listed.output
        row = next(line for line in listed.output.splitlines() if line.startswith(job.job_id))
        assert re.search(r"\bpartial\b", row)
        assert f"    GSPS not made: {gsps_outcome.reason}" in listed.output.splitlines()
        page = client.get(f"/review/{study.study_key}", params={"lang": "en"})
        assert page.status_code == 200
        assert 'data-job-state="partial"' in page.text
        assert "GSPS not made: ValueError: invalid value for VR PN" in page.text
        metrics = client.get("/metrics").text
        assert 'cds_jobs_by_state{state="partial"} 1.0' in metrics
        assert 'cds_jobs{kind="blobs:cds-ref-blob-detect",state="partial"} 1.0' in metrics

        # nothing quotes the value: not the store, not the API, not the CLI, not the page
        db = sqlite3.connect(settings.home / "state.db").iterdump()
        for where, text in (
            ("state.db", "\n".join(db)),
            ("/api/jobs", json.dumps(_jobs(client))),
            ("/api/studies", client.get(f"/api/studies/{study.study_key}").text),
            ("cds jobs", listed.output),
            ("the review page", page.text),
        ):
            assert "CANARYX" not in text, where

        # the admin retries it like a failed job; mended, the GSPS is made and delivered
        gsps.broken = False
        r = client.post(f"/api/jobs/{job.job_id}/retry")
        assert r.status_code == 202, r.text
        wait_for(
            lambda: (
                [j.state for j in node.store.list_jobs(study.study_key)]
                == [JobState.DONE, JobState.PARTIAL]
            ),
            60,
            "the retried job done",
        )
        again = node.store.list_jobs(study.study_key)[0]
        assert again.objects == (ObjectOutcome("SR", made=True), ObjectOutcome("GSPS", made=True))
        made = {r.modality: r.sop_uid for r in node.store.list_results(study.study_key)}
        assert made["SR"] == results[0].sop_uid  # the same SR: same inputs, same UIDs
        wait_for(lambda: len(delivered(node)) == 2, 30, "the GSPS delivered")
        assert sorted(pacs.received) == sorted(made.values())  # the SR was not sent twice
        assert not client.get(f"/review/{study.study_key}").text.count('data-job-state="')


def test_i16_a_job_that_made_nothing_is_failed_with_every_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No object made: the job failed (not partial); each object's reason recorded."""
    outcomes = [
        ObjectOutcome("SR", made=False, failed=True, reason="EncodingError: SR x"),
        ObjectOutcome("GSPS", made=False, reason="nothing to encode"),
    ]
    settings = settings_with_routing(tmp_path, ROUTING.format(port=1))
    node = Node(settings)
    try:
        job = node.store.create_job("k1", "blobs:cds-ref-blob-detect")
        node.store.set_job_state(job.job_id, JobState.RUNNING)
        state = pipeline._end_job(
            node, "k1", job.job_id, pipeline.PipelinePlan("blobs", "m", [], [], "run"),
            outcomes, [], None,
        )  # fmt: skip
        assert state is JobState.FAILED
        ended = node.store.get_job(job.job_id)
        assert ended is not None
        assert (ended.state, ended.error) == (JobState.FAILED, "SR not made: EncodingError: SR x")
        assert ended.objects == tuple(outcomes)
    finally:
        node.store.close()
