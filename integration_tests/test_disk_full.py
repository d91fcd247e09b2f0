"""issue 8: the disk really fills up to the watermark while the node is receiving, then
space comes back. Below the watermark every C-STORE is answered 0xA700 (Out of
Resources) with an error comment and nothing is stored; the node stays up (C-ECHO,
/health 503 unavailable); when space returns, the same instances are accepted; every
spooled file is intact (its data set is byte for byte what was sent).

The disk is filled for real, with a file reserved by posix_fallocate in the node's
file system, not by a setting.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import yaml

from cds.requestor import PauseSafeAE
from integration_tests.conftest import CdsNode, wait_for
from integration_tests.support import write_ct_series

pytestmark = pytest.mark.integration

MARGIN_MB = 1024  # free space above the watermark when the node starts
FILLER_MB = 2 * MARGIN_MB  # what the "other process" takes


def _store_all(node: CdsNode, files: list[Path]) -> list[tuple[int, str]]:
    ae = PauseSafeAE(ae_title="FILLER")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established
    out = []
    for f in files:
        status = assoc.send_c_store(pydicom.dcmread(f))
        out.append((int(status.Status), str(status.get("ErrorComment", ""))))
    assert assoc.send_c_echo().Status == 0  # the association itself stays usable
    assoc.release()
    return out


def test_i8_disk_fills_to_the_watermark_then_space_returns(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    node = node_factory(start=False)
    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    node.config["spool"]["min_free_mb"] = int(free_mb - MARGIN_MB)
    node.config_path.write_text(yaml.safe_dump(node.config), encoding="utf-8")
    node.start()
    files = [p for p, _ in write_ct_series(tmp_path / "ct", 10)]
    assert _store_all(node, files[:5]) == [(0, "")] * 5

    filler = tmp_path / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, FILLER_MB * 2**20)  # the disk is now below the watermark
    finally:
        os.close(fd)
    try:
        refused = _store_all(node, files[5:])
        assert {s for s, _ in refused} == {0xA700}, refused
        assert all(c.startswith("spool disk low:") for _, c in refused), refused
        r = node.health()
        assert r.status_code == 503
        assert r.json()["spool"]["below_watermark"] is True
        assert sum(s["instance_count"] for s in node.studies()) == 5  # nothing more stored
    finally:
        filler.unlink()

    wait_for(lambda: node.health().status_code == 200, 10, 0.2, "healthy again")
    assert _store_all(node, files[5:]) == [(0, "")] * 5  # the sender's retry succeeds
    assert sum(s["instance_count"] for s in node.studies()) == 10
    spooled = sorted((node.home / "spool" / "studies").rglob("*.dcm"))
    assert len(spooled) == 10
    sent = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in files}
    for f in spooled:
        got = pydicom.dcmread(f)
        assert got == sent[got.SOPInstanceUID], f  # every element, pixel data included
    assert node.log_problems() == []
