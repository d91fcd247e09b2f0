"""issue 2: `cds studies` / `cds study` read the store; errors name the file and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cds.cli import app
from cds.domain import InstanceRecord
from cds.store.sqlite import SqliteStore

from .store.test_sqlite import rec


def seeded_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    store = SqliteStore(home / "state.db")
    for n in range(3):
        store.record_instance(rec(n))
    r: InstanceRecord = rec(7, series_uid="1.2.3.9", modality="SR")
    store.record_instance(r)
    store.close()
    return home


def test_studies_table_and_json(tmp_path: Path) -> None:
    home = seeded_home(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["studies", "--home", str(home)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:4] == ["STUDY", "KEY", "STATE", "SERIES"]
    assert lines[1].split()[:5] == ["k1", "receiving", "2", "4", "CT,SR"]

    res = runner.invoke(app, ["studies", "--home", str(home), "--json"])
    assert res.exit_code == 0
    assert '"instance_count": 4' in res.output

    res = runner.invoke(app, ["study", "k1", "--home", str(home)])
    assert res.exit_code == 0
    assert "2 series, 4 instances" in res.output
    assert "receiving" in res.output


def test_studies_without_store_names_the_path(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["studies", "--home", str(tmp_path / "none")])
    assert res.exit_code == 1
    assert "state.db" in res.output
    assert "store.sqlite_path" in res.output


def test_unknown_study_and_bad_state(tmp_path: Path) -> None:
    home = seeded_home(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["study", "zzz", "--home", str(home)])
    assert res.exit_code == 1
    assert "no study with key 'zzz'" in res.output
    res = runner.invoke(app, ["studies", "--home", str(home), "--state", "bogus"])
    assert res.exit_code == 2


def test_serve_refuses_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom:\n  port: 99999\n")
    res = CliRunner().invoke(app, ["serve", "--config", str(bad), "--home", str(tmp_path)])
    assert res.exit_code == 2
    assert "dicom.port: must be 1..65535" in res.output


def test_help_lists_each_command_on_one_line() -> None:
    """issue 14: `cds --help` shows each command's summary without the docstring's line
    breaks (typer keeps single line breaks of the first paragraph in its command lists)."""
    import inspect

    import click
    import typer.main

    def walk(cmd: click.Command, path: str) -> list[str]:
        bad = []
        first = inspect.cleandoc(cmd.help or "").split("\n\n")[0]
        if "\n" in first:
            bad.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            bad += walk(sub, f"{path} {name}")
        return bad

    assert walk(typer.main.get_command(app), "cds") == []
    res = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    (demo,) = [line for line in res.output.splitlines() if " demo " in line]
    assert "round trip" in demo


def test_routing_check_counts_in_the_right_number(tmp_path: Path) -> None:
    """issue 14: "1 destination", not "1 destinations"."""
    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "destinations:\n  pacs: {ae_title: PACS, host: 127.0.0.1, port: 4242}\n"
        "pipelines:\n  p: {model: m, results: [SR], destinations: [pacs]}\n"
        "rules:\n"
        "  - {name: a, pipelines: [p], match: [{attribute: Modality, equals: CT}]}\n"
        "  - {name: b, pipelines: [p], match: [{attribute: Modality, equals: MR}]}\n"
    )
    res = CliRunner().invoke(app, ["config", "check", str(routing)])
    assert res.exit_code == 0, res.output
    assert "OK (2 rules, 1 pipeline, 1 destination)" in res.output


def test_json_output_is_stdout_alone(tmp_path: Path) -> None:
    """``cds model list --json`` loads the models (their golden cases log each run): those
    events go to stderr, so stdout parses as JSON whole (it began with log lines)."""
    p = subprocess.run(
        [sys.executable, "-m", "cds", "model", "list", "--json", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(p.stdout)
    assert {r["name"] for r in rows} >= {"cds-ref-ct-bone", "cds-ref-blob-detect"}
    assert "inference.run" not in p.stdout
