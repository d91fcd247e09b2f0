"""issue 18: modules stay small enough to read (500 lines at most)."""

from __future__ import annotations

from pathlib import Path

CDS = Path(__file__).resolve().parents[1] / "cds"
MAX_LINES = 500


def test_no_module_is_longer_than_500_lines() -> None:
    long = {
        str(p.relative_to(CDS)): n
        for p in CDS.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these modules: {long}"
