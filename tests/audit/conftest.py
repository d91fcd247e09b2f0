"""Fixtures of the audit tests: a few CT instances of the shared corpus, a Storage SCP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..delivery.test_worker import Pacs


@pytest.fixture
def ct(corpus: Path) -> list[Path]:
    return sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]


@pytest.fixture
def pacs() -> Iterator[Pacs]:
    p = Pacs()
    yield p
    p.close()
