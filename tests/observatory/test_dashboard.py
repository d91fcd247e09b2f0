"""issue 6: the observatory for admins over HTTP: the figures as JSON
(``GET /api/observatory/models``) and the dashboard page (``GET /observatory``): tables,
inline SVG plots, nothing loaded from outside the node, French and English."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds.api.app import create_app
from cds.orchestrator import Node

from ..conftest import make_settings
from .known import CANARY_AE, CANARY_ID, CANARY_NAME, CANARY_USER, SHA, build

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "home")
    store, _ = build(settings.sqlite_path)
    store.close()
    node = Node(settings)  # not started: the app reads its store
    with TestClient(create_app(settings, node)) as c:  # stops (closes) the node at exit
        yield c


def test_api_gives_the_weekly_figures(client: TestClient) -> None:
    got = client.get("/api/observatory/models")
    assert got.status_code == 200, got.text
    rows = got.json()
    assert [(r["model"], r["version"], r["period"]) for r in rows] == [
        ("alpha", "1.0", "2026-W47"),
        ("alpha", "1.0", "2026-W48"),
        ("beta", "2.0", "2026-W47"),
    ]
    w47 = rows[0]
    assert (w47["studies"], w47["findings"], w47["reviewed"]) == (4, 6, 4)
    assert (w47["accept_rate"], w47["correct_rate"], w47["reject_rate"]) == (0.5, 0.25, 0.25)
    assert w47["median_time_to_feedback_s"] == 90.0
    assert w47["time_to_result_s"]["p50"] == 10.0
    assert w47["sha256"] == [SHA["alpha"]]


def test_api_range_and_bucket(client: TestClient) -> None:
    got = client.get("/api/observatory/models", params={"since": "2026-11-23", "bucket": "all"})
    assert got.status_code == 200
    (row,) = got.json()
    assert (row["model"], row["period"], row["studies"], row["findings"]) == ("alpha", "all", 1, 1)
    assert row["job_run_time_s"] == {"n": 2, "p50": 6.5, "p90": 9.3, "p99": pytest.approx(9.93)}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "23/11/2026"}, "since: '23/11/2026' is not a date"),
        ({"since": "2026-11-23", "until": "2026-11-01"}, "until must come after since"),
    ],
)
def test_api_refuses_bad_dates(client: TestClient, params: dict[str, str], message: str) -> None:
    for path in ("/api/observatory/models", "/observatory"):
        got = client.get(path, params=params)
        assert got.status_code == 422
        assert message in got.json()["detail"]
    assert client.get("/api/observatory/models", params={"bucket": "year"}).status_code == 422


def _svgs(page: str) -> list[ET.Element]:
    found = re.findall(r"<svg .*?</svg>", page, flags=re.DOTALL)
    return [ET.fromstring(s) for s in found]  # noqa: S314 - our own page, parsed to check it


def test_dashboard_has_tables_and_plots_per_model(client: TestClient) -> None:
    got = client.get("/observatory", params={"lang": "en"})
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/html")
    page = got.text
    assert '<html lang="en">' in page
    assert "<h2>alpha 1.0</h2>" in page
    assert "<h2>beta 2.0</h2>" in page
    assert "Verdicts per week" in page
    assert "Score distribution" in page
    svgs = _svgs(page)
    assert len(svgs) == 4  # verdict bars and score histogram, for each model version
    bars = svgs[0]
    fills = [r.get("fill") for r in bars.iter(f"{SVG}rect")]
    # W47: 2 accepted, 1 corrected, 1 rejected; W48: nothing reviewed
    assert fills == ["#2e7d32", "#ef6c00", "#c62828"]
    titles = [t.text for t in bars.iter(f"{SVG}title")]
    assert titles == ["2026-W47: Accepted 2", "2026-W47: Corrected 1", "2026-W47: Rejected 1"]
    histogram = [t.text for t in svgs[1].iter(f"{SVG}title")]
    assert histogram[0] == "[0.0, 0.1): 1"
    assert histogram[-1] == "[0.9, 1.0): 3"
    # the summary table: alpha over the whole range, then the weeks
    assert "<td>alpha</td><td>1.0</td><td>5</td><td>7</td><td>71.4\u00a0%</td>" in page
    assert (
        "<td>2026-W47</td><td>4</td><td>6</td><td>66.7\u00a0%</td><td>66.7\u00a0%</td>"
        "<td>50.0\u00a0%</td><td>25.0\u00a0%</td><td>25.0\u00a0%</td><td>90.0\u00a0s</td>" in page
    )


def test_dashboard_loads_nothing_from_outside_and_shows_no_identifier(
    client: TestClient,
) -> None:
    page = client.get("/observatory").text
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page
    assert "url(" not in page
    for canary in (CANARY_AE, CANARY_ID, CANARY_NAME, CANARY_USER, "stk0001"):
        assert canary not in page


def test_dashboard_in_french(client: TestClient) -> None:
    page = client.get("/observatory", params={"lang": "fr", "bucket": "month"}).text
    assert '<html lang="fr">' in page
    for text in ("Observatoire", "Synthèse par version de modèle", "Avis par mois", "Acceptés"):
        assert text in page
    # the decimal comma in figures, not in versions: alpha 1.0 over November
    assert (
        "<td>alpha</td><td>1.0</td><td>2026-11</td><td>5</td><td>7</td><td>71,4\u00a0%</td>" in page
    )
    for english in ("Verdicts", "Summary", "Accepted", "Score distribution"):
        assert english not in page
    assert 'href="/observatory?bucket=month&amp;lang=en"' in page  # the other language
    by_header = client.get("/observatory", headers={"Accept-Language": "fr-FR,fr;q=0.9"}).text
    assert '<html lang="fr">' in by_header


def test_dashboard_of_an_empty_period(client: TestClient) -> None:
    got = client.get("/observatory", params={"since": "2030-01-01", "until": "", "lang": "fr"})
    assert got.status_code == 200
    assert "Aucun résultat ni constat sur cette période." in got.text
    assert "<svg" not in got.text
