"""Input and output drift per model version, from what each run saw and said.

For every series a model ran on, ``record_run`` keeps one row (``RunRecord``):
the acquisition as the DICOM headers of its first instance describe it
(Modality, BodyPartExamined, Manufacturer, ManufacturerModelName, ProtocolName,
SliceThickness, KVP, PixelSpacing) and the model's score per label. No patient
attribute and no UID is kept: the row's key is a one-way digest of the series
UID, model and version, so that a re-run of the same series replaces its row
instead of counting twice.

``drift_report`` compares, per model and version, a recent window (the last
``recent_days``) with a baseline: the ``baseline_days`` before it, or the
version's first ``baseline_runs`` runs. Every feature gets a population
stability index (PSI) between the two windows:

    PSI = sum over bins of (r - b) * ln(r / b)

where b and r are the baseline and recent shares of a bin (a share of 0 counts
as ``EPSILON``, so that a bin seen in one window only gives a large, finite
value). Categorical features bin by their value (empty: ``(none)``); numeric
ones by fixed edges (``FEATURES``), the same for every window and every node.
The total variation distance (categorical) or the two-sample Kolmogorov-Smirnov
statistic (numeric) comes with it, for reading. A feature alerts when its PSI
reaches the threshold and both windows hold at least ``min_runs`` values of it.
Usual readings of PSI: below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 a shift.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cds.domain import RunRecord
from cds.logging import get_logger

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from cds.config import Settings
    from cds.findings import InferenceResult
    from cds.store.base import ObservatoryStore

log = get_logger("cds.observatory")

DAY = 86400.0
EPSILON = 1e-4
NONE = "(none)"


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """Windows and thresholds (``observatory`` section of the settings when present)."""

    baseline_days: float = 28.0
    recent_days: float = 7.0
    baseline_runs: int | None = None  # the version's first N runs as baseline, if set
    psi_alert: float = 0.25
    min_runs: int = 30


def drift_settings_of(settings: Settings) -> DriftSettings:
    """The drift settings of the node's ``observatory`` section."""
    o = settings.observatory
    return DriftSettings(
        baseline_days=o.drift_baseline_days,
        recent_days=o.drift_recent_days,
        baseline_runs=o.drift_baseline_runs,
        psi_alert=o.drift_psi_alert,
        min_runs=o.drift_min_runs,
    )


# --- recording --------------------------------------------------------------
def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return " ".join(str(value).split())[:64] if value not in (None, "") else ""


def _number(ds: Dataset, *keywords: str) -> float | None:
    for keyword in keywords:
        try:  # a malformed value is left out, never fatal (tolerant when reading)
            value = ds.get(keyword)
            if value in (None, ""):
                continue
            number = float(value[0] if isinstance(value, Sequence) else value)
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
        if math.isfinite(number):
            return number
    return None


def run_from(headers: Dataset, result: InferenceResult, now: float) -> RunRecord:
    rec = result.record
    series = "\\".join(rec.series_uids)
    key = hashlib.sha256(f"cds-run\0{series}\0{rec.model}\0{rec.version}".encode()).hexdigest()
    return RunRecord(
        run_key=key[:32],
        at=now,
        model=rec.model,
        version=rec.version,
        provider=rec.provider,
        seconds=float(rec.seconds),
        images=int(rec.images),
        modality=_text(headers, "Modality"),
        body_part=_text(headers, "BodyPartExamined"),
        manufacturer=_text(headers, "Manufacturer"),
        scanner_model=_text(headers, "ManufacturerModelName"),
        protocol=_text(headers, "ProtocolName"),
        slice_thickness=_number(headers, "SliceThickness"),
        kvp=_number(headers, "KVP"),
        pixel_spacing=_number(headers, "PixelSpacing", "ImagerPixelSpacing"),
        scores={f.label.code.value: float(f.score) for f in result.findings},
    )


