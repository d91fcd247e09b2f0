"""issue 18: the node's errors say why an operation is refused; only the API maps the
reason to an HTTP status."""

from __future__ import annotations

from pathlib import Path

from cds.api.refusals import HTTP_STATUS
from cds.errors import Refusal

CDS = Path(__file__).resolve().parents[2] / "cds"


def test_every_refusal_has_its_http_status() -> None:
    assert set(HTTP_STATUS) == set(Refusal)
    assert HTTP_STATUS[Refusal.NOT_FOUND] == 404
    assert HTTP_STATUS[Refusal.CONFLICT] == 409


def test_no_http_status_outside_the_api() -> None:
    """The admin operations and feedback raise a Refusal, never a number."""
    for rel in ("admin.py", "errors.py", "feedback/service.py"):
        text = (CDS / rel).read_text()
        for code in ("404", "409", "422", "503"):
            assert code not in text, f"{rel} carries HTTP status {code}"
