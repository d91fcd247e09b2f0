"""issue 6, observatory: per model and version, over day/week/month windows or a range:
studies processed, positive rate, accept/correct/reject rates, median time to
feedback, time-to-result and job run time percentiles, exactly as given to the store
(the figures are worked out by hand in known.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cds.observatory.stats import (
    Bucket,
    ModelStats,
    Records,
    iso_week,
    load_records,
    median,
    model_stats,
    parse_when,
    percentile,
    week_start,
    window,
)
from cds.store.sqlite import SqliteStore

from .known import DAY, SHA, T0, WEEK, build


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    store, _ = build(tmp_path / "state.db")
    try:
        yield load_records(store)
    finally:
        store.close()


def rows_by(rows: list[ModelStats]) -> dict[tuple[str, str, str], ModelStats]:
    return {(s.model, s.version, s.period): s for s in rows}


def test_percentiles_interpolate_between_nearest_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile([4.0, 8.0, 12.0, 100.0], 50) == 10.0
    assert percentile([4.0, 8.0, 12.0, 100.0], 90) == pytest.approx(73.6, abs=1e-9)
    assert percentile([4.0, 8.0, 12.0, 100.0], 100) == 100.0
    assert median([30.0, 600.0, 60.0]) == 60.0
    assert median([120.0, 30.0, 60.0, 600.0]) == 90.0


def test_weeks_are_iso_8601_in_utc() -> None:
    assert iso_week(T0) == "2026-W47"
    assert iso_week(T0 - 1) == "2026-W46"  # Sunday 23:59:59
    assert week_start(T0 + 3 * DAY + 5) == T0
    new_year = parse_when("2027-01-01", "x")  # a Friday, in the 53rd week of 2026
    assert window(new_year, Bucket.WEEK) == (
        "2026-W53",
        parse_when("2026-12-28", "x"),
        parse_when("2027-01-04", "x"),
    )
    assert window(new_year, Bucket.MONTH) == (
        "2027-01",
        new_year,
        parse_when("2027-02-01", "x"),
    )
    assert window(T0 + 5, Bucket.DAY) == ("2026-11-16", T0, T0 + DAY)


def test_parse_when_names_the_option_it_refuses() -> None:
    assert parse_when("2026-11-16", "--since") == T0
    assert parse_when("2026-11-16T01:00:00+01:00", "--since") == T0
    with pytest.raises(ValueError, match=r"--since: '16/11/2026' is not a date"):
        parse_when("16/11/2026", "--since")


def test_weekly_figures_per_model_version(records: Records) -> None:
    rows = rows_by(model_stats(records, Bucket.WEEK))
    assert sorted(rows) == [
        ("alpha", "1.0", "2026-W47"),
        ("alpha", "1.0", "2026-W48"),
        ("beta", "2.0", "2026-W47"),
    ]
    w47 = rows[("alpha", "1.0", "2026-W47")]
    assert (w47.start, w47.end, w47.sha256) == (T0, T0 + WEEK, (SHA["alpha"],))
    assert (w47.studies, w47.findings, w47.positives) == (4, 6, 4)
    assert w47.positive_rate == 4 / 6
    # F1 accept, F2 reject then correct (the latest counts), F3 accept, F5 reject
    assert (w47.reviewed, w47.accepted, w47.corrected, w47.rejected) == (4, 2, 1, 1)
    assert (w47.reviewed_rate, w47.accept_rate, w47.correct_rate, w47.reject_rate) == (
        4 / 6,
        0.5,
        0.25,
        0.25,
    )
    assert w47.feedback_records == 5
    assert w47.median_time_to_feedback_s == 90.0  # first feedback: 30, 60, 120, 600 s
    ttr = w47.time_to_result_s  # 4, 8, 12, 100 s
    assert (ttr.n, ttr.p50) == (4, 10.0)
    assert ttr.p90 == pytest.approx(12 + 0.7 * 88, abs=1e-9)
    assert ttr.p99 == pytest.approx(12 + 0.97 * 88, abs=1e-9)
    run = w47.job_run_time_s  # 2, 4, 6, 8 s; the failed job does not count
    assert (run.n, run.p50) == (4, 5.0)
    assert run.p90 == pytest.approx(7.4, abs=1e-9)
    assert run.p99 == pytest.approx(7.94, abs=1e-9)
    assert w47.score_histogram == (1, 1, 0, 0, 0, 1, 0, 0, 0, 3)

    w48 = rows[("alpha", "1.0", "2026-W48")]
    # S5 is new; S1's re-run is not a new study, and its rejection note no result
    assert (w48.studies, w48.findings, w48.positives, w48.reviewed) == (1, 1, 1, 0)
    assert (w48.accept_rate, w48.reviewed_rate, w48.median_time_to_feedback_s) == (
        None,
        0.0,
        None,
    )
    assert (w48.time_to_result_s.n, w48.time_to_result_s.p99) == (1, 20.0)
    assert (w48.job_run_time_s.n, w48.job_run_time_s.p50) == (2, 6.5)  # 3 s and the 10 s re-run

    beta = rows[("beta", "2.0", "2026-W47")]
    assert (beta.studies, beta.findings, beta.reviewed, beta.accepted) == (1, 1, 1, 1)
    assert (beta.accept_rate, beta.median_time_to_feedback_s) == (1.0, 45.0)
    assert (beta.time_to_result_s.p50, beta.job_run_time_s.p50) == (30.0, 20.0)
    assert beta.sha256 == (SHA["beta"],)


def test_month_and_whole_range_sum_the_weeks(records: Records) -> None:
    (alpha, beta) = model_stats(records, Bucket.MONTH)
    assert (alpha.period, alpha.studies, alpha.findings, alpha.reviewed) == ("2026-11", 5, 7, 4)
    assert (alpha.start, alpha.end) == (
        parse_when("2026-11-01", "x"),
        parse_when("2026-12-01", "x"),
    )
    assert alpha.time_to_result_s.p50 == 12.0  # 4, 8, 12, 20, 100
    assert beta.period == "2026-11"
    (alpha_all, _) = model_stats(records, Bucket.ALL)
    assert (alpha_all.period, alpha_all.start, alpha_all.end, alpha_all.studies) == (
        "all",
        None,
        None,
        5,
    )
    assert alpha_all.score_histogram == (1, 1, 0, 1, 0, 1, 0, 0, 0, 3)


def test_days_put_each_study_on_its_own_day(records: Records) -> None:
    rows = rows_by(model_stats(records, Bucket.DAY))
    alpha_days = sorted(p for m, _, p in rows if m == "alpha")
    assert alpha_days == [
        "2026-11-17",
        "2026-11-18",
        "2026-11-19",
        "2026-11-22",
        "2026-11-23",
        "2026-11-24",
    ]
    assert rows[("alpha", "1.0", "2026-11-22")].studies == 1  # S4, at 23:59:10 on Sunday
    rerun = rows[("alpha", "1.0", "2026-11-24")]  # the re-run of S1: a job, no new study
    assert (rerun.studies, rerun.findings, rerun.job_run_time_s.p50) == (0, 0, 10.0)


def test_a_range_keeps_events_in_since_until(records: Records) -> None:
    rows = rows_by(model_stats(records, Bucket.WEEK, since=T0 + WEEK))
    assert sorted(rows) == [("alpha", "1.0", "2026-W48")]
    rows = rows_by(model_stats(records, Bucket.ALL, since=T0 + 2 * DAY, until=T0 + 3 * DAY + 1))
    assert sorted(rows) == [("alpha", "1.0", "all"), ("beta", "2.0", "all")]
    alpha = rows[("alpha", "1.0", "all")]
    assert (alpha.start, alpha.end) == (T0 + 2 * DAY, T0 + 3 * DAY + 1)
    assert (alpha.studies, alpha.findings) == (1, 1)  # S2 only: S3's result is 11 s too late
    assert model_stats(records, Bucket.WEEK, since=T0 + 30 * DAY) == []


def test_the_store_is_read_through_the_protocol(tmp_path: Path) -> None:
    store, known = build(tmp_path / "state.db")
    try:
        records = load_records(store)
    finally:
        store.close()
    assert sorted(records.completed_at) == sorted(known.study_keys)
    assert (len(records.results), len(records.findings), len(records.feedback)) == (14, 8, 6)
    assert len(records.jobs) == 8


def test_an_empty_store_has_no_rows(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    try:
        assert model_stats(load_records(store)) == []
    finally:
        store.close()
