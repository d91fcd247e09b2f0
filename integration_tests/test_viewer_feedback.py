"""issue 17 (item 3): corrections made in the viewer come back as feedback.

The whole loop with real peers: Orthanc is the PACS (DICOMweb plugin, and the Lua
forward rule an admin installs, ``deploy/orthanc/forward-to-cds.lua``); the real node
runs cds-ref-blob-detect on a CT Orthanc sends it and delivers its SR (one box per
finding) back to Orthanc; OHIF 3 (``../shared/viewer``'s cached build, served by nginx
as its check.sh does, over this Orthanc) opens the study in headless Chromium and
hydrates the SR; ``viewer_edit.mjs`` drags one box's corner by (+3, +2) pixels, deletes
another box and saves; OHIF stores a new SR in Orthanc (STOW-RS), Orthanc forwards it
to the node. The node records ``correct`` with the new outline (in source pixels, where
the corner was dragged to within a pixel) for the resized finding, ``reject`` for the
deleted one, ``accept`` for the others, by ``AE:ORTHANC``, and the observatory counts them.

Skipped when the viewer is not set up (``../shared/viewer/setup.sh``: no setup.env, or a
binary it names is gone), failed instead on CI (``CI=true``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pydicom
import pytest
import yaml

from cds.domain import ImageBox
from cds.feedback.edited import read_groups
from integration_tests.conftest import CdsNode, Orthanc, wait_for
from integration_tests.support import CORPUS, REPO_ROOT, free_port

pytestmark = pytest.mark.integration

VIEWER = (REPO_ROOT / ".." / "shared" / "viewer").resolve()
CACHE = Path(os.environ.get("CDS_VIEWER_CACHE", "~/.cache/cds-viewer")).expanduser()
DRIVER = Path(__file__).with_name("viewer_edit.mjs")
FORWARD = REPO_ROOT / "deploy" / "orthanc" / "forward-to-cds.lua"
CT = CORPUS / "ct" / "CT_small.dcm"  # one 128 x 128 slice: five well separated boxes
MODEL = "cds-ref-blob-detect"
DRAG = (3, 2)  # source pixels the bottom-right corner of the edited box is dragged by


def _unavailable(why: str) -> NoReturn:
    """Skip, or fail on CI, where a missing viewer set-up would hide a broken check."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: the viewer is not set up: {why}")
    pytest.skip(f"viewer not set up: {why}")


@dataclass(frozen=True)
class Viewer:
    dist: Path  # OHIF's prebuilt dist/
    playwright: Path
    chromium: Path
    nginx: Path
    node: str


@pytest.fixture
def viewer() -> Viewer:
    """What ../shared/viewer/setup.sh installed (its setup.env), as check.sh reads it."""
    env_file = CACHE / "setup.env"
    if not env_file.exists():
        _unavailable(f"{env_file} missing (run ../shared/viewer/setup.sh)")
    env = dict(
        line.split("=", 1)
        for line in env_file.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    )
    node = shutil.which("node")
    v = Viewer(
        Path(env.get("OHIF_DIST", "")),
        Path(env.get("PLAYWRIGHT_CORE", "")),
        Path(env.get("CHROMIUM", "")),
        Path(env.get("NGINX", "")),
        node or "",
    )
    needed = [v.dist / "index.html", v.playwright / "package.json", v.chromium, v.nginx]
    needed += [VIEWER / "nginx.conf.template", VIEWER / "app-config.js"]
    if missing := [str(p) for p in needed if not p.exists()] + ([] if node else ["node"]):
        _unavailable(f"missing {', '.join(missing)} (run ../shared/viewer/setup.sh again)")
    return v


@dataclass(frozen=True)
class Ohif:
    url: str
    viewer: Viewer


