"""Fixtures shared by the inference tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERIES = REPO.parent / "shared" / "dicom" / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    if not SERIES.is_dir():
        pytest.skip(f"shared DICOM corpus not found at {SERIES}")
    out = tmp_path / "series"
    out.mkdir()
    for f in sorted(SERIES.iterdir())[:5]:
        shutil.copy(f, out / f.name)
    return sorted(out.iterdir())
