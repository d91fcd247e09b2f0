"""issue 22 (backfill): the C-FIND identifier, the rate option and the rate limiter."""

from __future__ import annotations

from datetime import date

import pytest

from cds.ingest.archive import StudyQuery
from cds.ingest.backfill import RateLimiter, parse_rate


def test_the_study_query_asks_for_a_date_range_and_no_patient_attribute() -> None:
    ident = StudyQuery(date(2024, 1, 2), date(2024, 3, 4), "CT", "*CHEST*").identifier()
    assert ident.QueryRetrieveLevel == "STUDY"
    assert ident.StudyDate == "20240102-20240304"
    assert ident.ModalitiesInStudy == "CT"
    assert ident.StudyDescription == "*CHEST*"
    assert ident.StudyInstanceUID == ""
    asked = {e.keyword for e in ident}
    assert not asked & {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"}


def test_an_open_query_matches_any_modality_and_description() -> None:
    ident = StudyQuery(date(2024, 1, 1), date(2024, 1, 1)).identifier()
    assert ident.StudyDate == "20240101-20240101"
    assert ident.ModalitiesInStudy == ""
    assert ident.StudyDescription == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((date(2024, 2, 1), date(2024, 1, 1)), "is after --until"),
        ((date(2024, 1, 1), date(2024, 1, 2), "ct"), "--modality"),
        ((date(2024, 1, 1), date(2024, 1, 2), "CT", "a\\b"), "--description"),
    ],
)
def test_a_bad_query_names_the_option(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StudyQuery(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "per_min"), [("30", 30.0), ("30/min", 30.0), ("2/s", 120.0), ("120/h", 2.0)]
)
def test_rates(text: str, per_min: float) -> None:
    assert parse_rate(text) == per_min


@pytest.mark.parametrize("text", ["0/min", "-1", "fast", "3/week"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--rate"):
        parse_rate(text)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_the_limiter_spaces_starts_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(30, clock, clock.sleep)  # one start every 2 s
    starts = [limiter.wait() for _ in range(5)]
    assert starts == [1000.0, 1002.0, 1004.0, 1006.0, 1008.0]


def test_a_late_start_does_not_make_the_next_early() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, clock, clock.sleep)  # 1 s apart
    assert limiter.wait() == 1000.0
    clock.now += 5.0  # the retrieval took 5 s
    assert limiter.wait() == 1005.0
    assert limiter.wait() == 1006.0


def test_the_limiter_refuses_a_rate_of_zero() -> None:
    with pytest.raises(ValueError, match="--rate"):
        RateLimiter(0)
