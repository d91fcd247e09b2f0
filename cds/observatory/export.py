"""The observatory export: aggregated, de-identified statistics per model version and
ISO week, for a regional or national observatory (``cds observatory export``).

Nothing in it identifies a patient, a study, a user or the node: no study keys, UIDs,
AE titles or user names, no date finer than the ISO week, only counts and rates
(see ``cds.observatory.stats`` for what each figure counts). Small counts are
suppressed: a cell computed from fewer than ``min_count`` studies or findings (its
*basis*, below) is given as null with ``"suppressed": true``, and the basis itself is
never written.

JSON (``--format json``)::

    {
      "format": "cds-observatory-export/1",
      "cds_version": "0.1.0",
      "generated_week": "2026-W48",          # ISO week of the export, never a date
      "suppression_threshold": 5,
      "first_week": "2026-W40", "last_week": "2026-W47",   # weeks covered (null: none)
      "models": [{"name": "cds-ref-blob-detect", "version": "1.0.0",
                  "sha256": ["9f2c..."]}],   # the model files' digests (node-independent)
      "rows": [{"model": "cds-ref-blob-detect", "version": "1.0.0", "week": "2026-W47",
                "studies": {"value": 12, "suppressed": false},
                "positive_rate": {"value": null, "suppressed": true}, ...}]
    }

The cells of a row, and the basis each is suppressed on:

===========================  =================================================  ================
cell                         meaning                                            basis
===========================  =================================================  ================
studies                      studies processed                                  studies
findings                     findings made                                      findings
positive_rate                findings present / findings                        findings
reviewed                     findings with feedback                             findings
reviewed_rate                reviewed / findings                                findings
accept_rate, correct_rate,   current verdict / reviewed                         reviewed
reject_rate
median_time_to_feedback_s    first feedback - finding made (median)             reviewed
time_to_result_p50_s, _p90,  study completed -> first result                    those studies
_p99_s
job_run_time_p50_s, _p90,    job started -> finished                            those jobs
_p99_s
===========================  =================================================  ================

Rates are rounded to 4 decimals, seconds to 0.1 s. CSV (``--format csv``) has one
line per row: ``format, cds_version, generated_week, suppression_threshold, model,
version, sha256`` (digests separated by spaces), ``week``, then for each cell above
its value (empty when null) and ``<cell>_suppressed`` (true/false).

``--since`` / ``--until`` select whole ISO weeks: the week holding ``since``, up to
and without the week that starts at ``until`` (a date inside a week includes that
week).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cds import __version__
from cds.observatory.stats import (
    Bucket,
    ModelStats,
    Records,
    iso_week,
    model_stats,
    week_start,
)

FORMAT = "cds-observatory-export/1"
DEFAULT_MIN_COUNT = 5
_WEEK_S = 7 * 86400


@dataclass(frozen=True, slots=True)
class _Cell:
    name: str
    value: Callable[[ModelStats], float | int | None]
    basis: Callable[[ModelStats], int]
    digits: int | None  # rounding (None: an integer count)


def _ttr_n(s: ModelStats) -> int:
    return s.time_to_result_s.n


def _run_n(s: ModelStats) -> int:
    return s.job_run_time_s.n


CELLS: tuple[_Cell, ...] = (
    _Cell("studies", lambda s: s.studies, lambda s: s.studies, None),
    _Cell("findings", lambda s: s.findings, lambda s: s.findings, None),
    _Cell("positive_rate", lambda s: s.positive_rate, lambda s: s.findings, 4),
    _Cell("reviewed", lambda s: s.reviewed, lambda s: s.findings, None),
    _Cell("reviewed_rate", lambda s: s.reviewed_rate, lambda s: s.findings, 4),
    _Cell("accept_rate", lambda s: s.accept_rate, lambda s: s.reviewed, 4),
    _Cell("correct_rate", lambda s: s.correct_rate, lambda s: s.reviewed, 4),
    _Cell("reject_rate", lambda s: s.reject_rate, lambda s: s.reviewed, 4),
    _Cell(
        "median_time_to_feedback_s",
        lambda s: s.median_time_to_feedback_s,
        lambda s: s.reviewed,
        1,
    ),
    _Cell("time_to_result_p50_s", lambda s: s.time_to_result_s.p50, _ttr_n, 1),
    _Cell("time_to_result_p90_s", lambda s: s.time_to_result_s.p90, _ttr_n, 1),
    _Cell("time_to_result_p99_s", lambda s: s.time_to_result_s.p99, _ttr_n, 1),
    _Cell("job_run_time_p50_s", lambda s: s.job_run_time_s.p50, _run_n, 1),
    _Cell("job_run_time_p90_s", lambda s: s.job_run_time_s.p90, _run_n, 1),
    _Cell("job_run_time_p99_s", lambda s: s.job_run_time_s.p99, _run_n, 1),
)


def week_range(since: float | None, until: float | None) -> tuple[float | None, float | None]:
    """[since, until) widened to whole ISO weeks (see the module docstring)."""
    start = None if since is None else week_start(since)
    end = None
    if until is not None:
        end = week_start(until)
        if end < until:
            end += _WEEK_S
    return start, end


def _cell(c: _Cell, s: ModelStats, min_count: int) -> dict[str, Any]:
    if c.basis(s) < min_count:
        return {"value": None, "suppressed": True}
    value = c.value(s)
    if value is not None and c.digits is not None:
        value = round(value, c.digits)
    return {"value": value, "suppressed": False}


def build_export(
    records: Records,
    *,
    min_count: int = DEFAULT_MIN_COUNT,
    since: float | None = None,
    until: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The export as JSON-able data (the format is in the module docstring)."""
    if min_count < 1:
        raise ValueError(f"min_count: must be at least 1, not {min_count}")
    start, end = week_range(since, until)
    rows = model_stats(records, Bucket.WEEK, start, end)
    digests: dict[tuple[str, str], set[str]] = {}
    for s in rows:
        digests.setdefault((s.model, s.version), set()).update(s.sha256)
    weeks = [s.start for s in rows if s.start is not None]
    first = start if start is not None else min(weeks, default=None)
    last = end - _WEEK_S if end is not None else max(weeks, default=None)
    return {
        "format": FORMAT,
        "cds_version": __version__,
        "generated_week": iso_week(time.time() if now is None else now),
        "suppression_threshold": min_count,
        "first_week": None if first is None else iso_week(first),
        "last_week": None if last is None else iso_week(last),
        "models": [
            {"name": m, "version": v, "sha256": sorted(d)} for (m, v), d in sorted(digests.items())
        ],
        "rows": [
            {
                "model": s.model,
                "version": s.version,
                "week": s.period,
                **{c.name: _cell(c, s, min_count) for c in CELLS},
            }
            for s in rows
        ],
    }


def to_csv(export: dict[str, Any]) -> str:
    """The export as CSV, one line per model version and week."""
    sha = {(m["name"], m["version"]): " ".join(m["sha256"]) for m in export["models"]}
    head = ["format", "cds_version", "generated_week", "suppression_threshold"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [*head, "model", "version", "sha256", "week"]
        + [n for c in CELLS for n in (c.name, f"{c.name}_suppressed")]
    )
    for row in export["rows"]:
        cells = [row[c.name] for c in CELLS]
        w.writerow(
            [export[h] for h in head]
            + [row["model"], row["version"], sha[(row["model"], row["version"])], row["week"]]
            + [
                v
                for cell in cells
                for v in (
                    "" if cell["value"] is None else cell["value"],
                    str(cell["suppressed"]).lower(),
                )
            ]
        )
    return out.getvalue()
