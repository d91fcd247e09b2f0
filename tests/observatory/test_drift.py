"""issue 6: input drift (DICOM headers) and output drift (scores) per model version,
with an alert threshold: the statistics on hand-computed examples, a shift of scanner
and slice thickness alerts, the same distribution does not, and a run keeps no
patient data."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from cds.api.app import create_app
from cds.config import Settings
from cds.observatory.drift import (
    DAY,
    DriftSettings,
    FeatureDrift,
    RunRecord,
    bin_label,
    drift_report,
    ks,
    psi,
    record_run,
    tvd,
)
from cds.observatory.metrics import StoreCollector
from cds.store.sqlite import SqliteStore
from cds.store.sqlite_schema import SCHEMA_VERSION

from .test_metrics import CANARIES, canary_headers, inference_result, parse, val

NOW = 1794787200.0


# --- the statistics, by hand ---------------------------------------------------
def test_psi_hand_computed() -> None:
    """Shares (.5, .5) -> (.9, .1): .4 ln(.9/.5) + (-.4) ln(.1/.5) = 0.878890."""
    assert psi(Counter(A=5, B=5), Counter(A=9, B=1)) == pytest.approx(0.8788898, abs=1e-6)
    assert psi(Counter(A=5, B=5), Counter(A=50, B=50)) == 0.0


def test_psi_counts_an_empty_bin_as_epsilon() -> None:
    """(1, 0) -> (.5, .5), 0 counted as 1e-4: (-.5) ln(.5) + .4999 ln(.5/1e-4) = 4.604318."""
    assert psi(Counter(A=10), Counter(A=5, B=5)) == pytest.approx(4.604318, abs=1e-6)


def test_tvd_and_ks_hand_computed() -> None:
    assert tvd(Counter(A=5, B=5), Counter(A=9, B=1)) == pytest.approx(0.4)
    assert tvd(Counter(A=3), Counter(B=7)) == pytest.approx(1.0)
    # F at 2: .5 vs 0; at 3: .75 vs .25; at 4: 1 vs .5 -> 0.5
    assert ks([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    assert ks([1, 2, 3], [4, 5]) == 1.0
    assert ks([1, 1, 2], [2, 1, 1]) == 0.0
    with pytest.raises(ValueError, match="both samples"):
        ks([], [1.0])


def test_fixed_bins() -> None:
    edges = (0.75, 1.25, 2)
    assert bin_label(edges, 0.5) == "[-inf, 0.75)"
    assert bin_label(edges, 1.25) == "[1.25, 2)"
    assert bin_label(edges, 5) == "[2, +inf)"


# --- drift over stored runs -------------------------------------------------------
def _run(i: int, at: float, *, maker: str, thickness: float, score: float) -> RunRecord:
    return RunRecord(
        run_key=f"run{i}",
        at=at,
        model="alpha",
        version="1.0",
        provider="CPUExecutionProvider",
        seconds=0.5,
        images=40,
        modality="CT",
        body_part="CHEST",
        manufacturer=maker,
        scanner_model=f"{maker} 64",
        protocol="CHEST ROUTINE",
        slice_thickness=thickness,
        kvp=120.0,
        pixel_spacing=0.7,
        scores={"39607008": score},
    )


def _fill(
    store: SqliteStore, recent_maker: str, recent_thickness: tuple[float, ...], n: int = 40
) -> None:
    """n runs 8 to 28 days ago (scanner A, 1 and 1.25 mm), n in the last 7 days."""
    for i in range(n):
        at = NOW - (8 + 20 * i / n) * DAY
        store.record_run(_run(i, at, maker="A", thickness=(1.0, 1.25)[i % 2], score=i / n))
    for i in range(n):
        at = NOW - (6 * i / n + 0.5) * DAY
        t = recent_thickness[i % len(recent_thickness)]
        store.record_run(_run(n + i, at, maker=recent_maker, thickness=t, score=(i + 0.5) / n))


def _by_feature(store: SqliteStore, cfg: DriftSettings | None = None) -> dict[str, FeatureDrift]:
    (report,) = drift_report(store, NOW, cfg or DriftSettings())
    assert (report.model, report.version) == ("alpha", "1.0")
    return {f.feature: f for f in report.features}


def test_scanner_and_slice_thickness_shift_alerts(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _fill(store, "B", (5.0,))
    f = _by_feature(store)
    for name in ("manufacturer", "scanner_model", "slice_thickness"):
        assert f[name].alert, name
        assert f[name].statistic > 0.25
    assert f["slice_thickness"].distance == 1.0  # KS: disjoint
    assert f["manufacturer"].distance == 1.0  # TVD: disjoint
    for name in ("modality", "kvp", "pixel_spacing", "protocol", "score:39607008"):
        assert not f[name].alert, name
    assert f["kvp"].statistic == 0.0
    assert f["manufacturer"].baseline == {"A": 40}
    assert f["manufacturer"].recent == {"B": 40}


def test_same_distribution_does_not_alert(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _fill(store, "A", (1.25, 1.0))
    f = _by_feature(store)
    assert not any(x.alert for x in f.values())
    assert all(x.enough_data for x in f.values())
    assert f["score:39607008"].statistic < 0.1


def test_output_drift_on_scores(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    for i in range(40):
        store.record_run(_run(i, NOW - 10 * DAY, maker="A", thickness=1.0, score=0.05))
        store.record_run(_run(100 + i, NOW - DAY, maker="A", thickness=1.0, score=0.95))
    f = _by_feature(store)
    assert f["score:39607008"].alert
    assert not f["manufacturer"].alert


def test_too_few_runs_never_alert(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _fill(store, "B", (5.0,), n=10)
    f = _by_feature(store)
    assert f["manufacturer"].statistic > 0.25
    assert not f["manufacturer"].enough_data
    assert not f["manufacturer"].alert
    f = _by_feature(store, DriftSettings(min_runs=10))
    assert f["manufacturer"].alert


def test_windows_by_days_and_by_first_runs(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _fill(store, "B", (5.0,))
    (report,) = drift_report(store, NOW, DriftSettings(baseline_days=14, recent_days=7))
    assert report.recent.runs == 40
    assert report.baseline.runs == 27  # 8 + i / 2 <= 21 days ago (the start is included)
    assert report.baseline.start == NOW - 21 * DAY
    (report,) = drift_report(store, NOW, DriftSettings(baseline_runs=10))
    assert report.baseline.runs == 10
    assert report.recent.runs == 40
    with pytest.raises(ValueError, match="positive"):
        drift_report(store, NOW, DriftSettings(recent_days=0))


def test_drift_per_model_version(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.record_run(_run(1, NOW - DAY, maker="A", thickness=1.0, score=0.5))
    other = _run(2, NOW - DAY, maker="A", thickness=1.0, score=0.5)
    store.record_run(RunRecord(**{**_asdict(other), "run_key": "x", "version": "2.0"}))
    reports = drift_report(store, NOW, DriftSettings())
    assert [(r.model, r.version) for r in reports] == [("alpha", "1.0"), ("alpha", "2.0")]
    assert drift_report(store, NOW, DriftSettings(), model="beta") == []


def _asdict(run: RunRecord) -> dict[str, object]:
    return {k: getattr(run, k) for k in RunRecord.__dataclass_fields__}


# --- recording a run ---------------------------------------------------------------
def test_record_run_keeps_headers_and_scores_but_no_patient_data(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    headers = canary_headers()
    result = inference_result(score=0.8)
    run = record_run(store, headers, result, NOW)
    assert run is not None
    (kept,) = store.list_runs()
    assert kept == run
    assert (kept.manufacturer, kept.scanner_model, kept.modality) == (
        "GE MEDICAL SYSTEMS",
        "HiSpeed",
        "CT",
    )
    assert (kept.slice_thickness, kept.kvp, kept.pixel_spacing) == (1.25, 120.0, 0.7)
    assert kept.scores == {"39607008": pytest.approx(0.8)}
    assert kept.protocol == ""  # absent: none
    # the same series again with the same model version replaces the row
    record_run(store, headers, result, NOW + 60)
    assert [r.at for r in store.list_runs()] == [NOW + 60]
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    uids = (headers.StudyInstanceUID, headers.SeriesInstanceUID, *result.record.series_uids)
    for canary in (*CANARIES, *uids):
        assert canary.encode() not in raw


def test_record_run_never_fails_the_job(tmp_path: Path) -> None:
    class Broken:
        def record_run(self, run: RunRecord) -> None:
            raise OSError("disk full")

    with capture_logs() as logs:
        assert record_run(Broken(), canary_headers(), inference_result(), NOW) is None  # type: ignore[arg-type]
    assert logs[0]["event"] == "observatory.run_not_recorded"
    assert logs[0]["error_type"] == "OSError"
    assert not any(c in str(logs) for c in CANARIES)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_missing_or_odd_headers(tmp_path: Path) -> None:
    headers = canary_headers()
    del headers.PixelSpacing
    headers.ImagerPixelSpacing = ["0.139", "0.139"]
    headers.KVP = ""
    headers.SliceThickness = "nan"
    store = SqliteStore(tmp_path / "s.db")
    run = record_run(store, headers, inference_result(), NOW)
    assert run is not None
    assert run.pixel_spacing == pytest.approx(0.139)
    assert run.kvp is None
    assert run.slice_thickness is None
    (report,) = drift_report(store, NOW + 1, DriftSettings())
    kvp = next(f for f in report.features if f.feature == "kvp")
    assert (kvp.statistic, kvp.recent_n) == (None, 0)


# --- the API and /metrics ------------------------------------------------------------
def test_drift_api_and_metrics_gauge(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        store = client.app.state.node.store
        now = time.time()
        for i in range(40):
            store.record_run(_run(i, now - 10 * DAY, maker="A", thickness=1.0, score=0.2))
            store.record_run(_run(100 + i, now - DAY, maker="B", thickness=1.0, score=0.2))
        res = client.get("/api/observatory/drift", params={"model": "alpha"})
        assert res.status_code == 200
        (m,) = res.json()["models"]
        assert (m["model"], m["version"], m["alert"]) == ("alpha", "1.0", True)
        f = {x["feature"]: x for x in m["features"]}
        assert f["manufacturer"]["alert"] is True
        assert f["manufacturer"]["threshold"] == 0.25
        assert (f["manufacturer"]["baseline_n"], f["manufacturer"]["recent_n"]) == (40, 40)
        assert math.isclose(f["slice_thickness"]["statistic"], 0.0)
        assert f["slice_thickness"]["alert"] is False
        # a recent window of 12 days holds every run: no baseline left, nothing to compare
        res = client.get("/api/observatory/drift", params={"recent_days": 12, "baseline_days": 5})
        (m,) = res.json()["models"]
        assert m["alert"] is False
        assert m["baseline"]["runs"] == 0
        assert client.get("/api/observatory/drift", params={"recent_days": 0}).status_code == 422
        assert (
            client.get("/api/observatory/drift", params={"baseline_runs": "x"}).status_code == 422
        )
        s = parse(client.get("/metrics").text)
        labels = {"model": "alpha", "version": "1.0"}
        assert val(s, "cds_drift_alert", feature="manufacturer", **labels) == 1
        assert val(s, "cds_drift_alert", feature="slice_thickness", **labels) == 0
        assert val(s, "cds_drift_psi", feature="manufacturer", **labels) > 0.25
        assert val(s, "cds_drift_psi_threshold") == 0.25


def test_metrics_drift_follows_the_settings(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _fill(store, "B", (5.0,))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, DriftSettings(psi_alert=50.0), clock=lambda: NOW))
    s = parse(generate_latest(registry).decode())
    labels = {"model": "alpha", "version": "1.0", "feature": "manufacturer"}
    assert val(s, "cds_drift_alert", **labels) == 0
    assert val(s, "cds_drift_psi_threshold") == 50.0


def test_a_version_4_store_gets_the_runs_table(tmp_path: Path) -> None:
    """A store file written before schema 5 opens with the runs table added in place."""
    import sqlite3

    path = tmp_path / "old.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE observatory_runs")
    db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    store = SqliteStore(path)
    store.record_run(_run(1, NOW, maker="A", thickness=1.0, score=0.5))
    assert len(store.list_runs()) == 1
    assert store.schema_version == SCHEMA_VERSION
