"""issue 22 (backfill), against a real Orthanc as the DIMSE archive and the real node:

Orthanc holds N small synthetic CT studies (uploaded through its REST API) and knows
the node's AE title as a modality, so it answers the node's C-FIND and C-MOVEs the
studies to the node's C-STORE receiver. ``cds backfill`` runs as its own process
beside the node, as an admin runs it.

- every study is fetched, routed and run once, and nothing is delivered without
  ``--deliver``; the retrievals start at the asked rate (within 5 %);
- ``cds backfill`` killed with SIGKILL mid-way and given again: each study processed
  once, and with ``--deliver`` the results reach the destination;
- ``retrieve: get``: the studies fetched by C-GET on the query side's own association;
  and so over DICOM TLS, Orthanc requiring our client certificate.

The same through Orthanc's DICOMweb (QIDO-RS/WADO-RS): test_backfill_web.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import yaml

from cds.audit import AuditEvent
from cds.audit.trail import read_records
from cds.config import load_settings
from integration_tests.conftest import CdsNode, Orthanc, wait_for
from integration_tests.support import split_part10, spooled_file_for, write_bone_study
from integration_tests.test_dicom_tls import pki

pytestmark = pytest.mark.integration
__all__ = ["pki"]  # test_dicom_tls's PKI fixture (openssl), used here

REPO = Path(__file__).resolve().parent.parent
SINCE, UNTIL = "2024-01-01", "2024-01-31"


def _studies(folder: Path, orthanc: Orthanc, n: int) -> list[str]:
    """N synthetic bone CTs of January 2024 (and one of March: outside the range)."""
    uids = []
    for i in range(n + 1):
        files, uid = write_bone_study(folder / f"s{i}", f"BACKFILL {i}", count=4)
        for f in files:
            ds = pydicom.dcmread(f)
            ds.StudyDate = f"202401{i + 10:02d}" if i < n else "20240315"
            ds.save_as(f)
        orthanc.upload(files)
        if i < n:
            uids.append(uid)
    return uids


#: an ``archives`` entry naming Orthanc: its DIMSE address (C-MOVE, the default)
def dimse_archive(orthanc: Orthanc, **extra: Any) -> dict[str, Any]:
    return {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port, **extra}


def _node(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    archive: Callable[[Orthanc], dict[str, Any]] = dimse_archive,
    *,
    dicomweb: bool = False,
) -> tuple[CdsNode, Orthanc]:
    """A running node whose routing file names Orthanc as the archive ``orthanc`` (the
    entry ``archive`` makes) and as the destination ``pacs``, and runs the bone model."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "cds-ref-ct-bone").symlink_to(REPO / "models" / "cds-ref-ct-bone")
    node = node_factory(start=False)
    orthanc = orthanc_factory(node, dicomweb=dicomweb)
    routing = {
        "archives": {"orthanc": archive(orthanc)},
        "destinations": {"pacs": dimse_archive(orthanc)},
        "pipelines": {"ct-bone": {"model": "cds-ref-ct-bone", "results": ["SR"],
                                  "destinations": ["pacs"]}},
        "rules": [{"name": "any CT", "match": [{"attribute": "Modality", "equals": "CT"}],
                   "pipelines": ["ct-bone"]}],
    }  # fmt: skip
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(routing), encoding="utf-8")
    node.config.update(
        {
            "assembly": {"quiet_time_s": 1.0, "quiet_time_by_calling_ae": {"ORTHANC": 1.0},
                         "check_interval_s": 0.2},
            "inference": {"model_dirs": [str(models)], "providers": "cpu"},
            "routing": {"file": str(path)},
            "delivery": {"poll_interval_s": 0.1, "backoff_initial_s": 0.5},
        }
    )  # fmt: skip
    node.config_path.write_text(yaml.safe_dump(node.config), encoding="utf-8")
    node.start(timeout=60)
    return node, orthanc


def _backfill(node: CdsNode, *args: str) -> list[str]:
    return [sys.executable, "-m", "cds", "backfill", "orthanc", "--since", SINCE,
            "--until", UNTIL, *args, "--config", str(node.config_path),
            "--home", str(node.home)]  # fmt: skip