@pytest.fixture
def ohif_factory(tmp_path: Path, viewer: Viewer) -> Iterator[Callable[[Orthanc], Ohif]]:
    """``make(orthanc)`` -> OHIF served by nginx over that Orthanc's DICOMweb, configured
    as ../shared/viewer/check.sh does (its nginx template and app-config.js)."""
    procs: list[subprocess.Popen[bytes]] = []

    def make(orthanc: Orthanc) -> Ohif:
        work = tmp_path / "nginx"
        (work / "nginx-tmp").mkdir(parents=True)
        port = free_port()
        conf = (VIEWER / "nginx.conf.template").read_text(encoding="utf-8")
        for key, value in {
            "@WORK@": str(work),
            "@PORT@": str(port),
            "@DIST@": str(viewer.dist),
            "@ORTHANC_HTTP@": str(orthanc.http_port),
            "@APP_CONFIG@": str(VIEWER / "app-config.js"),
            "@MIME_TYPES@": "/etc/nginx/mime.types",
            "@USER_DIRECTIVE@": "user root;" if os.geteuid() == 0 else "",
        }.items():
            conf = conf.replace(key, value)
        (work / "nginx.conf").write_text(conf, encoding="utf-8")
        log = (work / "nginx-error.log").open("ab")
        procs.append(
            subprocess.Popen(
                [str(viewer.nginx), "-p", str(work), "-c", str(work / "nginx.conf")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        )
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if procs[-1].poll() is not None:
                pytest.fail(f"nginx exited: {(work / 'nginx-error.log').read_text()[-2000:]}")
            try:
                return httpx.get(f"{url}/app-config.js", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 20, 0.1, "nginx to serve OHIF")
        return Ohif(url, viewer)

    yield make
    for p in procs:  # SIGTERM: nginx's master stops its worker too (SIGKILL would orphan it)
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _overrides(tmp_path: Path, pacs_port: int) -> dict[str, Any]:
    models = tmp_path / "models"
    models.mkdir()
    (models / MODEL).symlink_to(REPO_ROOT / "models" / MODEL, target_is_directory=True)
    routing = {
        "destinations": {"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}},
        "pipelines": {"blobs": {"model": MODEL, "results": ["SR"], "destinations": ["pacs"]}},
        "rules": [
            {
                "name": "CT",
                "match": [{"attribute": "Modality", "equals": "CT"}],
                "pipelines": ["blobs"],
            }
        ],
    }
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(routing), encoding="utf-8")
    return {
        "assembly": {"quiet_time_s": 1.0, "quiet_time_by_calling_ae": {"ORTHANC": 1.0}},
        "inference": {"model_dirs": [str(models)], "providers": "cpu"},
        "routing": {"file": str(tmp_path / "routing.yaml")},
        "delivery": {"poll_interval_s": 0.1, "backoff_initial_s": 0.5},
    }


def _instance(orthanc: Orthanc, sop_uid: str) -> pydicom.Dataset | None:
    found = orthanc.http.post("/tools/lookup", content=sop_uid).json()
    if not found:
        return None
    raw = orthanc.http.get(f"/instances/{found[0]['ID']}/file").content
    return pydicom.dcmread(io.BytesIO(raw))


def _observatory(node: CdsNode) -> dict[str, int]:
    rows = [r for r in node.http.get("/api/observatory/models").json() if r["model"] == MODEL]
    return {k: sum(int(r[k]) for r in rows) for k in ("accepted", "corrected", "rejected")}


def _results_in_pacs(node: CdsNode, orthanc: Orthanc) -> tuple[str, str, dict[str, ImageBox]]:
    """The PACS sends the CT; the node's SR comes back into the same Orthanc study.
    Returns the study key, the SR's SOP Instance UID and each finding's box in it."""
    study_id = orthanc.upload([CT])
    orthanc.send_to_cds(study_id)
    study_uid = str(pydicom.dcmread(CT, stop_before_pixels=True).StudyInstanceUID)
    study = node.wait_study(study_uid, lambda s: s["state"] in ("done", "failed"), 60)
    assert study["state"] == "done", study["history"]
    key = str(study["study_key"])
    wait_for(
        lambda: [d for d in node.deliveries(key) if d["state"] == "delivered"],
        60,
        0.2,
        "the SR delivered to Orthanc",
    )
    findings = node.http.get(f"/api/studies/{key}/findings").json()
    (sr_uid,) = {f["result_sop_instance_uid"] for f in findings}
    ours = _instance(orthanc, sr_uid)
    assert ours is not None, "our SR is in Orthanc"
    boxes = {g.tracking_uid: g.box for g in read_groups(ours) if g.box is not None}
    assert sorted(boxes) == sorted(f["tracking_uid"] for f in findings)
    assert len(boxes) >= 3, "the detector finds at least three boxes on this slice"
    return key, sr_uid, boxes


def _edit_in_ohif(
    ohif: Ohif, *, study_uid: str, sr_uid: str, out: Path, new_series: bool
) -> dict[str, Any]:
    """viewer_edit.mjs: OHIF hydrates our SR, its first measurement resized by DRAG, its
    second deleted, saved (into our SR's series, or as a new series); its report.json."""
    run = subprocess.run(
        [
            ohif.viewer.node,
            str(DRIVER),
            *("--viewer", ohif.url, "--study", study_uid, "--sr", sr_uid, "--out", str(out)),
            *("--playwright", str(ohif.viewer.playwright)),
            *("--chromium", str(ohif.viewer.chromium)),
            *("--timeout", "60", "--edit", "0", "--drag", f"{DRAG[0]},{DRAG[1]}"),
            *("--delete", "1", *(["--new-series"] if new_series else [])),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(run.stdout[-2000:], run.stderr[-2000:], f"screenshots: {out}")
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert run.returncode == 0, report.get("error")
    assert report["console_errors"] == [], report["console_errors"]
    return report


def _finding_at(boxes: dict[str, ImageBox], box: list[float]) -> str:
    """The finding whose box OHIF showed at ``box`` (source pixels)."""
    (uid,) = [
        u
        for u, b in boxes.items()
        if all(abs(p - q) < 0.01 for p, q in zip((b.x0, b.y0, b.x1, b.y1), box, strict=True))
    ]
    return uid


@pytest.mark.parametrize("new_series", [False, True], ids=["into-our-series", "new-series"])
def test_i17_box_resized_and_box_deleted_in_ohif_come_back_as_correct_and_reject(
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    ohif_factory: Callable[[Orthanc], Ohif],
    tmp_path: Path,
    new_series: bool,
) -> None:
    """Saved with OHIF's defaults, the new SR goes into our SR's series and names it in
    Predecessor Documents; saved as a new series, it names none of our objects and is
    recognised by our labels on our image. Either way every tracking UID is new."""
    if not CT.exists():
        pytest.skip(f"corpus image missing: {CT}")
    if not (REPO_ROOT / "models" / MODEL / "model.onnx").exists():
        pytest.skip(f"{MODEL}: model.onnx missing")
    pacs_port = free_port()
    node = node_factory(_overrides(tmp_path, pacs_port))
    orthanc = orthanc_factory(node, dicom_port=pacs_port, dicomweb=True, lua_scripts=(FORWARD,))
    ohif = ohif_factory(orthanc)
    key, sr_uid, boxes = _results_in_pacs(node, orthanc)
    study_uid = str(pydicom.dcmread(CT, stop_before_pixels=True).StudyInstanceUID)
    assert _observatory(node) == {"accepted": 0, "corrected": 0, "rejected": 0}

    # the radiologist: the first box resized, the second deleted, saved
    report = _edit_in_ohif(
        ohif,
        study_uid=study_uid,
        sr_uid=sr_uid,
        out=tmp_path / "ohif",
        new_series=new_series,
    )
    resized = _finding_at(boxes, report["edited"]["box_before"])
    deleted = _finding_at(boxes, report["deleted"]["box"])
    saved = report["saved"]["sop_instance_uid"]
    stored = wait_for(lambda: _instance(orthanc, saved), 30, 0.2, "OHIF's SR stored in Orthanc")
    # what OHIF wrote: none of our tracking UIDs; our SR as predecessor only in its series
    assert not {g.tracking_uid for g in read_groups(stored)} & set(boxes)
    predecessors = [
        str(ref.ReferencedSOPInstanceUID)
        for study in stored.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    ]
    assert predecessors == ([] if new_series else [sr_uid])

    # Orthanc forwards it (the Lua rule); the node records one verdict per finding
    def verdicts() -> list[dict[str, Any]] | None:
        rows = node.http.get("/api/feedback", params={"study_key": key}).json()
        return rows if len(rows) >= len(boxes) else None

    fb = {f["tracking_uid"]: f for f in wait_for(verdicts, 60, 0.2, "the feedback recorded")}
    assert len(fb) == len(boxes)
    assert fb[resized]["action"] == "correct"
    assert fb[deleted]["action"] == "reject"
    kept = set(boxes) - {resized, deleted}
    assert {fb[u]["action"] for u in kept} == {"accept"}
    assert all(f["corrected_box"] is None for u, f in fb.items() if u != resized)
    assert {f["user"] for f in fb.values()} == {"AE:ORTHANC"}
    assert {f["source"] for f in fb.values()} == {"dicom"}
    assert {f["result_sop_instance_uid"] for f in fb.values()} == {sr_uid}
    assert all(saved in f["reason"] for f in fb.values())

    # the new outline: in source pixels, what OHIF shows, where the corner was dragged to
    box, before = fb[resized]["corrected_box"], boxes[resized]
    assert (box["sop_instance_uid"], box["frame"]) == (before.sop_uid, 1)
    got = [box["x0"], box["y0"], box["x1"], box["y1"]]
    assert got == pytest.approx(report["edited"]["box_after"], abs=1e-3)
    assert got[:2] == pytest.approx([before.x0, before.y0], abs=1e-3)  # that corner stayed
    assert got[2:] == pytest.approx([before.x1 + DRAG[0], before.y1 + DRAG[1]], abs=1.0)
    assert fb[resized]["corrected_label"] is None  # the finding itself was kept

    # the observatory counts them; the saved SR is feedback, not a reason to run again
    assert _observatory(node) == {"accepted": len(kept), "corrected": 1, "rejected": 1}
    assert len(node.http.get("/api/jobs", params={"study_key": key}).json()) == 1
    seen = [h["detail"] for h in node.study(key)["history"] if h["kind"] == "dicom_feedback"]
    assert [d.split()[0] for d in seen] == [saved]  # our own SR was not sent back
    assert node.log_problems() == []
