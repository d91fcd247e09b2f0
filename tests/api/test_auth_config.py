"""issue 7 'refuse unsafe starts': the settings refuse, by path, an API open off
loopback, placeholder or weak secrets, a token mode without tokens, an OIDC mode
without its section, and half an HTTPS configuration; ``cds config check`` and
``cds serve`` both stop on them (exit 2, the path in the message)."""

# ruff: noqa: S106  -- the weak secrets here are what the validator must refuse

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cds.cli import app
from cds.cli.security import new_token
from cds.config import HttpSettings, Settings, load_settings
from cds.errors import ConfigError

GOOD = hashlib.sha256(b"a-real-random-token-4f9c2e71b0").hexdigest()


def _errors(tmp_path: Path, http: dict[str, Any]) -> list[str]:
    cfg = tmp_path / "cds.yaml"
    cfg.write_text(yaml.safe_dump({"http": http}))
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    return exc.value.errors


def _tokens(**entry: str) -> dict[str, Any]:
    return {"auth": {"mode": "token", "tokens": [{"name": "a", "role": "admin", **entry}]}}


@pytest.mark.parametrize(
    ("http", "path", "says"),
    [
        ({"host": "0.0.0.0"}, "http", "http.auth.mode is none but http.host '0.0.0.0'"),
        ({"host": "10.1.2.3"}, "http", "not a loopback address"),
        ({"host": "cds.hospital.local"}, "http", "not a loopback address"),
        ({"auth": {"mode": "token"}}, "http.auth", "needs at least one entry"),
        ({"auth": {"mode": "oidc"}}, "http.auth", "needs the http.auth.oidc section"),
        (_tokens(token="changeme"), "http.auth.tokens.0.token", "shorter than 16"),
        (_tokens(token="changemechangeme"), "http.auth.tokens.0.token", "placeholder"),
        (_tokens(token="password-password"), "http.auth.tokens.0.token", "placeholder"),
        (_tokens(token="x" * 40), "http.auth.tokens.0.token", "placeholder"),
        (_tokens(token="<put-your-token-here>"), "http.auth.tokens.0.token", "placeholder"),
        (_tokens(token_sha256="abc"), "http.auth.tokens.0.token_sha256", "64 hexadecimal"),
        (_tokens(token_sha256="<hex>"), "http.auth.tokens.0.token_sha256", "64 hexadecimal"),
        (
            _tokens(token_sha256=hashlib.sha256(b"secret").hexdigest()),
            "http.auth.tokens.0.token_sha256",
            "SHA-256 of a placeholder",
        ),
        (
            _tokens(token_sha256=hashlib.sha256(b"changeme").hexdigest()),
            "http.auth.tokens.0.token_sha256",
            "SHA-256 of a placeholder",
        ),
        (_tokens(), "http.auth.tokens.0", "exactly one of token_sha256"),
        (
            {"auth": {"mode": "none", "session_secret": "changeme-changeme-changeme-123456"}},
            "http.auth.session_secret",
            "placeholder",
        ),
        ({"auth": {"session_secret": "short"}}, "http.auth.session_secret", "shorter than 32"),
        ({"tls_cert_file": "/etc/cds/cert.pem"}, "http", "must be given together"),
        ({"tls_key_file": "/etc/cds/key.pem"}, "http", "must be given together"),
    ],
)
def test_unsafe_settings_are_refused_by_path(
    tmp_path: Path, http: dict[str, Any], path: str, says: str
) -> None:
    errors = _errors(tmp_path, http)
    assert any(e.startswith(f"{path}: ") and says in e for e in errors), errors
    for secret in ("changeme", "password-password", "x" * 40):  # never echoed back
        assert not any(secret in e.split(": ", 1)[0] for e in errors)


def test_safe_settings_pass(tmp_path: Path) -> None:
    cfg = tmp_path / "cds.yaml"
    token, digest = new_token()
    cfg.write_text(
        yaml.safe_dump(
            {
                "http": {
                    "host": "0.0.0.0",
                    "auth": {
                        "mode": "token",
                        "tokens": [
                            {"name": "dr.martin", "role": "radiologist", "token_sha256": digest},
                            {"name": "bot", "role": "observer", "token": token},
                        ],
                        "session_secret": "Vq8-3nQ-zL2p-9tXw-4mRk-7bYc-1HsD-6gFe",
                    },
                }
            }
        )
    )
    s = load_settings(cfg)
    assert s.http.auth.tokens[0].token_sha256 == digest
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert Settings(http=HttpSettings(host=host)).http.auth.mode == "none"


def test_config_check_and_serve_both_refuse(tmp_path: Path) -> None:
    cfg = tmp_path / "cds.yaml"
    cfg.write_text(f"home: {tmp_path / 'home'}\nhttp:\n  host: 0.0.0.0\n")
    runner = CliRunner()
    check = runner.invoke(app, ["config", "check", str(cfg)])
    assert check.exit_code == 1
    assert "http: http.auth.mode is none" in check.output
    serve = runner.invoke(app, ["serve", "--config", str(cfg)])
    assert serve.exit_code == 2
    assert "http.auth.mode is none" in serve.output
    assert not (tmp_path / "home").exists()  # refused before anything started


def test_token_new_prints_a_token_and_the_entry_that_accepts_it(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["token", "new", "--name", "dr.martin", "--role", "radiologist"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    token = lines[1].strip()
    entry = yaml.safe_load(lines[3].strip())[0]
    assert len(token) >= 40
    assert entry == {
        "name": "dr.martin",
        "role": "radiologist",
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
    }
    cfg = tmp_path / "cds.yaml"
    cfg.write_text(yaml.safe_dump({"http": {"auth": {"mode": "token", "tokens": [entry]}}}))
    assert load_settings(cfg).http.auth.mode == "token"
    again = CliRunner().invoke(app, ["token", "new", "--name", "dr.martin", "--role", "admin"])
    assert again.output.splitlines()[1].strip() != token
    bad = CliRunner().invoke(app, ["token", "new", "--name", "a b", "--role", "admin"])
    assert bad.exit_code == 2
