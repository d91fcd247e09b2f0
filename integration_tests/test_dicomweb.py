"""issue 22 (DICOMweb), against the real node and a real Orthanc with its DICOMweb plugin:

- STOW-RS in: real files of the shared corpus POSTed to ``/dicomweb/studies`` with a
  plain HTTP client are spooled byte-identical (the data set as sent), a malformed part
  is refused alone in the FailedSOPSequence, and the study is assembled (complete after
  its quiet time) as a C-STORE'd one is;
- STOW-RS delivery: a CT STOW'd into the node is routed, its model runs (a job queued as
  for C-STORE), and the results go to Orthanc's ``/dicom-web/studies`` through a
  ``kind: dicomweb`` destination; Orthanc gives them back byte-identical.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import yaml

from integration_tests.conftest import CdsNode, Orthanc, wait_for
from integration_tests.support import CORPUS, split_part10, spooled_file_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
SERIES = CORPUS / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
NO_META = CORPUS / "malformed" / "ExplVR_LitEndNoMeta.dcm"
QUIET_S = 1.5
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"

needs_corpus = pytest.mark.skipif(
    not (SERIES.is_dir() and NO_META.is_file()), reason=f"corpus missing: {SERIES}, {NO_META}"
)


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    """A STOW-RS body made by hand, as any client would (not with cds' own encoder)."""
    boundary = secrets.token_hex(12)
    chunks = [
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
        for p in parts
    ]
    body = b"".join(chunks) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(node: CdsNode, files: list[bytes]) -> httpx.Response:
    body, content_type = multipart(files)
    url = f"http://127.0.0.1:{node.http_port}/dicomweb/studies"
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    return httpx.post(url, content=body, headers=headers, timeout=120)


def uids_in(response: httpx.Response, tag: str) -> list[str]:
    items = response.json().get(tag, {}).get("Value", [])
    return [i.get("00081155", {}).get("Value", [""])[0] for i in items]


@needs_corpus
def test_stow_in_spools_byte_identical_and_assembles_the_study(
    node_factory: Callable[..., CdsNode],
) -> None:
    """issue 22, STOW-RS in: stored byte-identical, a bad part fails alone, assembled."""
    node = node_factory({"assembly": {"quiet_time_s": QUIET_S}})
    files = sorted(SERIES.iterdir())[:12]
    raws = [f.read_bytes() for f in files]
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    r = stow(node, [*raws[:6], NO_META.read_bytes(), *raws[6:]])
    assert r.status_code == 202, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    sop_uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    assert sorted(uids_in(r, REFERENCED_SOP_SEQUENCE)) == sorted(sop_uids)
    failed = r.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xC210]]
    assert "part 7: C210" in r.headers["warning"]
    for raw, uid in zip(raws, sop_uids, strict=True):
        assert spooled_file_for(node.home, uid, split_part10(raw)[1]) is not None, uid

    study = node.study_by_uid(study_uid)
    assert study is not None
    assert study["instance_count"] == 12
    assert study["calling_ae_title"] == "DICOMWEB"
    done = node.wait_study(study_uid, lambda s: s["state"] == "complete", QUIET_S + 10)
    assert done["instance_count"] == 12
    assert [e["kind"] for e in done["history"]].count("complete") == 1

    # the same instances again: every one stored (identical re-sends), nothing re-opened
    again = stow(node, raws[:3])
    assert again.status_code == 200, again.text
    assert node.study_by_uid(study_uid)["reopened_count"] == 0  # type: ignore[index]
    assert not node.log_problems()
    name = str(pydicom.dcmread(files[0], stop_before_pixels=True).get("PatientName", ""))
    assert not name or name not in node.log_text()
    received = [e for e in node.events() if e.get("event") == "ingest.stow_received"]
    assert [(e["stored"], e["failed"]) for e in received] == [(12, 1), (0, 0)]


def _routing(folder: Path, orthanc: Orthanc) -> Path:
    doc = {
        "destinations": {
            "archive": {
                "kind": "dicomweb",
                "url": f"http://127.0.0.1:{orthanc.http_port}/dicom-web",
            }
        },
        "pipelines": {
            "ct-bone": {"model": "cds-ref-ct-bone", "results": ["SR"], "destinations": ["archive"]}
        },
        "rules": [
            {"name": "any CT", "match": [{"attribute": "Modality", "equals": "CT"}],
             "pipelines": ["ct-bone"]}
        ],
    }  # fmt: skip
    path = folder / "routing.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@needs_corpus
def test_results_go_to_orthanc_by_stow_rs_and_come_back_identical(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
) -> None:
    """issue 22, STOW-RS delivery: results STOW'd to Orthanc's DICOMweb, read back."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "cds-ref-ct-bone").symlink_to(REPO / "models" / "cds-ref-ct-bone")
    node = node_factory(start=False)
    orthanc = orthanc_factory(node, dicomweb=True)
    node.config.update(
        {
            "assembly": {"quiet_time_s": QUIET_S, "check_interval_s": 0.2},
            "inference": {"model_dirs": [str(models)], "providers": "cpu"},
            "routing": {"file": str(_routing(tmp_path, orthanc))},
            "delivery": {"poll_interval_s": 0.1, "backoff_initial_s": 0.5},
        }
    )
    node.config_path.write_text(yaml.safe_dump(node.config), encoding="utf-8")
    node.start(timeout=60)

    files = sorted(SERIES.iterdir())
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    r = stow(node, [f.read_bytes() for f in files])
    assert r.status_code == 200, r.text

    study = node.wait_study(
        study_uid, lambda s: s["state"] in ("done", "failed"), 180, "study done"
    )
    assert study["state"] == "done", study["history"]
    key = str(study["study_key"])
    jobs = node.http.get("/api/jobs", params={"study_key": key}).json()
    assert len(jobs) == 1, jobs

    def delivered() -> list[dict[str, Any]] | None:
        rows = node.deliveries(key)
        return rows if rows and all(d["state"] == "delivered" for d in rows) else None

    try:
        rows = wait_for(delivered, 60, 0.2, "results delivered by STOW-RS")
    except BaseException:
        print(json.dumps(node.deliveries(key), indent=1), node.log_tail(60))
        raise
    assert {d["destination"] for d in rows} == {"archive"}

    ours = {}
    for path in (node.home / "results").rglob("*.dcm"):
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        ours[uid] = path.read_bytes()
    for d in rows:
        found = orthanc.http.post(
            "/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": d["sop_uid"]}}
        ).json()
        assert len(found) == 1, (d["sop_uid"], found)
        held = orthanc.http.get(f"/instances/{found[0]}/file").content
        assert held == ours[d["sop_uid"]], d["sop_uid"]
    assert not node.log_problems()
