"""Issue 8: below the disk watermark, C-STORE answers 0xA700 (Out of Resources);
the node stays up, answers C-ECHO and reports itself degraded."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from integration_tests.conftest import CdsNode
from integration_tests.support import CORPUS, require_dcmtk, run_tool

pytestmark = pytest.mark.integration

SOURCE = CORPUS / "ct" / "CT_small.dcm"


@pytest.mark.skipif(not SOURCE.is_file(), reason=f"corpus file missing: {SOURCE}")
def test_i2_r8_below_watermark_store_gets_a700(node_factory: Callable[..., CdsNode]) -> None:
    """issue 2, req. 8: spool.min_free_mb above the free disk -> storescu gets 0xA700 with an
    Error Comment; nothing is stored; echo works; /health is 503 degraded."""
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
    assert body["status"] == "degraded"
    assert body["spool"]["below_watermark"] is True
    assert body["dicom"]["listening"] is True
    assert body["store"]["reachable"] is True
    assert node.running
    assert not node.log_problems()
