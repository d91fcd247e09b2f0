"""Issue 8: below the disk watermark, C-STORE answers 0xA700 (Out of Resources);
the node stays up, answers C-ECHO and reports itself unavailable (503)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import yaml

from integration_tests.conftest import CdsNode
from integration_tests.support import (
    CORPUS,
    require_dcmtk,
    run_tool,
    spooled_files,
    write_ct_series,
)

pytestmark = pytest.mark.integration

SOURCE = CORPUS / "ct" / "CT_small.dcm"


@pytest.mark.skipif(not SOURCE.is_file(), reason=f"corpus file missing: {SOURCE}")
def test_i2_r8_below_watermark_store_gets_a700(node_factory: Callable[..., CdsNode]) -> None:
    """issue 2, req. 8: spool.min_free_mb above the free disk -> storescu gets 0xA700 with an
    Error Comment; nothing is stored; echo works; /health is 503 unavailable."""
    node = node_factory({"spool": {"min_free_mb": 10**9}})
    storescu = require_dcmtk("storescu")
    r = run_tool(
        [storescu, "-d", "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port), str(SOURCE)]
    )
    status = re.search(r"DIMSE Status\s+: (0x[0-9a-f]{4}): (.*)", r.stdout)
    assert status is not None, r.stdout[-3000:]
    assert status.group(1) == "0xa700"
    assert "out of resources" in status.group(2).lower()
    comment = re.search(r"\(0000,0902\) LO \[(.*?)\]", r.stdout)
    assert comment is not None, "no Error Comment in the response"
    assert comment.group(1).strip()
    assert "Releasing Association" in r.stdout  # refused, not aborted

    assert node.studies() == []
    assert not list((node.home / "spool" / "studies").glob("*/*/*.dcm"))
    refused = [e for e in node.events() if e["event"] == "ingest.instance_refused"]
    assert [e["status"] for e in refused] == ["0xA700"]

    echoscu = require_dcmtk("echoscu")
    echo = run_tool([echoscu, "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port)])
    assert echo.returncode == 0, echo.stdout

    h = node.health()
    assert h.status_code == 503
    body = h.json()
    assert body["status"] == "unavailable"
    assert body["spool"]["below_watermark"] is True
    assert body["dicom"]["listening"] is True
    assert body["store"]["reachable"] is True
    assert node.running
    assert not node.log_problems()


def test_i14_identical_duplicate_at_the_watermark_is_success_without_writing(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """issue 14: below the watermark, storescu re-sending an instance the node already
    has, byte for byte, gets Success and nothing is written; the same SOP Instance UID
    with other bytes still gets 0xA700."""
    ((original, sop_uid),) = write_ct_series(tmp_path / "ct", 1)
    changed = tmp_path / "changed.dcm"
    ds = pydicom.dcmread(original)
    ds.InstanceNumber = 2
    ds.save_as(changed, enforce_file_format=True)
    storescu = require_dcmtk("storescu")
    node = node_factory()

    def send(*files: Path) -> list[str]:
        r = run_tool(
            [storescu, "-d", "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port)]
            + [str(f) for f in files]
        )
        return re.findall(r"DIMSE Status\s+: (0x[0-9a-f]{4})", r.stdout)

    assert send(original) == ["0x0000"]
    (spooled,) = spooled_files(node.home, sop_uid)
    before = spooled.stat()
    node.stop()
    node.config["spool"]["min_free_mb"] = 10**9
    node.config_path.write_text(yaml.safe_dump(node.config), encoding="utf-8")
    node.start()

    assert send(original, changed) == ["0x0000", "0xa700"]
    assert spooled_files(node.home, sop_uid) == [spooled]
    after = spooled.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not list((node.home / "spool" / "tmp").iterdir())
    (study,) = node.studies()
    assert study["instance_count"] == 1
    assert node.running
    assert not node.log_problems()
