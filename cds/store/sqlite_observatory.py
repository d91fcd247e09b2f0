"""The observatory's part of the SQLite store: model runs (drift) and the counts
``GET /metrics`` reads, grouped in SQL so that a scrape reads no row one by one."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from cds.domain import HistogramRow, MetricsSnapshot, RunRecord
from cds.store.sqlite_host import SqliteHost as _Host

_RUN_COLS = (
    "run_key, at, model, version, provider, seconds, images, modality, body_part, "
    "manufacturer, scanner_model, protocol, slice_thickness, kvp, pixel_spacing, scores"
)

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
        "AND r.created_at >= s.completed_at GROUP BY r.study_key, r.job_kind",
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


def _i(v: object) -> int:
    return int(v) if isinstance(v, int | float) else 0


def _f(v: object) -> float:
    return float(v) if isinstance(v, int | float) else 0.0


def _num(v: object) -> float | None:
    return None if v is None else _f(v)


def _run(row: sqlite3.Row) -> RunRecord:
    scores = json.loads(str(row["scores"]))
    return RunRecord(
        run_key=str(row["run_key"]),
        at=_f(row["at"]),
        model=str(row["model"]),
        version=str(row["version"]),
        provider=str(row["provider"]),
        seconds=_f(row["seconds"]),
        images=_i(row["images"]),
        modality=str(row["modality"]),
        body_part=str(row["body_part"]),
        manufacturer=str(row["manufacturer"]),
        scanner_model=str(row["scanner_model"]),
        protocol=str(row["protocol"]),
        slice_thickness=_num(row["slice_thickness"]),
        kvp=_num(row["kvp"]),
        pixel_spacing=_num(row["pixel_spacing"]),
        scores={str(k): float(v) for k, v in scores.items()},
    )


def _histogram(
    host: _Host, n_labels: int, source: str, bounds: Sequence[float]
) -> list[HistogramRow]:
    """One row per label set of ``source`` (label columns, then the value): the count
    at or under each bound, the count and the sum."""
    labels = [f"c{i}" for i in range(n_labels)]
    under = [f"le{i}" for i in range(len(bounds))]
    group = f"GROUP BY {', '.join(labels)} ORDER BY {', '.join(labels)}" if labels else ""
    rows = host._query(
        # S608: the columns and sources are this module's constants; values are bound
        f"WITH src ({', '.join([*labels, 'v'])}) AS ({source}) "  # noqa: S608
        f"SELECT {''.join(c + ', ' for c in labels)}COUNT(*) AS n, TOTAL(v) AS total, "
        f"{', '.join(f'SUM(v <= ?) AS {le}' for le in under)} "
        f"FROM src WHERE v IS NOT NULL {group}",
        tuple(bounds),
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
    """Runs and metric counts of ``SqliteStore`` (see ``StateStore`` for the contract)."""

    def record_run(self: _Host, run: RunRecord) -> None:
        with self._tx() as db:
            db.execute(
                f"INSERT INTO observatory_runs ({_RUN_COLS}) VALUES "  # noqa: S608 (constant)
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_key) DO UPDATE "
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
                clauses.append(f"{col} {op} ?")
                args.append(val)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {_RUN_COLS} FROM observatory_runs {where} ORDER BY at, run_key",  # noqa: S608
            tuple(args),
        )
        return [_run(r) for r in rows]

    def metrics_snapshot(self: _Host, bounds: Sequence[float]) -> MetricsSnapshot:
        def pairs(sql: str) -> dict[tuple[str, ...], int]:
            """Rows of (labels..., count), by position: the labels vary by query."""
            return {tuple(str(v) for v in r[:-1]): _i(r[-1]) for r in self._query(sql)}

        (instances,) = self._query(
            "SELECT COUNT(*) AS stored, TOTAL(duplicates_received) AS duplicates FROM instances"
        )
        stored = instances["stored"]
        (versions,) = self._query("SELECT COUNT(*) AS replaced FROM instance_versions")
        failed = self._query(
            "SELECT destination, TOTAL(CASE WHEN state = 'delivered' "
            "THEN MAX(attempts - 1, 0) ELSE attempts END) AS failed FROM deliveries "
            "GROUP BY destination"
        )
        return MetricsSnapshot(
            instances_stored=_i(stored),
            instances_received={
                "new": _i(stored),
                "replaced": _i(versions["replaced"]),
                "duplicate": _i(instances["duplicates"]),
            },
            jobs=pairs("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state"),
            results=pairs("SELECT job_kind, state, COUNT(*) FROM results GROUP BY job_kind, state"),
            deliveries=pairs(
                "SELECT destination, state, COUNT(*) FROM deliveries GROUP BY destination, state"
            ),
            delivery_failed_attempts={str(r["destination"]): _i(r["failed"]) for r in failed},
            findings=pairs(
                "SELECT model, version, CASE WHEN present THEN 'true' ELSE 'false' END, "
                "COUNT(*) FROM findings GROUP BY 1, 2, 3"
            ),
            feedback=pairs(
                "SELECT model, version, action, COUNT(*) FROM feedback GROUP BY 1, 2, 3"
            ),
            histograms={
                name: _histogram(self, n, source, bounds)
                for name, (n, source) in _HISTOGRAM_SOURCES.items()
            },
        )
