"""issue 23 (item 4): ``cds doctor`` checks an install and names the fix of each failure.

A good install (a temporary home, the bundled models, free ports, a valid HTTPS
certificate, a routing file whose PACS is a pynetdicom echo SCP) passes; each failure (a
broken model package, an unreachable destination, an expired certificate, a bad routing
file, a port taken by another process, a running node's port, an unsynchronised clock)
fails naming the check and its fix. ``timedatectl`` is a stub on PATH where the test
needs a known answer (systemd is not PID 1 here)."""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from typer.testing import CliRunner

from cds.cli import app
from cds.cli.doctor.host import _bind
from cds.config.bundled import BUNDLED_MODELS

from .conftest import free_port
from .pki import name, write_pem


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """doctor configures logging for its own process: give the test run's back."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("pynetdicom").level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("pynetdicom").setLevel(saved[2])


def _timedatectl(folder: Path, answer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``timedatectl`` that answers NTPSynchronized=``answer``, first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    stub = folder / "timedatectl"
    stub.write_text(f"#!/bin/sh\necho {answer}\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")


@pytest.fixture
def echo_scp() -> Iterator[int]:
    """A PACS that answers C-ECHO (pynetdicom), on a free loopback port."""
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        yield port
    finally:
        server.shutdown()


def _routing(path: Path, pacs_port: int) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "destinations": {
                    "pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}
                },
                "pipelines": {
                    "ct-bone": {
                        "model": "cds-ref-ct-bone",
                        "results": ["SR"],
                        "destinations": ["pacs"],
                    }
                },
                "rules": [
                    {
                        "name": "CT",
                        "match": [{"attribute": "Modality", "equals": "CT"}],
                        "pipelines": ["ct-bone"],
                    }
                ],
            }
        )
    )
    return path


def _config(tmp: Path, **sections: dict[str, Any]) -> Path:
    data: dict[str, Any] = {
        "home": str(tmp / "home"),
        "dicom": {"host": "127.0.0.1", "port": free_port()},
        "http": {"port": free_port()},
        "spool": {"min_free_mb": 1},
        "inference": {"model_dirs": [], "providers": "cpu"},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path = tmp / "cds.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _doctor(config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    res = CliRunner().invoke(app, ["doctor", "--config", str(config), "--json", *extra])
    out = json.loads(res.stdout)
    assert out["ok"] == (res.exit_code == 0), res.stdout
    return res.exit_code, {c["id"]: c for c in out["checks"]}


def test_i23_doctor_a_good_install_passes(
    tmp_path: Path, echo_scp: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _timedatectl(tmp_path / "bin", "yes", monkeypatch)
    cert, key = _certificate(tmp_path / "tls", "server", (-1, 365))
    config = _config(
        tmp_path,
        inference={"model_dirs": None},  # the bundled reference models
        routing={"file": str(_routing(tmp_path / "routing.yaml", echo_scp))},
        http={"tls_cert_file": str(cert), "tls_key_file": str(key)},
    )
    code, checks = _doctor(config)
    assert code == 0, checks
    assert {c["status"] for c in checks.values()} == {"ok"}, checks
    bundled = sorted(p.name for p in BUNDLED_MODELS.iterdir())
    assert [k for k in checks if k.startswith("model:")] == [f"model:{m}" for m in bundled]
    for key in ("python", "onnxruntime", "providers", "port:dicom", "port:http", "home"):
        assert key in checks
    assert "golden case(s) passed" in checks["model:cds-ref-ct-bone"]["detail"]
    assert checks["destination:pacs"]["detail"] == f"PACS@127.0.0.1:{echo_scp}: answers C-ECHO"
    assert checks["tls:http.tls_cert_file"]["detail"].startswith(f"{cert}, valid until")
    assert checks["clock"]["detail"].endswith("synchronised (NTP)")
    assert all(c["fix"] == "" for c in checks.values())


def test_i23_doctor_names_a_broken_model_package_and_its_fix(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(BUNDLED_MODELS / "cds-ref-ct-bone", models / "cds-ref-ct-bone")
    (models / "cds-ref-ct-bone" / "model.onnx").write_bytes(b"not an onnx graph")
    code, checks = _doctor(_config(tmp_path, inference={"model_dirs": [str(models)]}))
    assert code == 1
    row = checks["model:cds-ref-ct-bone"]
    assert row["status"] == "fail"
    assert "model.onnx" in row["detail"]
    assert f"cds model validate {models / 'cds-ref-ct-bone'}" in row["fix"]


def test_i23_doctor_names_an_unreachable_destination(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there
    config = _config(tmp_path, routing={"file": str(_routing(tmp_path / "r.yaml", dead))})
    code, checks = _doctor(config, "--timeout", "2")
    assert code == 1
    row = checks["destination:pacs"]
    assert row["status"] == "fail"
    assert row["detail"].startswith(f"PACS@127.0.0.1:{dead}: no answer to C-ECHO")
    assert "host and port in the routing file" in row["fix"]
    assert checks["routing"]["status"] == "ok"


def _certificate(folder: Path, stem: str, days: tuple[int, int]) -> tuple[Path, Path]:
    """A self-signed certificate valid from ``days[0]`` to ``days[1]`` days from now."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(name("localhost"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    return write_pem(folder, stem, cert, key)


