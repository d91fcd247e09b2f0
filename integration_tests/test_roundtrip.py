"""issue 5: the PACS round trip. Orthanc (the PACS) sends a real CT study to the node,
the routed reference models run, and the advisory result objects come back into the
same study in Orthanc, durably (retry with backoff, dead letter, admin retry, restart)
and without duplicates. Also: ``cds demo`` does the same round trip with one command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml

from integration_tests.conftest import ORTHANC_BIN, CdsNode, Orthanc, wait_for
from integration_tests.support import CORPUS, dcmsend, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
SERIES = CORPUS / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
ADVISORY = ("AI ADVISORY - ", "IA INDICATIF - ")
QUIET_S = 1.5
RESULT_MODALITIES = {"SEG", "SR", "PR", "OT"}  # SC objects carry Modality OT

needs_series = pytest.mark.skipif(not SERIES.is_dir(), reason=f"corpus series missing: {SERIES}")


def routing_file(folder: Path, pacs_port: int) -> Path:
    """deploy/routing.example.yaml's adult CT rule; both CT models; results to ``pacs``."""
    doc = yaml.safe_load((REPO / "deploy" / "routing.example.yaml").read_text(encoding="utf-8"))
    doc["destinations"] = {"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}}
    doc["pipelines"] = {
        "ct-bone": {"model": "cds-ref-ct-bone", "results": ["SEG", "SR"], "destinations": ["pacs"]},
        "ct-hyperdensity": {
            "model": "cds-ref-blob-detect",
            "results": ["GSPS", "SR", "SC"],
            "destinations": ["pacs"],
        },
    }
    doc["rules"] = [r for r in doc["rules"] if r["name"] == "adult CT"]
    path = folder / "routing.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def node_overrides(tmp_path: Path, pacs_port: int, **delivery: float) -> dict[str, Any]:
    models = tmp_path / "models"  # only the two CT models: the node starts faster
    if not models.exists():
        models.mkdir()
        for name in ("cds-ref-ct-bone", "cds-ref-blob-detect"):
            (models / name).symlink_to(REPO / "models" / name, target_is_directory=True)
    return {
        "assembly": {"quiet_time_s": QUIET_S, "quiet_time_by_calling_ae": {"ORTHANC": QUIET_S}},
        "inference": {"model_dirs": [str(models)], "providers": "cpu"},
        "routing": {"file": str(routing_file(tmp_path, pacs_port))},
        "delivery": {"poll_interval_s": 0.1, "backoff_initial_s": 0.5, **delivery},
    }


def study_key_of(node: CdsNode, study_uid: str) -> str:
    s = node.wait_study(study_uid, lambda s: s["state"] in ("done", "failed"), 120, "study done")
    assert s["state"] == "done", s["history"]
    return str(s["study_key"])


def wait_deliveries(
    node: CdsNode, key: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str
) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        rows = node.deliveries(key)
        return rows if rows and done(rows) else None

    try:
        return list(wait_for(check, timeout, 0.2, what))
    except BaseException:
        print("deliveries:", node.deliveries(key), "\nnode log:\n", node.log_tail(60))
        raise


def all_in(state: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda rows: all(r["state"] == state for r in rows)


def no_pending(rows: list[dict[str, Any]]) -> bool:
    return not any(r["state"] == "pending" for r in rows)


def ts(value: Any) -> float:
    """A time from the API: epoch seconds or an ISO 8601 string."""
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def result_series(orthanc: Orthanc, study_id: str) -> dict[str, set[str]]:
    """Modality -> SOP Instance UIDs of the non-CT series Orthanc holds in the study."""
    out: dict[str, set[str]] = {}
    for s in orthanc.series(study_id):
        if s["modality"] != "CT":
            out.setdefault(s["modality"], set()).update(s["sop_uids"])
    return out


def send_series_with_dcmsend(node: CdsNode, count: int | None = None) -> str:
    files = sorted(SERIES.iterdir())[:count]
    assert dcmsend(node.dicom_port, node.ae_title, files, calling_ae="MODALITY").returncode == 0
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def check_resend_and_rerun(
    node: CdsNode, orthanc: Orthanc, study_id: str, study_uid: str, held: dict[str, set[str]]
) -> None:
    """A resend of the study and an admin re-run leave Orthanc's result series as they are."""
    key = study_key_of(node, study_uid)
    delivered = set().union(*held.values())
    # resend: Orthanc sends the whole study again, as a PACS may (now with cds' own results
    # in it, which re-opens the study) -> no new object in Orthanc
    orthanc.send_to_cds(study_id)
    time.sleep(QUIET_S + 1)  # past the quiet time: the study is complete or processing
    node.wait_study(study_uid, lambda s: s["state"] == "done", 120, "study done after resend")
    wait_deliveries(node, key, no_pending, 60, "outbox empty after the resend")
    # cds' own results came back with the study: they re-open it, but nothing runs again
    jobs = node.http.get("/api/jobs", params={"study_key": key}).json()
    assert len(jobs) == 2, jobs
    assert result_series(orthanc, study_id) == held
    # re-run: the same inputs and model versions -> the same SOP Instance UIDs
    jobs_before = len(node.http.get("/api/jobs", params={"study_key": key}).json())
    r = node.http.post(f"/api/studies/{key}/rerun")
    assert r.status_code in (200, 202), r.text

    def rerun_done() -> bool:
        jobs = node.http.get("/api/jobs", params={"study_key": key}).json()
        return len(jobs) == jobs_before + 2 and all(j["state"] == "done" for j in jobs)

    try:
        wait_for(rerun_done, 90, 0.2, "re-run jobs done")
    except BaseException:
        print(node.http.get("/api/jobs", params={"study_key": key}).json())
        print(node.study(key)["history"])
        raise
    rows = wait_deliveries(node, key, no_pending, 60, "outbox empty after the re-run")
    assert {x["sop_uid"] for x in rows} == delivered
    assert result_series(orthanc, study_id) == held


@needs_series
def test_i5_orthanc_study_comes_back_with_advisory_results_in_the_same_study(
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    tmp_path: Path,
) -> None:
    """issue 5: Orthanc pushes a real CT to the node; SR, SEG, PR (GSPS) and OT (SC) series
    appear in the same Orthanc study, every one advisory and sent by AE CDS; the API shows
    each object delivered; a resend and a re-run create no duplicate in Orthanc."""
    pacs_port = free_port()
    node = node_factory(node_overrides(tmp_path, pacs_port))
    orthanc = orthanc_factory(node, dicom_port=pacs_port)
    files = sorted(SERIES.iterdir())
    study_id = orthanc.upload(files)
    job = orthanc.send_to_cds(study_id)
    assert job.get("FailedInstancesCount", 0) == 0, job
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    key = study_key_of(node, study_uid)

    rows = wait_deliveries(node, key, all_in("delivered"), 60, "every result delivered")
    assert {r["destination"] for r in rows} == {"pacs"}
    assert {r["study_key"] for r in rows} == {key}
    assert all(r["attempts"] >= 1 and r["delivered_at"] for r in rows)
    assert {r["modality"] for r in rows} == RESULT_MODALITIES
    delivered = {r["sop_uid"] for r in rows}
    assert len(delivered) == len(rows)  # one destination: one row per object

    # Orthanc holds them in the same study (no second study was made)
    assert orthanc.study_ids() == [study_id]
    held = result_series(orthanc, study_id)
    assert set(held) == RESULT_MODALITIES
    assert set().union(*held.values()) == delivered
    series = orthanc.series(study_id)
    ct = [s for s in series if s["modality"] == "CT"]
    assert len(ct) == 1
    assert len(ct[0]["sop_uids"]) == len(files)
    for s in series:
        if s["modality"] != "CT":
            assert s["description"].startswith(ADVISORY), s
    # sent by the node's AE title (delivery.calling_ae_title defaults to dicom.ae_title)
    some = orthanc.http.get(f"/series/{series[-1]['id']}/instances").json()[0]["ID"]
    assert orthanc.http.get(f"/instances/{some}/metadata/RemoteAET").text == node.ae_title
    history = [h["kind"] for h in node.study(key)["history"]]
    assert "delivered" in history

    check_resend_and_rerun(node, orthanc, study_id, study_uid, held)
    assert orthanc.study_ids() == [study_id]
    assert node.log_problems() == []


@needs_series
def test_i5_unreachable_destination_goes_dead_then_admin_retry_delivers(
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    tmp_path: Path,
) -> None:
    """issue 5: nothing listens at the destination -> each delivery is tried
    max_attempts times with a growing backoff, then is dead (history says so) and stays
    dead; once the PACS is up, POST /api/deliveries/{id}/retry delivers it."""
    pacs_port = free_port()  # nothing listens there yet
    node = node_factory(
        node_overrides(
            tmp_path,
            pacs_port,
            max_attempts=3,
            backoff_initial_s=0.4,
            backoff_max_s=5,
            timeout_s=3,
        )
    )
    key = study_key_of(node, send_series_with_dcmsend(node, 8))
    rows = wait_deliveries(node, key, all_in("dead"), 60, "every delivery dead")
    assert {r["modality"] for r in rows} >= {"SEG", "SR"}
    for r in rows:
        assert r["attempts"] == 3, r
        assert str(pacs_port) in (r["last_error"] or ""), r
        assert not r["delivered_at"]
    history = node.study(key)["history"]
    failed = [ts(h["at"]) for h in history if h["kind"] == "delivery_failed"]
    dead = [ts(h["at"]) for h in history if h["kind"] == "delivery_dead"]
    assert len(failed) >= 2, history  # tries 1 and 2 were retried, try 3 was the last
    assert dead, history
    # backoff: 0.4 s after try 1, 0.8 s after try 2 (plus the time of each try)
    assert max(dead) - min(failed) >= 0.4 + 0.8 - 0.1
    assert any("after 3 tries" in h["detail"] for h in history if h["kind"] == "delivery_dead")

    orthanc = orthanc_factory(node, dicom_port=pacs_port)
    time.sleep(1.5)  # dead means dead: nothing is sent until an admin asks
    assert all_in("dead")(node.deliveries(key))
    assert orthanc.study_ids() == []
    for r in rows:
        resp = node.http.post(f"/api/deliveries/{r['delivery_id']}/retry")
        assert resp.status_code in (200, 202), resp.text
    done = wait_deliveries(node, key, all_in("delivered"), 60, "retried deliveries delivered")
    (study_id,) = orthanc.study_ids()
    assert set().union(*result_series(orthanc, study_id).values()) == {r["sop_uid"] for r in done}
    # an unknown delivery is a 404 with a message, not a traceback
    resp = node.http.post("/api/deliveries/no-such-delivery/retry")
    assert resp.status_code == 404
    assert node.log_problems() == []


@needs_series
def test_i5_pending_deliveries_survive_a_node_kill(
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    tmp_path: Path,
) -> None:
    """issue 5: the outbox is durable: results waiting for a PACS that is down are still
    there after kill -9 and go out once the node is back and the PACS is up."""
    pacs_port = free_port()
    node = node_factory(
        node_overrides(
            tmp_path,
            pacs_port,
            max_attempts=1000,
            backoff_initial_s=0.3,
            backoff_max_s=0.6,
            timeout_s=3,
        )
    )
    key = study_key_of(node, send_series_with_dcmsend(node, 8))
    pending = wait_deliveries(
        node,
        key,
        lambda rs: all(r["state"] == "pending" and r["attempts"] >= 1 for r in rs),
        60,
        "deliveries tried and pending",
    )
    node.kill9()
    orthanc = orthanc_factory(node, dicom_port=pacs_port)
    node.start()
    done = wait_deliveries(node, key, all_in("delivered"), 60, "delivered after the restart")
    assert {r["delivery_id"] for r in done} == {r["delivery_id"] for r in pending}
    (study_id,) = orthanc.study_ids()
    assert set().union(*result_series(orthanc, study_id).values()) == {
        r["sop_uid"] for r in pending
    }
    assert node.log_problems() == []


@pytest.mark.skipif(not ORTHANC_BIN.exists(), reason=f"Orthanc not installed ({ORTHANC_BIN})")
def test_i5_cds_demo_shows_the_round_trip(tmp_path: Path) -> None:
    """issue 5: ``cds demo`` exits 0 and reports the SR and SEG series Orthanc now holds."""
    run = subprocess.run(
        [sys.executable, "-m", "cds", "demo", "--slices", "24", "--timeout", "120"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TCP_NODELAY": "1", "TMPDIR": str(tmp_path)},
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    held = re.findall(r"^\s+(\w+)\s+(\d+) instance\(s\)\s+(.*)$", out, re.MULTILINE)
    kinds = {m for m, _, _ in held}
    assert {"CT", "SR", "SEG"} <= kinds, out
    assert ("CT", "24") in {(m, n) for m, n, _ in held}
    assert all(d.startswith(ADVISORY) for m, _, d in held if m != "CT"), out
    # Orthanc is gone when the demo ends: no link to the study, the way to keep it instead
    assert "#study?uuid=" not in out
    assert "cds demo --keep leaves it running to browse" in out
    assert "DEMO^CDS" in out
    assert "Traceback" not in run.stderr
    assert list(tmp_path.glob("cds-demo-*")) == []  # the throw-away folder is gone


def test_i5_cds_demo_without_orthanc_lists_the_local_results(tmp_path: Path) -> None:
    """issue 5: without Orthanc, ``cds demo`` says so and lists the results it wrote;
    issue 14: --no-orthanc is named as the reason (Orthanc may well be installed), and
    --out keeps the result files it lists."""
    kept = tmp_path / "kept"
    run = subprocess.run(
        [sys.executable, "-m", "cds", "demo", "--no-orthanc", "--slices", "12", "--out", str(kept)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Orthanc not used (--no-orthanc)" in run.stdout
    assert "not found" not in run.stdout
    listed = re.findall(r"^\s+(\w+)\s+\d+ object\(s\) in (\S+)$", run.stdout, re.MULTILINE)
    assert {"SR", "SEG"} <= {kind for kind, _ in listed}, run.stdout
    for _, folder in listed:  # still there after the demo ended
        assert Path(folder).parent == kept
        assert list(Path(folder).glob("*.dcm")), folder
    assert list(tmp_path.glob("cds-demo-*")) == []
