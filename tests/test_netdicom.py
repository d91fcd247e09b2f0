"""issue 18: pynetdicom is pinned exactly, and every place that adapts its internals
refuses to start on another release, naming both versions."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pynetdicom
import pytest

from cds.ingest import fastpath
from cds.ingest.scp import DicomListener
from cds.netdicom import PYNETDICOM_VERSION, check_pynetdicom
from cds.requestor import PauseSafeAE

from .conftest import make_settings

REPO = Path(__file__).resolve().parents[1]


def test_the_pin_in_pyproject_is_the_release_the_code_checks() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"pynetdicom=={PYNETDICOM_VERSION}" in [d.replace(" ", "") for d in deps]
    assert pynetdicom.__version__ == PYNETDICOM_VERSION  # what the suite runs against


def test_every_adapter_refuses_another_release(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.0.5")
    with pytest.raises(RuntimeError, match=r"adapts pynetdicom 3\.0\.4 internals, found 3\.0\.5"):
        check_pynetdicom("x")
    with pytest.raises(RuntimeError, match=r"cds\.requestor adapts"):
        PauseSafeAE(ae_title="X")
    with pytest.raises(RuntimeError, match=r"cds\.ingest\.fastpath adapts"):
        fastpath.install(None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"cds\.ingest \(server"):
        DicomListener(make_settings(tmp_path / "home"), None)  # type: ignore[arg-type]