def record_run(
    store: ObservatoryStore, headers: Dataset, result: InferenceResult, now: float | None = None
) -> RunRecord | None:
    """Keep what one run saw and said, for drift and ``/metrics``; never raises (the
    observatory must not fail a job): a failure is logged and None returned."""
    try:
        run = run_from(headers, result, time.time() if now is None else now)
        store.record_run(run)
    except Exception as exc:
        log.warning("observatory.run_not_recorded", error_type=type(exc).__name__)
        return None
    return run


# --- statistics ---------------------------------------------------------------
def psi(baseline: Counter[str], recent: Counter[str]) -> float:
    """Population stability index between two binned samples (see the module doc)."""
    nb, nr = sum(baseline.values()), sum(recent.values())
    if not nb or not nr:
        raise ValueError("psi needs values in both samples")
    total = 0.0
    for key in set(baseline) | set(recent):
        b = max(baseline[key] / nb, EPSILON)
        r = max(recent[key] / nr, EPSILON)
        total += (r - b) * math.log(r / b)
    return total


def tvd(baseline: Counter[str], recent: Counter[str]) -> float:
    """Total variation distance: half the sum of the absolute share differences."""
    nb, nr = sum(baseline.values()), sum(recent.values())
    if not nb or not nr:
        raise ValueError("tvd needs values in both samples")
    return 0.5 * sum(abs(baseline[k] / nb - recent[k] / nr) for k in set(baseline) | set(recent))


