"""issue 2: one typed Settings; every error by its path; env overrides the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cds.cli import app
from cds.config import Settings, load_settings
from cds.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_defaults_match_the_documented_node() -> None:
    s = Settings()
    assert (s.dicom.ae_title, s.dicom.port) == ("CDS", 11112)
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)
    assert s.assembly.quiet_time_s == 10
    assert s.spool_path == s.home / "spool"
    assert s.sqlite_path == s.home / "state.db"


def test_yaml_file_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dicom:\n  port: 11200\n  ae_title: NODE1\nassembly:\n  quiet_time_s: 3\n")
    assert load_settings(cfg).dicom.port == 11200
    monkeypatch.setenv("CDS_DICOM__PORT", "11300")
    s = load_settings(cfg)
    assert s.dicom.port == 11300  # env wins
    assert s.dicom.ae_title == "NODE1"  # the rest of the section still comes from the file
    assert s.assembly.quiet_time_s == 3


def test_every_error_is_listed_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "dicom:\n  port: 70000\n  ae_title: 'WAY_TOO_LONG_AE_TITLE'\n  prot: 1\n"
        "http:\n  port: x\nassembly:\n  quiet_time_s: -1\nnope: {}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    errors = err.value.errors
    assert "dicom.port: must be 1..65535" in errors
    assert "dicom.prot: unknown setting" in errors
    assert "nope: unknown setting" in errors
    assert "assembly.quiet_time_s: must be > 0" in errors
    assert any(e.startswith("dicom.ae_title: must be 1..16") for e in errors)
    assert any(e.startswith("http.port:") for e in errors)
    assert len(errors) == 6


def test_env_error_is_reported_by_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_DICOM__PORT", "0")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.errors == ["dicom.port: must be 1..65535"]


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("dicom:\n  port: [1,\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert str(cfg) in err.value.errors[0]
    assert "line" in err.value.errors[0]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


def test_home_option_beats_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_HOME", "/elsewhere")
    assert load_settings(None, tmp_path).home == tmp_path


def test_quiet_time_per_calling_ae() -> None:
    s = Settings(assembly={"quiet_time_s": 10, "quiet_time_by_calling_ae": {"ORTHANC": 3}})  # type: ignore[arg-type]
    assert s.quiet_time_for("ORTHANC  ") == 3
    assert s.quiet_time_for("OTHER") == 10


def test_cli_config_check_lists_errors_and_accepts_example(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom:\n  port: 0\nspool:\n  min_free_mb: -5\n")
    res = runner.invoke(app, ["config", "check", str(bad)])
    assert res.exit_code == 1
    assert "2 error(s)" in res.output
    assert "dicom.port: must be 1..65535" in res.output
    assert "spool.min_free_mb:" in res.output

    example = REPO / "deploy" / "cds.example.yaml"
    res = runner.invoke(app, ["config", "check", str(example)])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output


def test_example_config_documents_every_setting() -> None:
    """deploy/cds.example.yaml names every setting, so the admin sees them all."""
    import yaml

    data = yaml.safe_load((REPO / "deploy" / "cds.example.yaml").read_text())
    for name, field in Settings.model_fields.items():
        assert name in data, f"{name} missing from the example"
        sub = field.annotation
        if hasattr(sub, "model_fields"):
            for key in sub.model_fields:
                assert key in data[name], f"{name}.{key} missing from the example"
