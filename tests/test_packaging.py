"""issue 14: the package metadata builds with current setuptools (no deprecated forms)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_expression_with_its_file() -> None:
    """`license = {text = ...}` stops building with setuptools after 2027-02-18 (PEP 639):
    the licence is an SPDX string, its text ships in the wheel, and the build backend is
    new enough to read that form."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = data["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")[:200]
    (setuptools,) = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools == "setuptools>=77"
