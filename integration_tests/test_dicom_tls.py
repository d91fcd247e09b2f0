"""Issue 7 (access): DICOM TLS and per-source rules against DCMTK.

The node runs as ``cds serve`` with ``dicom.tls`` enabled beside its plain
port; DCMTK's /usr/bin/echoscu and /usr/bin/storescu talk to it with
``+tls key cert +cf ca`` (their default BCP 195 non-downgrading profile).
Certificates come from /usr/bin/openssl in the test's folder.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from integration_tests.conftest import CdsNode
from integration_tests.support import (
    free_port,
    require_dcmtk,
    run_tool,
    spooled_files,
    write_ct_series,
)

pytestmark = pytest.mark.integration

OPENSSL = "/usr/bin/openssl"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _leaf(folder: Path, name: str, cn: str, ext: str) -> None:
    (folder / f"{name}.ext").write_text(ext, encoding="ascii")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which(OPENSSL) is None:
        pytest.skip("openssl not installed")
    folder = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=cds integration CA",
        cwd=folder,
    )  # fmt: skip
    _leaf(
        folder,
        "server",
        "localhost",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    _leaf(
        folder, "client", "DCMTK-PACS", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
    )
    return folder


def tls_node(
    node_factory: Callable[..., CdsNode], pki: Path, **dicom: object
) -> tuple[CdsNode, int]:
    port = free_port()
    tls = {
        "enabled": True,
        "port": port,
        "cert_file": str(pki / "server.crt"),
        "key_file": str(pki / "server.key"),
        "ca_file": str(pki / "ca.crt"),
        "client_certs": "required",
        "handshake_timeout_s": 5,
    }
    return node_factory({"dicom": {"tls": tls, **dicom}}), port


def tls_args(pki: Path) -> list[str]:
    return ["+tls", str(pki / "client.key"), str(pki / "client.crt"), "+cf", str(pki / "ca.crt")]


def echo(port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_tool(
        [require_dcmtk("echoscu"), "-v", "-aec", "CDS", *extra, "127.0.0.1", str(port)],
        timeout=30,
    )


def events(node: CdsNode, name: str) -> list[dict[str, object]]:
    return [e for e in node.events() if e["event"] == name]


def test_i7_dcmtk_echoscu_and_storescu_over_tls(
    node_factory: Callable[..., CdsNode], pki: Path, tmp_path: Path
) -> None:
    """issue 7, access: DCMTK C-ECHO and C-STORE over the node's TLS port succeed."""
    node, port = tls_node(node_factory, pki)
    r = echo(port, "-aet", "PACS", *tls_args(pki))
    assert r.returncode == 0, r.stdout
    assert "Received Echo Response (Success)" in r.stdout

    files = write_ct_series(tmp_path / "series", 3)
    r = run_tool(
        [
            require_dcmtk("storescu"),
            "-v",
            "-aet",
            "PACS",
            "-aec",
            "CDS",
            *tls_args(pki),
            "127.0.0.1",
            str(port),
            *(str(p) for p, _ in files),
        ],
        timeout=60,
    )
    assert r.returncode == 0, r.stdout
    assert r.stdout.count("Received Store Response (Success)") == 3
    for _, sop_uid in files:
        assert len(spooled_files(node.home, sop_uid)) == 1
    accepted = events(node, "ingest.association_accepted")
    assert len(accepted) == 2
    assert all(e["tls"] is True and e["cert_cn"] == "DCMTK-PACS" for e in accepted)
    # the plain port still answers
    r = echo(node.dicom_port, "-aet", "PACS")
    assert r.returncode == 0, r.stdout
    assert not node.log_problems()


def test_i7_dcmtk_without_client_certificate_is_refused(
    node_factory: Callable[..., CdsNode], pki: Path
) -> None:
    """issue 7, access: client_certs required: DCMTK's anonymous TLS gets no association."""
    node, port = tls_node(node_factory, pki)
    r = echo(port, "-aet", "PACS", "+tla", "+cf", str(pki / "ca.crt"))
    assert r.returncode != 0
    assert "Received Echo Response" not in r.stdout
    failed = events(node, "ingest.tls_handshake_failed")
    assert failed
    assert failed[0]["reason"] == "tls_handshake_failed"
    assert not events(node, "ingest.association_accepted")
    assert node.health().status_code == 200


def test_i7_dcmtk_from_a_rejected_source(node_factory: Callable[..., CdsNode], pki: Path) -> None:
    """issue 7, access: sources bind PACS to its certificate; other AE titles, and PACS
    without TLS, get A-ASSOCIATE-RJ 'calling AE title not recognised'."""
    node, port = tls_node(
        node_factory,
        pki,
        sources=[
            {"ae_title": "PACS", "cert_subject_cn": "DCMTK-PACS"},
            {"ae_title": "MODALITY", "addresses": ["10.9.9.0/24"]},
        ],
    )
    r = echo(port, "-aet", "INTRUDER", *tls_args(pki))
    assert r.returncode != 0
    assert "Association Rejected" in r.stdout
    assert "Calling AE Title Not Recognized" in r.stdout
    r = echo(node.dicom_port, "-aet", "PACS")  # right AE title, no certificate
    assert "Calling AE Title Not Recognized" in r.stdout
    r = echo(node.dicom_port, "-aet", "MODALITY")  # right AE title, wrong address
    assert "Calling AE Title Not Recognized" in r.stdout
    r = echo(port, "-aet", "PACS", *tls_args(pki))
    assert r.returncode == 0, r.stdout
    rejected = events(node, "ingest.association_rejected")
    assert [e["source_rule"] for e in rejected] == [
        "calling_ae_not_listed",
        "tls_required",
        "address_not_allowed",
    ]
    assert all(
        e["reason"] == "rejected-permanent: calling AE title not recognised" for e in rejected
    )
