"""issue 21 (item 1): ``store.backend`` (sqlite, the default, or postgresql) and
``store.url``; the URL's password is never shown, dumped or logged, and a store that
cannot be opened is said in one line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml

from cds.cli.common import REFUSED, open_state_store
from cds.config import Settings, load_settings
from cds.config.settings import redact_url
from cds.errors import ConfigError

from ..conftest import free_port

URL = "postgresql://cds:s3cret-pw@db.example.org:5432/cds"


def _load(tmp_path: Path, store: dict[str, object]) -> Settings:
    file = tmp_path / "cds.yaml"
    file.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "store": store}))
    return load_settings(file)


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    s = _load(tmp_path, {})
    assert (s.store.backend, s.store.url) == ("sqlite", None)


def test_postgresql_needs_a_postgresql_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"backend": "postgresql"})
    assert caught.value.errors == ["store: store.url is required when store.backend is postgresql"]
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"backend": "postgresql", "url": "mysql://x/y"})
    assert caught.value.errors == ["store.url: must be a postgresql:// URL"]
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"backend": "oracle"})
    assert caught.value.errors[0].startswith("store.backend: ")


def test_the_password_is_never_dumped_or_shown(tmp_path: Path) -> None:
    s = _load(tmp_path, {"backend": "postgresql", "url": URL})
    assert s.store.url == URL  # the store gets it whole
    assert "s3cret-pw" not in s.model_dump_json()
    assert "s3cret-pw" not in repr(s)
    assert s.model_dump()["store"]["url"] == "postgresql://cds:***@db.example.org:5432/cds"
    assert redact_url("postgresql://h/db?user=a&password=x1&sslmode=require") == (
        "postgresql://h/db?user=a&password=***&sslmode=require"
    )
    assert redact_url("postgresql://cds@h/db") == "postgresql://cds@h/db"


def test_the_environment_picks_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_STORE__BACKEND", "postgresql")
    monkeypatch.setenv("CDS_STORE__URL", URL)
    assert load_settings().store.backend == "postgresql"


def test_a_command_says_an_unreachable_store_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://cds:s3cret-pw@127.0.0.1:{free_port()}/cds"
    s = _load(tmp_path, {"backend": "postgresql", "url": url})
    with pytest.raises(typer.Exit) as caught:
        open_state_store(s)
    assert caught.value.exit_code == REFUSED
    err = capsys.readouterr().err
    assert "cannot reach the PostgreSQL state store postgresql://cds:***@127.0.0.1" in err
    assert "(store.url)" in err
    assert "s3cret-pw" not in err
    assert "Traceback" not in err


def test_the_lease_is_a_node_setting_given_to_the_store(tmp_path: Path) -> None:
    """issue 21: ``node.lease_s`` (default 60 s, at least 1 s) is the store's lease."""
    from cds.store import open_store

    file = tmp_path / "cds.yaml"
    file.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "node": {"lease_s": 3}}))
    settings = load_settings(file)
    assert settings.node.lease_s == 3.0
    store = open_store(settings)
    try:
        assert store.lease_s == 3.0
    finally:
        store.close()
    assert Settings().node.lease_s == 60.0
    file.write_text(yaml.safe_dump({"node": {"lease_s": 0.5}}))
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    assert [e.split(":")[0] for e in caught.value.errors] == ["node.lease_s"]


def test_a_lease_of_a_few_assembly_ticks_is_refused(tmp_path: Path) -> None:
    """Claims are renewed on the assembly tick: a lease shorter than 4 ticks would lapse
    while its node lives, and another node would run the same job again."""
    file = tmp_path / "cds.yaml"
    file.write_text(yaml.safe_dump({"node": {"lease_s": 3}, "assembly": {"check_interval_s": 1}}))
    with pytest.raises(ConfigError) as err:
        load_settings(file, tmp_path / "home")
    assert "node.lease_s (3 s) must be at least 4 x assembly.check_interval_s (1 s)" in str(
        err.value
    )
    file.write_text(yaml.safe_dump({"node": {"lease_s": 4}, "assembly": {"check_interval_s": 1}}))
    assert load_settings(file, tmp_path / "home").node.lease_s == 4.0
