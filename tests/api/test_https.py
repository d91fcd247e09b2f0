"""issue 7 'HTTPS': ``cds serve`` with http.tls_cert_file / tls_key_file speaks HTTPS
(uvicorn given the certificate and key). A CA and a server certificate for
127.0.0.1 are made here with ``cryptography``; httpx trusts that CA only. The
real CLI runs in a subprocess on free loopback ports."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from cds.api.session import COOKIE

from ..conftest import REPO, free_port
from ..pki import leaf, make_ca, write_pem
from .authkit import TOKENS, bearer, csrf_of, token_entries


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key), PEM; the server is 127.0.0.1."""
    ca = make_ca("cds test CA")
    (folder / "ca.pem").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    cert, key = write_pem(folder, "server", *leaf("127.0.0.1", ca, server=True))
    key.chmod(0o600)
    return folder / "ca.pem", cert, key


def _config(tmp: Path, cert: Path, key: Path, port: int) -> Path:
    cfg = tmp / "cds.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "home": str(tmp / "home"),
                "dicom": {"host": "127.0.0.1", "port": free_port()},
                "http": {
                    "host": "127.0.0.1",
                    "port": port,
                    "tls_cert_file": str(cert),
                    "tls_key_file": str(key),
                    "auth": {"mode": "token", "tokens": token_entries()},
                },
                "spool": {"min_free_mb": 1},
                "inference": {"model_dirs": []},
                "log": {"format": "console", "level": "warning"},
            }
        )
    )
    return cfg


def _serve(cfg: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "cds", "serve", "--config", str(cfg)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def https_node(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    ca, cert, key = make_pki(tmp_path)
    port = free_port()
    proc = _serve(_config(tmp_path, cert, key, port))
    trust = ssl.create_default_context(cafile=str(ca))
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode()
            try:
                if httpx.get(f"{base}/health", verify=trust, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "cds serve did not answer over HTTPS"
            time.sleep(0.2)
        yield base, trust
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_speaks_https_with_the_configured_certificate(
    https_node: tuple[str, ssl.SSLContext],
) -> None:
    base, trust = https_node
    with httpx.Client(base_url=base, verify=trust) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/api/queue", headers=bearer("observer")).status_code == 200
        assert c.get("/api/queue").status_code == 401
        # the page session cookie is Secure under HTTPS
        form = c.get("/login")
        assert "Secure" in form.headers["set-cookie"]
        got = c.post(
            "/login",
            data={"csrf": csrf_of(form.text), "token": TOKENS["radiologist"]},
            follow_redirects=False,
        )
        assert got.status_code == 303
        cookie = got.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "Secure" in cookie
        assert "HttpOnly" in cookie
    # a client that does not trust our CA refuses the certificate
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/health", timeout=5)
    # plain HTTP on the HTTPS port gets no answer from the API
    with pytest.raises(httpx.HTTPError):
        httpx.get(base.replace("https://", "http://") + "/health", timeout=5)


def test_serve_refuses_a_missing_certificate(tmp_path: Path) -> None:
    _, cert, key = make_pki(tmp_path)
    cfg = _config(tmp_path, tmp_path / "missing.pem", key, free_port())
    proc = _serve(cfg)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert b"http.tls_cert_file: no such file" in out
    assert cert.exists()


def _cli(tmp_path: Path, *args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CDS_API_TOKEN"}
    env["PYTHONPATH"] = str(REPO)
    if token is not None:
        env["CDS_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "cds", *args, "--config", str(tmp_path / "cds.yaml")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_asks_the_node_over_https_with_a_token(
    https_node: tuple[str, ssl.SSLContext], tmp_path: Path
) -> None:
    """``cds studies rerun`` / ``cds jobs retry`` ask the running node: over HTTPS when it
    speaks HTTPS (trusting the certificate file it serves), with the admin token from
    CDS_API_TOKEN when authentication is on; each refusal is a clear message."""
    no_token = _cli(tmp_path, "studies", "rerun", "nosuchstudy", token=None)
    assert no_token.returncode == 1
    assert "set CDS_API_TOKEN to an admin token" in no_token.stderr
    wrong = _cli(tmp_path, "studies", "rerun", "nosuchstudy", token="not-a-token-at-all-0000")  # noqa: S106
    assert wrong.returncode == 1
    assert "was refused" in wrong.stderr
    observer = _cli(tmp_path, "studies", "rerun", "nosuchstudy", token=TOKENS["observer"])
    assert observer.returncode == 1
    assert "admin role" in observer.stderr
    admin = _cli(tmp_path, "studies", "rerun", "nosuchstudy", token=TOKENS["admin"])
    assert admin.returncode == 1  # it got through: the node itself says what is wrong
    assert "nosuchstudy" in admin.stderr
    assert "not running" not in admin.stderr
