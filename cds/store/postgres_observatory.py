"""The observatory's part of the PostgreSQL store: model runs (drift) and the counts
``GET /metrics`` reads (the ``ObservatoryStore`` role; the SQLite twin is
``sqlite_observatory``, whose run reader this module shares).

The same queries in PostgreSQL's words: ``COALESCE(SUM(...), 0)`` for SQLite's
``TOTAL``, ``COUNT(*) FILTER (WHERE ...)`` for a sum of booleans, ``GREATEST`` for the
two-argument ``MAX``; sums of integers are cast back from ``numeric``.
"""

# SQL text is built only from constant fragments; every value is a bound parameter
# (as in the sqlite_* modules, exempted in pyproject.toml)
# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Sequence

from cds.domain import HistogramRow, MetricsSnapshot, RunRecord
from cds.store.postgres_host import PostgresHost as _Host
from cds.store.postgres_host import as_row
from cds.store.sqlite_observatory import _RUN_COLS, _f, _i
from cds.store.sqlite_observatory import _run as _read_run

#: histogram name -> (number of label columns, SELECT of (labels..., value) rows)
_HISTOGRAM_SOURCES = {
    "cds_study_receive_to_complete_seconds": (
        0,
        "SELECT completed_at - first_received_at FROM studies WHERE completed_at IS NOT NULL",
    ),
    "cds_study_complete_to_result_seconds": (
        1,
        "SELECT r.job_kind, MIN(r.created_at) - s.completed_at FROM results r "
        "JOIN studies s ON s.study_key = r.study_key "
        "WHERE s.completed_at IS NOT NULL AND r.state != 'rejection' "
        "AND r.created_at >= s.completed_at GROUP BY r.study_key, r.job_kind, s.completed_at",
    ),
    "cds_job_run_seconds": (
        1,
        "SELECT kind, finished_at - started_at FROM jobs WHERE state = 'done' "
        "AND started_at IS NOT NULL AND finished_at IS NOT NULL",
    ),
    "cds_inference_seconds": (3, "SELECT model, version, provider, seconds FROM observatory_runs"),
    "cds_delivery_seconds": (
        1,
        "SELECT destination, delivered_at - created_at FROM deliveries "
        "WHERE state = 'delivered' AND delivered_at IS NOT NULL",
    ),
}


def _histogram(
    host: _Host, n_labels: int, source: str, bounds: Sequence[float]
) -> list[HistogramRow]:
    """One row per label set of ``source``: the count at or under each bound, the count
    and the sum (see ``sqlite_observatory._histogram``)."""
    labels = [f"c{i}" for i in range(n_labels)]
    under = [f"le{i}" for i in range(len(bounds))]
    group = f"GROUP BY {', '.join(labels)} ORDER BY {', '.join(labels)}" if labels else ""
    rows = host._query(
        f"WITH src ({', '.join([*labels, 'v'])}) AS ({source}) "
        f"SELECT {''.join(c + ', ' for c in labels)}COUNT(*) AS n, "
        f"COALESCE(SUM(v), 0) AS total"
        f"{''.join(f', COUNT(*) FILTER (WHERE v <= %s) AS {le}' for le in under)} "
        f"FROM src WHERE v IS NOT NULL {group}",
        tuple(float(b) for b in bounds),
    )
    out = []
    for row in rows:
        count = _i(row["n"])
        if count:
            out.append(
                HistogramRow(
                    labels=tuple(str(row[c]) for c in labels),
                    cumulative=tuple(_i(row[le]) for le in under),
                    count=count,
                    total=_f(row["total"]),
                )
            )
    return out


class ObservatoryMixin:
    """Runs and metric counts of ``PostgresStore`` (see ``ObservatoryStore``)."""

    def record_run(self: _Host, run: RunRecord) -> None:
        with self._tx() as db:
            db.execute(
                f"INSERT INTO observatory_runs ({_RUN_COLS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (run_key) DO UPDATE "
                "SET at = excluded.at, provider = excluded.provider, seconds = excluded.seconds, "
                "images = excluded.images, modality = excluded.modality, "
                "body_part = excluded.body_part, manufacturer = excluded.manufacturer, "
                "scanner_model = excluded.scanner_model, protocol = excluded.protocol, "
                "slice_thickness = excluded.slice_thickness, kvp = excluded.kvp, "
                "pixel_spacing = excluded.pixel_spacing, scores = excluded.scores",
                (
                    run.run_key,
                    run.at,
                    run.model,
                    run.version,
                    run.provider,
                    run.seconds,
                    run.images,
                    run.modality,
                    run.body_part,
                    run.manufacturer,
                    run.scanner_model,
                    run.protocol,
                    run.slice_thickness,
                    run.kvp,
                    run.pixel_spacing,
                    json.dumps(run.scores, sort_keys=True),
                ),
            )

    def list_runs(
        self: _Host,
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[RunRecord]:
        clauses, args = [], []
        for col, op, val in (("model", "=", model), ("at", ">=", since), ("at", "<", until)):
            if val is not None:
                clauses.append(f"{col} {op} %s")
                args.append(val)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {_RUN_COLS} FROM observatory_runs {where} ORDER BY at, run_key",
            tuple(args),
        )
        return [_read_run(as_row(r)) for r in rows]

    def metrics_snapshot(self: _Host, bounds: Sequence[float]) -> MetricsSnapshot:
        def pairs(sql: str) -> dict[tuple[str, ...], int]:
            """Rows of (labels..., count), by position: the labels vary by query."""
            out = {}
            for r in self._query(sql):
                values = list(r.values())
                out[tuple(str(v) for v in values[:-1])] = _i(values[-1])
            return out

        (instances,) = self._query(
            "SELECT COUNT(*) AS stored, "
            "COALESCE(SUM(duplicates_received), 0)::bigint AS duplicates FROM instances"
        )
        stored = instances["stored"]
        (versions,) = self._query("SELECT COUNT(*) AS replaced FROM instance_versions")
        failed = self._query(
            "SELECT destination, COALESCE(SUM(CASE WHEN state = 'delivered' "
            "THEN GREATEST(attempts - 1, 0) ELSE attempts END), 0)::bigint AS failed "
            "FROM deliveries GROUP BY destination"
        )
        return MetricsSnapshot(
            instances_stored=_i(stored),
            instances_received={
                "new": _i(stored),
                "replaced": _i(versions["replaced"]),
                "duplicate": _i(instances["duplicates"]),
            },
            jobs=pairs("SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state"),
            results=pairs(
                "SELECT job_kind, state, COUNT(*) AS n FROM results GROUP BY job_kind, state"
            ),
            deliveries=pairs(
                "SELECT destination, state, COUNT(*) AS n FROM deliveries "
                "GROUP BY destination, state"
            ),
            delivery_failed_attempts={str(r["destination"]): _i(r["failed"]) for r in failed},
            findings=pairs(
                "SELECT model, version, CASE WHEN present <> 0 THEN 'true' ELSE 'false' END "
                "AS present, COUNT(*) AS n FROM findings GROUP BY 1, 2, 3"
            ),
            feedback=pairs(
                "SELECT model, version, action, COUNT(*) AS n FROM feedback GROUP BY 1, 2, 3"
            ),
            histograms={
                name: _histogram(self, n, source, bounds)
                for name, (n, source) in _HISTOGRAM_SOURCES.items()
            },
        )
