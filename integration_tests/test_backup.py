"""issue 23: back up a running node's home and restore it (``cds admin backup|restore``).

A node receives a real CT study from DCMTK, runs the reference models and delivers the
results to Orthanc. It is backed up while it runs; then stopped, its home wiped,
restored and started again: the study (same key), its jobs, results, deliveries and the
audit trail are all back, ``cds audit verify`` passes, and nothing is sent twice.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from integration_tests.conftest import CdsNode, Orthanc
from integration_tests.support import free_port
from integration_tests.test_roundtrip import (
    SERIES,
    all_in,
    node_overrides,
    result_series,
    send_series_with_dcmsend,
    study_key_of,
    wait_deliveries,
)

pytestmark = pytest.mark.integration


def cds(node: CdsNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds", *args, "--config", str(node.config_path),
         "--home", str(node.home)],
        capture_output=True, text=True, timeout=300, check=False, cwd=node.workdir,
    )  # fmt: skip


def tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def refusals_before_the_restore(node: CdsNode, dest: Path) -> None:
    """Restore refuses while the node runs, then (stopped) into a home that is not empty;
    leaves the node stopped."""
    refused = cds(node, "admin", "restore", str(dest))
    assert refused.returncode == 1
    assert "running" in refused.stderr
    assert "Traceback" not in refused.stderr
    node.stop()
    refused = cds(node, "admin", "restore", str(dest))
    assert refused.returncode == 1
    assert "empty home" in refused.stderr, refused.stderr


@pytest.mark.skipif(not SERIES.is_dir(), reason=f"corpus series missing: {SERIES}")
def test_backup_while_running_then_restore_into_a_wiped_home(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
) -> None:
    """Backup of a running node; stop, wipe, restore, start: everything is back."""
    pacs_port = free_port()
    node = node_factory(node_overrides(tmp_path, pacs_port))
    orthanc = orthanc_factory(node, dicom_port=pacs_port)
    study_uid = send_series_with_dcmsend(node, 6)
    key = study_key_of(node, study_uid)
    delivered = wait_deliveries(node, key, all_in("delivered"), 120, "results delivered")
    held = {m: set(u) for m, u in result_series(orthanc, orthanc.study_ids()[0]).items()}
    assert held, "no result reached Orthanc"
    jobs_before = node.http.get("/api/jobs", params={"study_key": key}).json()
    spool_before = tree(node.home / "spool" / "studies")
    results_before = tree(node.home / "results")

    # the node runs while it is backed up
    dest = tmp_path / "backup"
    out = cds(node, "admin", "backup", str(dest))
    assert out.returncode == 0, out.stderr
    assert "audit trail" in out.stdout
    assert "verified" in out.stdout
    assert node.running
    assert node.health().status_code == 200
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["studies"] == 1
    assert manifest["counts"]["deliveries"] == len(delivered)
    assert manifest["missing"] == []
    assert oct(dest.stat().st_mode & 0o777) == "0o700"  # patient images and keys inside

    refusals_before_the_restore(node, dest)
    shutil.rmtree(node.home)  # the disk is lost
    node.home.mkdir()

    out = cds(node, "admin", "restore", str(dest))
    assert out.returncode == 0, out.stderr
    assert "verified" in out.stdout
    assert tree(node.home / "spool" / "studies") == spool_before
    assert tree(node.home / "results") == results_before
    verified = cds(node, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "intact" in verified.stdout

    node.start()
    study = node.study(key)  # same node.key: the same study key
    assert study["state"] == "done"
    assert study["study_instance_uid"] == study_uid
    jobs_after = node.http.get("/api/jobs", params={"study_key": key}).json()
    assert [(j["job_id"], j["state"]) for j in jobs_after] == [
        (j["job_id"], j["state"]) for j in jobs_before
    ]
    after = node.deliveries(key)
    assert {(d["delivery_id"], d["state"]) for d in after} == {
        (d["delivery_id"], d["state"]) for d in delivered
    }
    # nothing is sent again: Orthanc holds the same result objects
    assert {m: set(u) for m, u in result_series(orthanc, orthanc.study_ids()[0]).items()} == held
    assert cds(node, "audit", "verify").returncode == 0
    events = [e["event"] for e in json.loads(cds(node, "audit", "--json").stdout)]
    assert "export" in events
    assert "config_changed" in events
    assert not node.log_problems()


def test_restore_refuses_a_damaged_backup_naming_the_file(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """A file changed after the backup: restore names it and writes nothing."""
    node = node_factory()
    dest = tmp_path / "backup"
    assert cds(node, "admin", "backup", str(dest)).returncode == 0
    node.stop()
    audit = dest / "audit" / "audit.jsonl"
    audit.write_bytes(audit.read_bytes().replace(b"application_start", b"application_stop"))
    shutil.rmtree(node.home)
    out = cds(node, "admin", "restore", str(dest))
    assert out.returncode == 1
    assert "audit/audit.jsonl does not match its SHA-256" in out.stderr
    assert not node.home.exists() or not any(node.home.iterdir())
    not_a_backup = cds(node, "admin", "restore", str(tmp_path))
    assert not_a_backup.returncode == 1
    assert "not a cds backup" in not_a_backup.stderr


def test_backup_of_a_postgresql_store_says_to_use_pg_dump(tmp_path: Path) -> None:
    """PostgreSQL: refused with the pg_dump command, before any connection is tried."""
    config = tmp_path / "cds.yaml"
    config.write_text(
        yaml.safe_dump(
            {"store": {"backend": "postgresql", "url": "postgresql://cds@127.0.0.1:1/cds"}}
        ),
        encoding="utf-8",
    )
    for verb in ("backup", "restore"):
        out = subprocess.run(
            [sys.executable, "-m", "cds", "admin", verb, str(tmp_path / "b"),
             "--config", str(config), "--home", str(tmp_path / "home")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 1, out.stderr
        assert "pg_dump" in out.stderr
        assert "Traceback" not in out.stderr
