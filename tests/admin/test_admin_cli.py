"""issue 4 (admin on the command line): `cds jobs`, `cds jobs retry|cancel`, `cds queue`,
`cds studies rerun|purge` — the same operations and refusals as the HTTP API. Reading,
cancelling and purging work on the store with the node down; retry and re-run ask the
running node and say so when it is not running."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cds.cli import admin as cli_admin
from cds.cli.admin import jobs_app, queue_cmd, studies_app, workers_cmd
from cds.config import Settings
from cds.domain import JobState, StudyState
from cds.orchestrator import Node
from cds.store.sqlite import SqliteStore

from .helpers import SentStudy, send_study, serving, wait_for, wait_state


def cli() -> typer.Typer:
    """Registered as cds/cli/main.py registers them."""
    app = typer.Typer()
    app.add_typer(jobs_app, name="jobs")
    app.command("queue")(queue_cmd)
    app.command("workers")(workers_cmd)
    app.add_typer(studies_app, name="studies")
    return app


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    res = CliRunner().invoke(cli(), list(args), input=input)
    return res.exit_code, res.output


@pytest.fixture
def received(settings: Settings) -> SentStudy:
    """A complete study (3 instances, 1 superseded version) on a node that is then stopped."""
    node = Node(settings)
    node.start()
    try:
        sent = send_study(node)
        wait_state(node, sent.key, StudyState.COMPLETE)
    finally:
        node.stop()
    return sent


@pytest.fixture
def store(settings: Settings, received: SentStudy) -> Iterator[SqliteStore]:
    s = SqliteStore(settings.sqlite_path)
    yield s
    s.close()


def files_of(settings: Settings, key: str) -> list[Path]:
    return sorted((settings.spool_path / "studies" / key).glob("*/*.dcm"))


def test_jobs_table_json_and_filters(settings: Settings, store: SqliteStore) -> None:
    home = str(settings.home)
    assert run("jobs", "--home", home) == (0, "no jobs\n")
    now = time.time()
    failed = store.create_job("k1", "bone:cds-ref-ct-bone", now=now - 100)
    store.set_job_state(failed.job_id, JobState.RUNNING, now=now - 70)
    store.set_job_state(failed.job_id, JobState.FAILED, error="model crashed", now=now - 65)
    queued = store.create_job("k2", "blobs:cds-ref-blob-detect", now=now - 10)

    code, out = run("jobs", "--home", home)
    assert code == 0, out
    head, first, second = out.splitlines()
    assert head.split()[:4] == ["JOB", "ID", "STUDY", "KEY"]
    assert first.split()[:3] == [queued.job_id, "k2", "queued"]
    assert second.split()[:3] == [failed.job_id, "k1", "failed"]
    assert "30.0s" in second  # waited
    assert "5.0s" in second  # ran
    assert second.endswith("bone:cds-ref-ct-bone  model crashed")

    code, out = run("jobs", "list", "--home", home, "--state", "failed", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["job_id"], row["waited_s"], row["ran_s"]) == (failed.job_id, 30.0, 5.0)
    code, out = run("jobs", "--home", home, "--study", "k2", "--json")
    assert [r["job_id"] for r in json.loads(out)] == [queued.job_id]
    assert run("jobs", "--home", home, "--state", "bogus")[0] == 2


def test_jobs_without_store_names_the_path(tmp_path: Path) -> None:
    code, out = run("jobs", "--home", str(tmp_path / "none"))
    assert code == 1
    assert "store.sqlite_path" in out


def test_cancel_in_the_store_and_its_refusals(settings: Settings, store: SqliteStore) -> None:
    home = str(settings.home)
    job = store.create_job("k1", "p:m")
    code, out = run("jobs", "cancel", job.job_id, "--home", home)
    assert code == 0, out
    assert f"job {job.job_id} (p:m, study k1) cancelled" in out
    assert store.get_job(job.job_id).state is JobState.CANCELLED  # type: ignore[union-attr]

    code, out = run("jobs", "cancel", job.job_id, "--home", home)
    assert code == 1
    assert f"job {job.job_id} is cancelled: only a queued or running job can be cancelled" in out
    code, out = run("jobs", "cancel", "nope", "--home", home)
    assert (code, out.strip()) == (1, "no job with id 'nope'")


def test_queue_text_and_json(settings: Settings, store: SqliteStore, received: SentStudy) -> None:
    home = str(settings.home)
    store.create_job(received.key, "p:m", now=time.time() - 300)
    code, out = run("queue", "--home", home)
    assert code == 0, out
    assert "jobs queued                 1" in out
    assert "oldest queued job           5m0" in out
    assert "studies complete, waiting   1" in out
    q = json.loads(run("queue", "--home", home, "--json")[1])
    assert (q["jobs_queued"], q["jobs_running"], q["studies_receiving"]) == (1, 0, 0)
    assert q["oldest_queued_age_s"] == pytest.approx(300, abs=10)


def test_purge_asks_first_and_refuses_without_a_terminal(
    settings: Settings, received: SentStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = str(settings.home)
    code, out = run("studies", "purge", received.key, "--home", home)
    assert code == 1
    assert "without confirmation: no terminal to ask on; pass --yes" in out
    assert len(files_of(settings, received.key)) == 4

    monkeypatch.setattr(cli_admin, "_interactive", lambda: True)
    code, out = run("studies", "purge", received.key, "--home", home, input="n\n")
    assert code == 1
    assert f"Purge study {received.key} (complete, 1 series, 3 instances)?" in out
    assert len(files_of(settings, received.key)) == 4

    code, out = run("studies", "purge", received.key, "--home", home, input="y\n")
    assert code == 0, out
    assert "4 file(s) removed (3 instance(s), 1 superseded version(s), 0 unrecorded)" in out
    assert files_of(settings, received.key) == []


def test_purge_with_the_node_down_and_refusals(settings: Settings, received: SentStudy) -> None:
    home = str(settings.home)
    store = SqliteStore(settings.sqlite_path)
    store.set_study_state(received.key, StudyState.PROCESSING, "test")
    job = store.create_job(received.key, "p:m")
    store.close()

    code, out = run("studies", "purge", received.key, "--home", home, "--yes")
    assert code == 1
    assert f"study {received.key} is processing with 1 job(s) queued or running" in out
    assert len(files_of(settings, received.key)) == 4

    code, out = run("studies", "purge", received.key, "--home", home, "--yes", "--force")
    assert code == 0, out
    assert f"cancelled 1 job(s): {job.job_id}" in out
    assert files_of(settings, received.key) == []

    code, out = run("studies", "purge", received.key, "--home", home, "--yes")
    assert (code, out.strip()) == (1, f"study {received.key} is already purged")
    code, out = run("studies", "purge", "nope", "--home", home, "--yes")
    assert (code, out.strip()) == (1, "no study with key 'nope'")

    # the node starts again: nothing comes back; the history tells what happened
    node = Node(settings)
    node.start()
    try:
        detail = node.store.get_study(received.key)
        assert detail is not None
        assert detail.summary.state is StudyState.PURGED
        assert [e.kind for e in detail.events][-2:] == ["job_cancelled", "purged"]
        assert files_of(settings, received.key) == []
    finally:
        node.stop()


def config_file(tmp_path: Path, settings: Settings) -> str:
    f = tmp_path / "cds.yaml"
    f.write_text(f"home: {settings.home}\nhttp:\n  port: {settings.http.port}\n")
    return str(f)


def test_retry_and_rerun_say_when_the_node_is_not_running(
    tmp_path: Path, settings: Settings
) -> None:
    cfg = config_file(tmp_path, settings)
    url = f"http://127.0.0.1:{settings.http.port}"
    for args in (("jobs", "retry", "j1"), ("studies", "rerun", "k1"), ("workers",)):
        code, out = run(*args, "--config", cfg)
        assert code == 1
        assert out.startswith(f"the node is not running at {url} (http.host/http.port)")
        assert "start it with 'cds serve'" in out


def test_retry_and_rerun_through_the_running_node(
    tmp_path: Path, settings: Settings, json_logs: StringIO
) -> None:
    """(The node's log goes to a buffer: in this test it runs in the CLI's own process.)"""
    cfg = config_file(tmp_path, settings)
    with serving(settings) as node:
        seen: list[str] = []
        node.on_study_complete(seen.append)
        sent = send_study(node, replace_first=False)
        wait_state(node, sent.key, StudyState.COMPLETE)
        wait_for(lambda: seen == [sent.key])

        job = node.store.create_job(sent.key, "p:m")
        code, out = run("jobs", "retry", job.job_id, "--config", cfg)
        assert (code, out.strip()) == (
            1,
            f"job {job.job_id} is queued: only a failed or partial job can be retried",
        )
        node.store.set_job_state(job.job_id, JobState.FAILED, error="boom")
        code, out = run("jobs", "retry", job.job_id, "--config", cfg)
        assert (code, out.strip()) == (0, f"job {job.job_id}: study {sent.key} re-queued")
        wait_for(lambda: seen == [sent.key] * 2, what="the retried study")

        code, out = run("studies", "rerun", sent.key, "--config", cfg)
        assert (code, out.strip()) == (0, f"study {sent.key} re-queued")
        wait_for(lambda: seen == [sent.key] * 3, what="the re-run study")
        code, out = run("studies", "rerun", "nope", "--config", cfg)
        assert (code, out.strip()) == (1, "no study with key 'nope'")
        code, out = run("workers", "--config", cfg)  # issue 20: the executor's workers
        assert code == 0, out
        assert out.splitlines()[1].split()[:4] == ["node", "threads", "thread", "0"]
        code, out = run("workers", "--json", "--config", cfg)
        assert json.loads(out)[0]["worker"] == "node threads"

        detail = node.store.get_study(sent.key)
        assert detail is not None
        events = [e.kind for e in detail.events]
        assert events[-2:] == ["job_retried", "rerun_requested"]
    logged = [json.loads(line)["event"] for line in json_logs.getvalue().splitlines()]
    assert {"admin.job_retried", "admin.study_rerun_requested"} <= set(logged)