def _processed_once(node: CdsNode, uids: list[str]) -> list[dict[str, Any]]:
    studies = []
    for uid in uids:
        s = node.wait_study(uid, lambda s: s["state"] in ("done", "failed"), 120, "study run")
        assert s["state"] == "done", s["history"]
        jobs = node.http.get("/api/jobs", params={"study_key": s["study_key"]}).json()
        assert len(jobs) == 1, jobs  # processed once
        assert s["instance_count"] == 4
        studies.append(s)
    return studies


def _retrieves(node: CdsNode) -> list[dict[str, Any]]:
    path = load_settings(node.config_path, node.home).audit_path
    return [dict(r.detail) for r in read_records(path) if r.detail.get("op") == "retrieve"]


def test_a_backfill_runs_each_study_once_at_its_rate_and_delivers_nothing(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
) -> None:
    """issue 22 (backfill of N studies; the rate limit measured; no delivery by default)."""
    node, orthanc = _node(tmp_path, node_factory, orthanc_factory)
    n, rate = 4, 40.0  # one start every 1.5 s
    uids = _studies(tmp_path / "data", orthanc, n)
    run = subprocess.run(_backfill(node, "--rate", "40/min", "--max-associations", "2"),
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"{n}/{n} retrieved, 0 failed" in run.stdout

    studies = _processed_once(node, uids)
    assert len(node.studies()) == n  # the March study was not fetched
    for s in studies:
        assert node.deliveries(s["study_key"]) == []  # retrospective: observatory only
    starts = sorted(d["started_at"] for d in _retrieves(node))
    assert len(starts) == n
    expected = (n - 1) * 60.0 / rate
    print(f"rate: {n} starts over {starts[-1] - starts[0]:.3f} s, expected {expected:.3f} s")
    assert abs((starts[-1] - starts[0]) - expected) <= 0.05 * expected, starts

    (status,) = node.http.get("/api/backfill").json()
    assert (status["total"], status["counts"]["retrieved"], status["processed"]) == (n, n, n)
    cli = subprocess.run([*_backfill(node)[:4], "status", "--json", "--config",
                          str(node.config_path), "--home", str(node.home)],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert json.loads(cli.stdout)[0]["counts"] == status["counts"]
    assert not node.log_problems()


def test_a_backfill_killed_mid_way_resumes_and_runs_each_study_once(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
) -> None:
    """issue 22 (kill -9 mid-way, then resume: each study once; --deliver delivers)."""
    node, orthanc = _node(tmp_path, node_factory, orthanc_factory)
    n = 4
    uids = _studies(tmp_path / "data", orthanc, n)
    args = _backfill(node, "--rate", "30/min", "--deliver")
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def some_retrieved() -> bool:
            runs = node.http.get("/api/backfill").json()
            return bool(runs) and runs[0]["counts"]["retrieved"] >= 1

        wait_for(some_retrieved, 60, 0.05, "a first study retrieved")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    (mid,) = node.http.get("/api/backfill").json()
    assert mid["counts"]["retrieved"] < n, mid  # killed mid-way

    again = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    studies = _processed_once(node, uids)
    for s in studies:

        def delivered(key: str = s["study_key"]) -> bool:
            rows = node.deliveries(key)
            return bool(rows) and all(d["state"] == "delivered" for d in rows)

        wait_for(delivered, 60, 0.2, "results delivered (--deliver)")
    (status,) = node.http.get("/api/backfill").json()
    assert status["counts"]["retrieved"] == n
    assert status["processed"] == n
    assert not node.log_problems()


def test_a_backfill_by_c_get_runs_each_study_once(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
) -> None:
    """issue 22 (C-GET where the archive prefers it): ``retrieve: get``; Orthanc sends
    the instances on the C-GET's own association, which the node's receiver code stores
    (the spool holds each data set as Orthanc has it); each study run once; the audit
    names C-FIND and C-GET."""
    node, orthanc = _node(
        tmp_path, node_factory, orthanc_factory, lambda o: dimse_archive(o, retrieve="get")
    )
    n = 3
    uids = _studies(tmp_path / "data", orthanc, n)
    run = subprocess.run(_backfill(node, "--rate", "120/min"),
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"{n}/{n} retrieved, 0 failed" in run.stdout
    _processed_once(node, uids)
    assert len(node.studies()) == n
    assert_spooled_as_held(node, orthanc)
    retrieves = _retrieves(node)
    assert [(d["protocol"], d["instances"], d["failed"]) for d in retrieves] == [
        ("C-GET", 4, 0)
    ] * n
    assert _queries(node) == ["C-FIND"]
    assert not node.log_problems()


def _dicom_tls(orthanc: Orthanc, pki: Path) -> Orthanc:
    """Orthanc restarted with DICOM TLS on its DICOM port, requiring a client
    certificate of the test CA."""
    orthanc.stop()
    config = json.loads(orthanc.config_path.read_text(encoding="utf-8"))
    config.update({"DicomTlsEnabled": True, "DicomTlsCertificate": str(pki / "server.crt"),
                   "DicomTlsPrivateKey": str(pki / "server.key"),
                   "DicomTlsTrustedCertificates": str(pki / "ca.crt"),
                   "DicomTlsRemoteCertificateRequired": True})  # fmt: skip
    orthanc.config_path.write_text(json.dumps(config), encoding="utf-8")
    orthanc.http = httpx.Client(base_url=f"http://127.0.0.1:{orthanc.http_port}", timeout=60)
    return orthanc.start()


def test_a_backfill_by_c_get_over_dicom_tls(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    pki: Path,
) -> None:
    """issue 22 (TLS for the DIMSE archive association): Orthanc speaks only DICOM TLS and
    wants our certificate; the archive entry's ``tls`` gives it, and C-FIND and C-GET go
    over TLS. Without the CA that signs Orthanc's certificate the run stops, exit 1, with
    a line naming the archive and its ``tls`` field, and no traceback."""
    tls = {"enabled": True, "ca_file": str(pki / "ca.crt"),
           "cert_file": str(pki / "client.crt"), "key_file": str(pki / "client.key")}  # fmt: skip
    node, orthanc = _node(
        tmp_path, node_factory, orthanc_factory,
        lambda o: dimse_archive(o, retrieve="get", tls={"enabled": True}),
    )  # fmt: skip
    uids = _studies(tmp_path / "data", _dicom_tls(orthanc, pki), 2)
    untrusted = subprocess.run(_backfill(node), capture_output=True, text=True, timeout=120,
                               check=False)  # fmt: skip
    assert untrusted.returncode == 1, (untrusted.stdout, untrusted.stderr)
    assert "Traceback" not in untrusted.stderr, untrusted.stderr
    assert "backfill orthanc: archive ORTHANC@127.0.0.1:" in untrusted.stderr, untrusted.stderr
    assert "TLS handshake failed (check archives.orthanc.tls:" in untrusted.stderr

    path = Path(node.config["routing"]["file"])
    routing = yaml.safe_load(path.read_text(encoding="utf-8"))
    routing["archives"]["orthanc"]["tls"] = tls
    path.write_text(yaml.safe_dump(routing), encoding="utf-8")
    run = subprocess.run(_backfill(node), capture_output=True, text=True, timeout=120,
                         check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "2/2 retrieved, 0 failed" in run.stdout
    _processed_once(node, uids)
    assert [d["protocol"] for d in _retrieves(node)] == ["C-GET"] * 2
    assert not node.log_problems()


def _queries(node: CdsNode) -> list[str]:
    path = load_settings(node.config_path, node.home).audit_path
    return [str(r.detail["op"]) for r in read_records(path) if r.event == AuditEvent.QUERY]


def assert_spooled_as_held(node: CdsNode, orthanc: Orthanc) -> None:
    """Every instance Orthanc holds in January is in the node's spool, its data set
    byte for byte as Orthanc has it."""
    for study in orthanc.study_ids():
        tags = orthanc.http.get(f"/studies/{study}").json()["MainDicomTags"]
        if not tags["StudyDate"].startswith("202401"):
            continue
        for inst in orthanc.http.get(f"/studies/{study}/instances").json():
            raw = orthanc.http.get(f"/instances/{inst['ID']}/file").content
            uid = inst["MainDicomTags"]["SOPInstanceUID"]
            assert spooled_file_for(node.home, uid, split_part10(raw)[1]) is not None, uid