def ks(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two
    empirical distribution functions."""
    if not a or not b:
        raise ValueError("ks needs values in both samples")
    xs, ys = sorted(a), sorted(b)
    gap = 0.0
    for x in sorted(set(xs) | set(ys)):
        fa = bisect.bisect_right(xs, x) / len(xs)
        fb = bisect.bisect_right(ys, x) / len(ys)
        gap = max(gap, abs(fa - fb))
    return gap


def bin_label(edges: Sequence[float], x: float) -> str:
    """The fixed bin of ``x``: ``[lo, hi)`` between two edges, open at both ends."""
    i = bisect.bisect_right(edges, x)
    lo = "-inf" if i == 0 else f"{edges[i - 1]:g}"
    hi = "+inf" if i == len(edges) else f"{edges[i]:g}"
    return f"[{lo}, {hi})"


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    kind: str  # categorical | numeric
    get: Callable[[RunRecord], Any]
    edges: tuple[float, ...] = ()


SCORE_EDGES = tuple(i / 10 for i in range(1, 10))
FEATURES: tuple[Feature, ...] = (
    Feature("modality", "categorical", lambda r: r.modality),
    Feature("body_part", "categorical", lambda r: r.body_part),
    Feature("manufacturer", "categorical", lambda r: r.manufacturer),
    Feature("scanner_model", "categorical", lambda r: r.scanner_model),
    Feature("protocol", "categorical", lambda r: r.protocol),
    Feature("slice_thickness", "numeric", lambda r: r.slice_thickness, (0.75, 1.25, 2, 3, 4, 6, 8)),
    Feature("kvp", "numeric", lambda r: r.kvp, (40, 70, 90, 110, 130)),
    Feature("pixel_spacing", "numeric", lambda r: r.pixel_spacing, (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)),
)


def _score_of(label: str) -> Callable[[RunRecord], float | None]:
    return lambda r: r.scores.get(label)


def _score_features(runs: Sequence[RunRecord]) -> list[Feature]:
    """One numeric feature per label the runs scored (output drift)."""
    labels = sorted({k for r in runs for k in r.scores})
    return [Feature(f"score:{k}", "numeric", _score_of(k), SCORE_EDGES) for k in labels]


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    feature: str
    kind: str
    method: str  # psi
    statistic: float | None  # None: no value in one of the windows
    threshold: float
    alert: bool
    enough_data: bool
    baseline_n: int
    recent_n: int
    distance: float | None  # tvd (categorical) or ks (numeric), for reading
    distance_method: str
    baseline: dict[str, int]  # values per bin (categorical: per value)
    recent: dict[str, int]


@dataclass(frozen=True, slots=True)
class Window:
    start: float | None
    end: float | None
    runs: int


@dataclass(frozen=True, slots=True)
class ModelDrift:
    model: str
    version: str
    baseline: Window
    recent: Window
    features: tuple[FeatureDrift, ...]

    @property
    def alert(self) -> bool:
        return any(f.alert for f in self.features)


def compare(
    feature: Feature,
    baseline: Sequence[RunRecord],
    recent: Sequence[RunRecord],
    threshold: float,
    min_runs: int,
) -> FeatureDrift:
    """One feature's drift between two windows of runs."""
    if feature.kind == "categorical":
        bv = [str(feature.get(r)) or NONE for r in baseline]
        rv = [str(feature.get(r)) or NONE for r in recent]
        bc, rc = Counter(bv), Counter(rv)
        distance = tvd(bc, rc) if bv and rv else None
        method = "tvd"
    else:
        bn = [float(v) for r in baseline if (v := feature.get(r)) is not None]
        rn = [float(v) for r in recent if (v := feature.get(r)) is not None]
        bc = Counter(bin_label(feature.edges, x) for x in bn)
        rc = Counter(bin_label(feature.edges, x) for x in rn)
        distance = ks(bn, rn) if bn and rn else None
        method = "ks"
    nb, nr = sum(bc.values()), sum(rc.values())
    stat = psi(bc, rc) if nb and nr else None
    enough = nb >= min_runs and nr >= min_runs
    return FeatureDrift(
        feature=feature.name,
        kind=feature.kind,
        method="psi",
        statistic=stat,
        threshold=threshold,
        alert=enough and stat is not None and stat >= threshold,
        enough_data=enough,
        baseline_n=nb,
        recent_n=nr,
        distance=distance,
        distance_method=method,
        baseline=dict(sorted(bc.items())),
        recent=dict(sorted(rc.items())),
    )


def drift_report(
    store: ObservatoryStore,
    now: float,
    cfg: DriftSettings,
    model: str | None = None,
) -> list[ModelDrift]:
    """Drift per model and version between the baseline and the recent window."""
    if cfg.recent_days <= 0 or cfg.baseline_days <= 0:
        raise ValueError("baseline_days and recent_days must be positive")
    if cfg.baseline_runs is not None and cfg.baseline_runs < 1:
        raise ValueError("baseline_runs must be at least 1")
    recent_start = now - cfg.recent_days * DAY
    if cfg.baseline_runs is None:
        since: float | None = recent_start - cfg.baseline_days * DAY
    else:
        since = None  # the version's first runs, whenever they were
    runs = store.list_runs(model=model, since=since, until=now)
    versions: dict[tuple[str, str], list[RunRecord]] = {}
    for r in runs:
        versions.setdefault((r.model, r.version), []).append(r)
    reports = []
    for (name, version), rows in sorted(versions.items()):
        rows.sort(key=lambda r: r.at)
        if cfg.baseline_runs is None:
            base = [r for r in rows if r.at < recent_start]
            bwin = Window(recent_start - cfg.baseline_days * DAY, recent_start, len(base))
        else:
            base = rows[: cfg.baseline_runs]
            bwin = Window(base[0].at if base else None, base[-1].at if base else None, len(base))
        keys = {r.run_key for r in base}
        recent = [r for r in rows if r.at >= recent_start and r.run_key not in keys]
        features = [*FEATURES, *_score_features(rows)]
        reports.append(
            ModelDrift(
                model=name,
                version=version,
                baseline=bwin,
                recent=Window(recent_start, now, len(recent)),
                features=tuple(
                    compare(f, base, recent, cfg.psi_alert, cfg.min_runs) for f in features
                ),
            )
        )
    return reports
