"""issue 6: ``cds observatory show`` and ``cds observatory export``: the figures on the
terminal, the de-identified export written as JSON or CSV, and clear refusals (exit
code and a message naming the option or file) for bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cds.cli import app
from cds.config import load_settings

from .known import build

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    store, _ = build(load_settings(None, home).sqlite_path)
    store.close()
    return home


def run(*args: str) -> tuple[int, str, str]:
    got = runner.invoke(app, ["observatory", *args])
    return got.exit_code, got.stdout, got.stderr


def test_show_prints_one_line_per_model_version_and_week(home: Path) -> None:
    code, out, _ = run("show", "--home", str(home))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "VERSION", "PERIOD"]
    body = [line.split() for line in lines[1:4]]
    assert [b[:3] for b in body] == [
        ["alpha", "1.0", "2026-W47"],
        ["alpha", "1.0", "2026-W48"],
        ["beta", "2.0", "2026-W47"],
    ]
    # studies, findings, positive, reviewed, accepted, corrected, rejected
    assert body[0][3:10] == ["4", "6", "67%", "67%", "50%", "25%", "25%"]


def test_show_json_by_month(home: Path) -> None:
    code, out, _ = run("show", "--home", str(home), "--bucket", "month", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["model"], r["period"], r["studies"]) for r in rows] == [
        ("alpha", "2026-11", 5),
        ("beta", "2026-11", 1),
    ]


def test_show_an_empty_period(home: Path) -> None:
    code, out, _ = run("show", "--home", str(home), "--since", "2030-01-01")
    assert (code, out.strip()) == (0, "no results or findings in this period")


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_writes_the_file(home: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"observatory.{fmt}"
    code, said, _ = run(
        "export", "--home", str(home), "--out", str(out), "--format", fmt, "--min-count", "4"
    )
    assert code == 0, said
    assert f"wrote {out}: 3 model-week row(s), 2 model version(s)" in said
    if fmt == "json":
        data = json.loads(out.read_text())
        assert (data["suppression_threshold"], len(data["rows"])) == (4, 3)
        assert data["rows"][0]["studies"] == {"value": 4, "suppressed": False}
    else:
        rows = list(csv.DictReader(out.open()))
        assert [r["week"] for r in rows] == ["2026-W47", "2026-W48", "2026-W47"]
        assert rows[0]["studies"] == "4"


def test_export_range_and_default_threshold(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    code, said, _ = run("export", "--home", str(home), "--out", str(out), "--since", "2026-11-23")
    assert code == 0, said
    data = json.loads(out.read_text())
    assert (data["first_week"], data["suppression_threshold"]) == ("2026-W48", 5)
    assert [r["week"] for r in data["rows"]] == ["2026-W48"]
    assert "15 figure(s) suppressed (fewer than 5)" in said  # 1 study, 1 finding: all


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "23/11/2026"], "--since: '23/11/2026' is not a date (YYYY-MM-DD)"),
        (["--until", "yesterday"], "--until: 'yesterday' is not a date"),
        (
            ["--since", "2026-11-23", "--until", "2026-11-01"],
            "--until (2026-11-01) must come after --since (2026-11-23)",
        ),
    ],
)
def test_bad_dates_are_refused_by_name(
    home: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "x.json"
    for command in (["export", "--out", str(out)], ["show"]):
        code, said, err = run(*command, "--home", str(home), *args)
        assert code == 2
        assert message in err
        assert "Traceback" not in said + err
    assert not out.exists()


def test_an_unwritable_file_is_named(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "no-such-folder" / "x.json"
    code, said, err = run("export", "--home", str(home), "--out", str(out))
    assert code == 1
    assert f"cannot write the export to {out}: No such file or directory" in err
    assert "Traceback" not in said + err
    code, _, err = run("export", "--home", str(home), "--out", str(tmp_path))  # a folder
    assert code == 1
    assert f"cannot write the export to {tmp_path}" in err


def test_bad_options_and_a_missing_store(home: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "x.json")
    code, _, err = run("export", "--home", str(home), "--out", out, "--min-count", "0")
    assert code == 2
    assert "--min-count" in err
    code, _, err = run("export", "--home", str(home), "--out", out, "--format", "xml")
    assert code == 2
    assert "--format" in err
    code, _, err = run("export", "--home", str(tmp_path / "nowhere"), "--out", out)
    assert code == 1
    assert "no state store at" in err
