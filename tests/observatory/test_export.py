"""issue 6, observatory export: aggregated and de-identified per model version and ISO
week; no patient, study or user identifier and no date finer than the week reaches
it; a figure computed from fewer than N studies or findings is suppressed."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds import __version__
from cds.observatory.export import CELLS, FORMAT, build_export, to_csv, week_range
from cds.observatory.stats import Records, load_records

from .known import DAY, SHA, T0, WEEK, Known, build

NOW = T0 + 10 * DAY  # Thursday of 2026-W48


@pytest.fixture
def data(tmp_path: Path) -> Iterator[tuple[Records, Known]]:
    store, known = build(tmp_path / "state.db")
    try:
        yield load_records(store), known
    finally:
        store.close()


def cells(row: dict[str, Any]) -> dict[str, Any]:
    return {c.name: row[c.name]["value"] for c in CELLS}


def suppressed(row: dict[str, Any]) -> set[str]:
    return {c.name for c in CELLS if row[c.name]["suppressed"]}


def test_header_names_version_models_week_and_threshold(data: tuple[Records, Known]) -> None:
    export = build_export(data[0], now=NOW)
    assert {k: v for k, v in export.items() if k != "rows"} == {
        "format": FORMAT,
        "cds_version": __version__,
        "generated_week": "2026-W48",
        "suppression_threshold": 5,
        "first_week": "2026-W47",
        "last_week": "2026-W48",
        "models": [
            {"name": "alpha", "version": "1.0", "sha256": [SHA["alpha"]]},
            {"name": "beta", "version": "2.0", "sha256": [SHA["beta"]]},
        ],
    }
    assert [(r["model"], r["version"], r["week"]) for r in export["rows"]] == [
        ("alpha", "1.0", "2026-W47"),
        ("alpha", "1.0", "2026-W48"),
        ("beta", "2.0", "2026-W47"),
    ]


def test_small_counts_are_suppressed_on_their_basis(data: tuple[Records, Known]) -> None:
    alpha47 = build_export(data[0], now=NOW)["rows"][0]
    # 4 studies, 6 findings, 4 reviewed: below 5 only what rests on studies or reviews
    assert suppressed(alpha47) == {c.name for c in CELLS} - {
        "findings",
        "positive_rate",
        "reviewed",
        "reviewed_rate",
    }
    assert {k: v for k, v in cells(alpha47).items() if v is not None} == {
        "findings": 6,
        "positive_rate": 0.6667,
        "reviewed": 4,
        "reviewed_rate": 0.6667,
    }
    assert alpha47["studies"] == {"value": None, "suppressed": True}


def test_at_or_above_the_threshold_every_figure_is_given(data: tuple[Records, Known]) -> None:
    alpha47 = build_export(data[0], min_count=4, now=NOW)["rows"][0]
    assert suppressed(alpha47) == set()
    assert cells(alpha47) == {
        "studies": 4,
        "findings": 6,
        "positive_rate": 0.6667,
        "reviewed": 4,
        "reviewed_rate": 0.6667,
        "accept_rate": 0.5,
        "correct_rate": 0.25,
        "reject_rate": 0.25,
        "median_time_to_feedback_s": 90.0,
        "time_to_result_p50_s": 10.0,
        "time_to_result_p90_s": 73.6,
        "time_to_result_p99_s": 97.4,
        "job_run_time_p50_s": 5.0,
        "job_run_time_p90_s": 7.4,
        "job_run_time_p99_s": 7.9,
    }
    beta = build_export(data[0], min_count=1, now=NOW)["rows"][2]
    assert cells(beta)["accept_rate"] == 1.0
    assert build_export(data[0], min_count=2, now=NOW)["rows"][2]["accept_rate"] == {
        "value": None,
        "suppressed": True,
    }


def test_a_range_is_taken_as_whole_iso_weeks(data: tuple[Records, Known]) -> None:
    assert week_range(T0 + 2 * DAY, T0 + WEEK + DAY) == (T0, T0 + 2 * WEEK)
    assert week_range(T0 + 2 * DAY, T0 + WEEK) == (T0, T0 + WEEK)  # a Monday ends the range
    export = build_export(data[0], since=T0 + 2 * DAY, until=T0 + WEEK, now=NOW)
    assert (export["first_week"], export["last_week"]) == ("2026-W47", "2026-W47")
    assert {r["week"] for r in export["rows"]} == {"2026-W47"}
    # S1's first result is on Tuesday, before the given Wednesday: its week is whole
    assert (
        cells(build_export(data[0], min_count=1, since=T0 + 2 * DAY, now=NOW)["rows"][0])["studies"]
        == 4
    )
    assert build_export(data[0], min_count=1, since=T0 + 30 * DAY, now=NOW)["rows"] == []


def test_min_count_below_one_is_refused(data: tuple[Records, Known]) -> None:
    with pytest.raises(ValueError, match="min_count"):
        build_export(data[0], min_count=0)


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


@pytest.mark.parametrize("min_count", [1, 5])
def test_no_identifier_and_no_date_finer_than_the_week(
    data: tuple[Records, Known], min_count: int
) -> None:
    records, known = data
    export = build_export(records, min_count=min_count, now=NOW)
    texts = {"json": json.dumps(export), "csv": to_csv(export)}
    for fmt, text in texts.items():
        for value in known.identifiers:
            assert value not in text, f"{value!r} in the {fmt} export"
        assert "CANARY" not in text.upper()
        assert not re.search(r"\d{4}-\d{2}-\d{2}", text), f"a date in the {fmt} export"
        assert not re.search(r"\d{2}:\d{2}", text), f"a time of day in the {fmt} export"
        assert "stk" not in text
        assert not re.search(r"\d+\.\d+\.\d+\.\d+", text), f"a UID in the {fmt} export"
    assert all(n < 10**6 for n in _numbers(export)), "an epoch time in the export"
    assert set(export["rows"][0]) == {"model", "version", "week"} | {c.name for c in CELLS}


def test_csv_has_one_line_per_row_with_the_header_fields(data: tuple[Records, Known]) -> None:
    export = build_export(data[0], now=NOW)
    lines = list(csv.DictReader(io.StringIO(to_csv(export))))
    assert len(lines) == 3
    first = lines[0]
    assert (first["cds_version"], first["generated_week"], first["suppression_threshold"]) == (
        __version__,
        "2026-W48",
        "5",
    )
    assert (first["model"], first["version"], first["sha256"], first["week"]) == (
        "alpha",
        "1.0",
        SHA["alpha"],
        "2026-W47",
    )
    assert (first["findings"], first["findings_suppressed"]) == ("6", "false")
    assert (first["studies"], first["studies_suppressed"]) == ("", "true")
    assert first["positive_rate"] == "0.6667"