def test_i23_doctor_names_an_expired_certificate(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path / "tls", "expired", (-30, -1))
    config = _config(tmp_path, http={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    code, checks = _doctor(config)
    assert code == 1
    row = checks["tls:http.tls_cert_file"]
    day = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)).strftime("%Y-%m-%d")
    assert row["status"] == "fail"
    assert row["detail"] == f"{cert}: the certificate expired on {day}"
    assert row["fix"] == "renew the certificate named by http.tls_cert_file (PEM), then restart cds"
    assert checks["tls:http.tls_key_file"]["status"] == "ok"  # the pair still matches


def test_i23_doctor_names_a_bad_routing_file(tmp_path: Path) -> None:
    bad = tmp_path / "routing.yaml"
    bad.write_text("destinations:\n  pacs: {ae_title: PACS, host: 127.0.0.1, port: 99999}\n")
    code, checks = _doctor(_config(tmp_path, routing={"file": str(bad)}))
    assert code == 1
    row = checks["routing"]
    assert row["status"] == "fail"
    assert "port" in row["detail"]
    assert row["fix"] == f"correct {bad} (cds config check {bad} lists every error)"


def test_i23_doctor_names_a_port_taken_by_another_process(tmp_path: Path) -> None:
    config = _config(tmp_path)
    port = yaml.safe_load(config.read_text())["dicom"]["port"]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); "
            "s.listen(); print('ready', flush=True); sys.stdin.read()",
            str(port),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        code, checks = _doctor(config)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert code == 1
    row = checks["port:dicom"]
    assert (row["status"], row["detail"]) == (
        "fail",
        f"127.0.0.1:{port} is taken by another process",
    )
    assert f"ss -ltnp 'sport = :{port}'" in row["fix"]
    assert "dicom.port" in row["fix"]
    assert checks["port:http"]["status"] == "ok"
    assert "node" not in checks  # no cds answered on the HTTP port


def test_i23_doctor_on_a_running_node_checks_its_health(tmp_path: Path) -> None:
    config = _config(tmp_path)
    http_port = yaml.safe_load(config.read_text())["http"]["port"]
    node = subprocess.Popen(
        [sys.executable, "-m", "cds", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=2).status_code:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the node did not answer /health"
            assert node.poll() is None, "the node exited"
            time.sleep(0.2)
        code, checks = _doctor(config)
    finally:
        node.terminate()
        node.wait(timeout=30)
    assert checks["port:dicom"]["detail"].endswith("held by the running cds node")
    assert checks["port:http"]["status"] == "ok"
    assert checks["node"]["status"] == "ok"
    assert checks["node"]["detail"] == "/health answers ok (HTTP 200)"
    assert code == 0 or {k for k, c in checks.items() if c["status"] == "fail"} <= {"clock"}


def test_i23_doctor_clock_unsynchronised_fails_absent_tool_is_not_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _timedatectl(tmp_path / "bin", "no", monkeypatch)
    code, checks = _doctor(_config(tmp_path))
    assert code == 1
    assert checks["clock"]["status"] == "fail"
    assert "timedatectl set-ntp true" in checks["clock"]["fix"]
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    code, checks = _doctor(_config(tmp_path))
    assert checks["clock"]["status"] == "skip"
    assert "NTP not checked (timedatectl)" in checks["clock"]["detail"]


def test_i23_doctor_speaks_french_and_prints_a_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _timedatectl(tmp_path / "bin", "no", monkeypatch)
    res = CliRunner().invoke(app, ["doctor", "--config", str(_config(tmp_path)), "--lang", "fr"])
    assert res.exit_code == 1
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["VÉRIFICATION", "RÉSULTAT", "DÉTAIL"]
    clock = next(i for i, ln in enumerate(lines) if ln.startswith("horloge "))
    assert "ÉCHEC" in lines[clock]
    assert lines[clock + 1].strip().startswith("correction : activer NTP")
    assert lines[-1] == "échec de 1 vérification(s) sur 11 : voir chaque correction"
    bad = CliRunner().invoke(app, ["doctor", "--config", str(_config(tmp_path)), "--lang", "de"])
    assert bad.exit_code == 2


def test_doctor_finds_a_shared_dicom_port_free_to_join() -> None:
    """With dicom.reuse_port, another node of the store listening on the port does not
    make it taken (this node would listen alongside it); without, it does."""
    port = free_port()
    with socket.socket() as sibling:
        sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sibling.bind(("127.0.0.1", port))
        sibling.listen()
        assert _bind("127.0.0.1", port, reuse_port=True) is None
        taken = _bind("127.0.0.1", port)
        assert taken is not None
        assert taken.errno == errno.EADDRINUSE
