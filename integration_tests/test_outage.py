"""issue 8: the destination PACS (Orthanc) is down while results are made, then comes
back. Every result is delivered once it is back, exactly once, and the backlog goes
out by the routing rule's priority: the STAT study's results before the routine
study's, although the routine study was processed first.

How the backlog drains: each waiting delivery backs off on its own timer; the first
one that gets through (here: an admin's retry of one routine object, so that the
test does not depend on which timer expires first) brings every other one due at
once, and due deliveries go highest priority first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration_tests.conftest import CdsNode, Orthanc, wait_for
from integration_tests.support import dcmsend, free_port, write_bone_study

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
ROUTING = {
    "destinations": {"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": 0}},
    "pipelines": {
        "bone": {"model": "cds-ref-ct-bone", "results": ["SEG", "SR"], "destinations": ["pacs"]}
    },
    "rules": [
        {
            "name": "stat CT",
            "priority": 10,
            "match": [
                {"attribute": "Modality", "equals": "CT"},
                {"attribute": "StudyDescription", "equals": "STAT"},
            ],
            "pipelines": ["bone"],
        },
        {
            "name": "routine CT",
            "priority": 0,
            "match": [{"attribute": "Modality", "equals": "CT"}],
            "pipelines": ["bone"],
        },
    ],
}


def _failed_once(node: CdsNode, key: str, count: int) -> list[dict[str, Any]] | None:
    rows = node.deliveries(key)
    ok = len(rows) == count and all(r["state"] == "pending" and r["attempts"] >= 1 for r in rows)
    return rows if ok else None


def _arrival_order(orthanc: Orthanc) -> list[str]:
    """SOP Instance UIDs in the order Orthanc stored them (its change log)."""
    changes = orthanc.http.get("/changes", params={"since": 0, "limit": 10000}).json()
    out = []
    for c in changes["Changes"]:
        if c["ChangeType"] == "NewInstance":
            tags = orthanc.http.get(f"/instances/{c['ID']}/simplified-tags").json()
            out.append(str(tags["SOPInstanceUID"]))
    return out


def test_i8_pacs_down_then_back_delivers_everything_by_priority(
    node_factory: Callable[..., CdsNode],
    orthanc_factory: Callable[..., Orthanc],
    tmp_path: Path,
) -> None:
    pacs_port = free_port()  # nothing listens there yet: the PACS is down
    routing = dict(ROUTING)
    routing["destinations"] = {
        "pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}
    }
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(routing), encoding="utf-8")
    models = tmp_path / "models"
    models.mkdir()
    (models / "cds-ref-ct-bone").symlink_to(REPO / "models" / "cds-ref-ct-bone")
    node = node_factory(
        {
            "assembly": {"quiet_time_s": 1.0},
            "inference": {"model_dirs": [str(models)], "providers": "cpu"},
            "routing": {"file": str(tmp_path / "routing.yaml")},
            # long enough that no timer expires during the test: the retry is what
            # first gets through
            "delivery": {"poll_interval_s": 0.1, "backoff_initial_s": 60, "max_attempts": 50},
        }
    )
    keys = {}
    for name, description in (("routine", "ROUTINE"), ("stat", "STAT")):
        files, study_uid = write_bone_study(tmp_path / name, description)
        assert dcmsend(node.dicom_port, node.ae_title, files).returncode == 0
        s = node.wait_study(study_uid, lambda s: s["state"] in ("done", "failed"), 120, "done")
        assert s["state"] == "done", s["history"]
        keys[name] = str(s["study_key"])
        wait_for(lambda k=keys[name]: _failed_once(node, k, 2), 30, 0.1, f"{name} waiting")
    routine = {r["sop_uid"] for r in node.deliveries(keys["routine"])}
    stat = {r["sop_uid"] for r in node.deliveries(keys["stat"])}

    orthanc = orthanc_factory(node, dicom_port=pacs_port)  # the PACS is back
    first = node.deliveries(keys["routine"])[0]
    r = node.http.post(f"/api/deliveries/{first['delivery_id']}/retry")
    assert r.status_code in (200, 202), r.text
    for key in keys.values():
        wait_for(
            lambda k=key: all(x["state"] == "delivered" for x in node.deliveries(k)),
            60,
            0.2,
            "every result delivered after the outage",
        )
    order = _arrival_order(orthanc)
    results = [u for u in order if u in routine | stat]
    assert sorted(results) == sorted(routine | stat)  # each exactly once
    assert results[0] == first["sop_uid"]  # the retry got through first ...
    rest = results[1:]  # ... then the backlog: STAT first
    assert rest == sorted(rest, key=lambda u: u not in stat), (rest, stat)
    assert node.log_problems() == []
