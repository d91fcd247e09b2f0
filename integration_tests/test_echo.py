"""Issue 1: C-ECHO from DCMTK; associations to the wrong AE title are rejected."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from integration_tests.conftest import CdsNode
from integration_tests.support import require_dcmtk, run_tool

pytestmark = pytest.mark.integration


def echo(node: CdsNode, *extra: str) -> tuple[int, str]:
    r = run_tool(
        [require_dcmtk("echoscu"), "-v", *extra, "127.0.0.1", str(node.dicom_port)], timeout=30
    )
    return r.returncode, r.stdout


def test_i2_r1_dcmtk_echoscu_gets_success(node: CdsNode) -> None:
    """issue 2, req. 1: DCMTK echoscu calling our AE title gets a C-ECHO Success."""
    rc, out = echo(node, "-aec", node.ae_title)
    assert rc == 0, out
    assert "Received Echo Response (Success)" in out
    accepted = [e for e in node.events() if e["event"] == "ingest.association_accepted"]
    assert [e["calling_ae"] for e in accepted] == ["ECHOSCU"]
    assert not node.log_problems()


def test_i2_r1_wrong_called_ae_title_is_rejected(node: CdsNode) -> None:
    """issue 2, req. 1: an association calling another AE title is rejected; node stays up."""
    rc, out = echo(node, "-aec", "NOT_CDS")
    assert rc != 0
    assert "Association Rejected" in out
    assert "Called AE Title Not Recognized" in out
    assert any(e["event"] == "ingest.association_rejected" for e in node.events())
    # the listener is still there for a correct peer
    rc, out = echo(node, "-aec", node.ae_title)
    assert rc == 0, out
    assert node.health().status_code == 200


def test_i2_r1_calling_ae_title_not_allowed_is_rejected(
    node_factory: Callable[..., CdsNode],
) -> None:
    """issue 2, req. 1: with allowed_calling_ae_titles set, other calling AE titles are rejected."""
    node = node_factory({"dicom": {"allowed_calling_ae_titles": ["MODALITY1"]}})
    rc, out = echo(node, "-aec", node.ae_title, "-aet", "INTRUDER")
    assert rc != 0
    assert "Calling AE Title Not Recognized" in out
    rc, out = echo(node, "-aec", node.ae_title, "-aet", "MODALITY1")
    assert rc == 0, out


def test_i2_r1_rejection_log_names_the_called_ae_title(node: CdsNode) -> None:
    """issue 2, req. 1: the rejection log line tells the operator which AE title the peer called."""
    rc, _ = echo(node, "-aec", "NOT_CDS")
    assert rc != 0
    rejected = [e for e in node.events() if e["event"] == "ingest.association_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["called_ae"] == "NOT_CDS"
