"""issue 22 (backfill from a DICOMweb archive), against a real Orthanc with its DICOMweb
plugin as the archive (``archives: {NAME: {dicomweb_url: ...}}``) and the real node:

- ``cds backfill`` finds the January studies by QIDO-RS and fetches each by WADO-RS;
  the instances enter through the node's receiver code (the spool holds each data set
  as Orthanc has it), each study is routed and run once, a second run fetches nothing
  again, and the audit trail records the query (QIDO-RS) and each retrieve (WADO-RS);
- a DICOMweb URL nobody answers at, and an Orthanc that wants a password (none given,
  then a wrong one): a one-line error naming the archive's field (``dicomweb_url``,
  ``auth``), exit 1, no traceback; the right password then fetches the study.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from integration_tests.conftest import DICOMWEB_PLUGIN, CdsNode, Orthanc
from integration_tests.support import free_port
from integration_tests.test_backfill import (
    _backfill,
    _node,
    _processed_once,
    _queries,
    _retrieves,
    _studies,
    assert_spooled_as_held,
)

pytestmark = pytest.mark.integration

REFUSED = 1
PASSWORD = "Xq7-backfill-pw"  # noqa: S105 (the throw-away Orthanc's)


def web_archive(orthanc: Orthanc, **extra: Any) -> dict[str, Any]:
    return {"dicomweb_url": f"http://127.0.0.1:{orthanc.http_port}/dicom-web", **extra}


def test_a_backfill_through_dicomweb_runs_each_study_once(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
) -> None:
    """issue 22 (a QIDO-RS/WADO-RS client for archives; backfill of N studies through it;
    the audit records each query and retrieve)."""
    node, orthanc = _node(tmp_path, node_factory, orthanc_factory, web_archive, dicomweb=True)
    n = 3
    uids = _studies(tmp_path / "data", orthanc, n)
    run = subprocess.run(_backfill(node, "--rate", "120/min", "--max-associations", "2"),
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"{n}/{n} retrieved, 0 failed" in run.stdout
    studies = _processed_once(node, uids)
    assert len(node.studies()) == n  # the March study was not fetched
    assert {s["calling_ae_title"] for s in studies} == {"DICOMWEB"}
    assert_spooled_as_held(node, orthanc)
    retrieves = _retrieves(node)
    assert (
        sorted((d["protocol"], d["instances"], d["failed"]) for d in retrieves)
        == [("WADO-RS", 4, 0)] * n
    )
    assert _queries(node) == ["QIDO-RS"]

    # the same run again: every study already retrieved, nothing fetched or run twice
    again = subprocess.run(_backfill(node), capture_output=True, text=True, timeout=120,
                           check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert len(_retrieves(node)) == n
    _processed_once(node, uids)
    (status,) = node.http.get("/api/backfill").json()
    assert (status["total"], status["counts"]["retrieved"], status["processed"]) == (n, n, n)
    assert not node.log_problems()


def _with_password(orthanc: Orthanc, password: str) -> Orthanc:
    """Orthanc asking HTTP basic auth of user ``cds`` (restarted with that setting)."""
    orthanc.stop()
    config = json.loads(orthanc.config_path.read_text(encoding="utf-8"))
    config.update({"AuthenticationEnabled": True, "RegisteredUsers": {"cds": password}})
    orthanc.config_path.write_text(json.dumps(config), encoding="utf-8")
    orthanc.http = httpx.Client(
        base_url=f"http://127.0.0.1:{orthanc.http_port}", auth=("cds", password), timeout=60
    )
    return orthanc.start()


def _route(node: CdsNode, archive: dict[str, Any]) -> None:
    path = Path(node.config["routing"]["file"])
    routing = yaml.safe_load(path.read_text(encoding="utf-8"))
    routing["archives"] = {"orthanc": archive}
    path.write_text(yaml.safe_dump(routing), encoding="utf-8")


def _refused(node: CdsNode, field: str, *words: str) -> None:
    run = subprocess.run(_backfill(node), capture_output=True, text=True, timeout=120,
                         check=False)  # fmt: skip
    assert run.returncode == REFUSED, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    assert f"archives.orthanc.{field}:" in run.stderr, run.stderr
    for w in words:
        assert w in run.stderr, run.stderr


@pytest.mark.skipif(not DICOMWEB_PLUGIN.exists(), reason="Orthanc DICOMweb plugin missing")
def test_a_bad_dicomweb_url_or_password_is_a_clear_error(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
) -> None:
    """issue 22 (a bad DICOMweb URL or a 401: a clear CLI error naming the archive and
    the field, never a traceback)."""
    node, orthanc = _node(tmp_path, node_factory, orthanc_factory, web_archive, dicomweb=True)
    uids = _studies(tmp_path / "data", orthanc, 1)

    _route(node, {"dicomweb_url": f"http://127.0.0.1:{free_port()}/dicom-web"})
    _refused(node, "dicomweb_url", "no answer from", "QIDO-RS")
    _route(node, {"dicomweb_url": f"http://127.0.0.1:{orthanc.http_port}/no-such-service"})
    _refused(node, "dicomweb_url", "HTTP 404", "service root")

    _with_password(orthanc, PASSWORD)
    _route(node, web_archive(orthanc))
    _refused(node, "auth", "HTTP 401", "no credentials given")
    secret = tmp_path / "orthanc.pw"
    secret.write_text("wrong\n", encoding="utf-8")
    _route(node, web_archive(orthanc, auth={"username": "cds", "password_file": str(secret)}))
    _refused(node, "auth", "HTTP 401", "check them")
    _route(node, web_archive(orthanc, auth={"username": "cds", "password_file": str(tmp_path)}))
    _refused(node, "auth.password_file", "cannot read the file")

    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    _route(node, web_archive(orthanc, auth={"username": "cds", "password_file": str(secret)}))
    run = subprocess.run(_backfill(node), capture_output=True, text=True, timeout=120,
                         check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    _processed_once(node, uids)
    assert PASSWORD not in node.log_text()
    assert not node.log_problems()
