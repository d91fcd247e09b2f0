"""Tables of the SQLite state store, and the migration of an older store file.

A new file gets every table as below. A file written by an older cds gets what
it lacks in place when the store opens it (``migrate``): columns added with a
guarded ``ALTER TABLE ... ADD COLUMN``, so that no data is copied or lost.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 8  # 2: job times; 3: results, deliveries; 4: findings, feedback; 5: runs;
# 6: delivery priority; 7: what became of each object of a job (partial jobs);
# 8: the outline a correction puts instead (feedback.corrected_box)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    study_key TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL,
    complete_due_at REAL,
    completed_at REAL,
    reopened_count INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_state_due ON studies (state, complete_due_at);
CREATE INDEX IF NOT EXISTS studies_last ON studies (last_received_at);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_key TEXT NOT NULL REFERENCES studies (study_key),
    modality TEXT NOT NULL,
    series_number INTEGER,
    first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study ON series (study_key);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_key TEXT NOT NULL REFERENCES studies (study_key),
    series_uid TEXT NOT NULL REFERENCES series (series_uid),
    sop_class_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    version INTEGER NOT NULL,
    calling_ae TEXT NOT NULL,
    received_at REAL NOT NULL,
    duplicates_received INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_key);
CREATE TABLE IF NOT EXISTS instance_versions (
    sop_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL,
    superseded_at REAL NOT NULL,
    PRIMARY KEY (sop_uid, version)
);
CREATE TABLE IF NOT EXISTS study_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_key TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS study_events_study ON study_events (study_key, at);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    study_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    started_at REAL,
    finished_at REAL,
    objects TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
CREATE INDEX IF NOT EXISTS jobs_study ON jobs (study_key);
CREATE TABLE IF NOT EXISTS results (
    sop_uid TEXT PRIMARY KEY,
    study_key TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    path TEXT NOT NULL,
    job_kind TEXT NOT NULL,
    source_series_uid TEXT NOT NULL,
    model_version TEXT NOT NULL,
    inputs_seed TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    superseded_at REAL
);
CREATE INDEX IF NOT EXISTS results_study ON results (study_key, job_kind, source_series_uid);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    study_key TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    path TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    delivered_at REAL,
    priority INTEGER NOT NULL DEFAULT 0,
    UNIQUE (sop_uid, destination)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_study ON deliveries (study_key);
CREATE TABLE IF NOT EXISTS findings (
    tracking_uid TEXT PRIMARY KEY,
    result_sop_uid TEXT NOT NULL,
    study_key TEXT NOT NULL,
    job_kind TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    label_scheme TEXT NOT NULL,
    label_value TEXT NOT NULL,
    label_meaning TEXT NOT NULL,
    display_en TEXT NOT NULL,
    display_fr TEXT NOT NULL,
    present INTEGER NOT NULL,
    score REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_study ON findings (study_key);
CREATE INDEX IF NOT EXISTS findings_result ON findings (result_sop_uid);
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id TEXT PRIMARY KEY,
    tracking_uid TEXT NOT NULL,
    result_sop_uid TEXT NOT NULL,
    study_key TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    corrected_scheme TEXT,
    corrected_value TEXT,
    corrected_meaning TEXT,
    who TEXT NOT NULL,
    source TEXT NOT NULL,
    at REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    corrected_box TEXT
);
CREATE INDEX IF NOT EXISTS feedback_finding ON feedback (tracking_uid, at);
CREATE INDEX IF NOT EXISTS feedback_model ON feedback (model, version, at);
CREATE INDEX IF NOT EXISTS feedback_study ON feedback (study_key);
CREATE TABLE IF NOT EXISTS observatory_runs (
    run_key TEXT PRIMARY KEY,
    at REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    provider TEXT NOT NULL,
    seconds REAL NOT NULL,
    images INTEGER NOT NULL,
    modality TEXT NOT NULL,
    body_part TEXT NOT NULL,
    manufacturer TEXT NOT NULL,
    scanner_model TEXT NOT NULL,
    protocol TEXT NOT NULL,
    slice_thickness REAL,
    kvp REAL,
    pixel_spacing REAL,
    scores TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS observatory_runs_model ON observatory_runs (model, version, at);
"""

# Columns added after schema version 1: (table, column, declaration).
ADDED_COLUMNS = (
    ("jobs", "started_at", "REAL"),
    ("jobs", "finished_at", "REAL"),
    ("deliveries", "priority", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "objects", "TEXT"),  # JSON: [{"kind", "made", "failed", "reason"}]
    ("feedback", "corrected_box", "TEXT"),  # JSON: {"sop_uid", "frame", "box": [x0, y0, x1, y1]}
)


def migrate(db: sqlite3.Connection) -> None:
    """Bring an older store file to SCHEMA_VERSION (in one transaction, so that
    a CLI and the node opening the same file at once do not both alter it)."""
    for table, column, decl in ADDED_COLUMNS:
        present = {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value "
        "WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)",
        (str(SCHEMA_VERSION),),
    )
