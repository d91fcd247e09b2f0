"""issue 17 (item 3): a correction keeps the outline the radiologist drew instead (schema
8: feedback.corrected_box); a store file written before keeps its feedback and gains the
column in place.

issue 21: the first test on both stores (``open_store`` is parametrised, conftest.py); the
PostgreSQL twin of the second is in test_postgres_schema.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cds.domain import FeedbackAction, FindingRecord, ImageBox
from cds.errors import FeedbackError
from cds.feedback.service import give_feedback
from cds.store.sqlite import SCHEMA_VERSION, SqliteStore

from .conftest import StoreOpener
from .test_sqlite import rec


def finding(uid: str = "2.25.1") -> FindingRecord:
    return FindingRecord(
        tracking_uid=uid,
        result_sop_uid="2.25.100",
        study_key="k1",
        job_kind="blobs:cds-ref-blob-detect",
        model="cds-ref-blob-detect",
        version="1.0.0",
        sha256="a" * 64,
        label_scheme="99CDS",
        label_value="CDS-0003",
        label_meaning="Focal hyperdensity",
        display_en="Focal hyperdensity",
        display_fr="Hyperdensité focale",
        present=True,
        score=0.99,
        created_at=1.0,
    )


def test_a_correction_keeps_its_outline_in_source_pixels(open_store: StoreOpener) -> None:
    store = open_store()
    store.record_instance(rec())  # the study "k1"
    store.record_findings([finding("2.25.1"), finding("2.25.2")])
    box = ImageBox("1.2.3.4", 1, 55.533329, 90.39608, 65.988701, 99.796616)
    fb = give_feedback(
        store,
        result_sop_uid="2.25.100",
        tracking_uid="2.25.1",
        action=FeedbackAction.CORRECT,
        who="AE:ORTHANC",
        source="dicom",
        reason="edited SR 2.25.7: outline changed",
        corrected_box=box,
        now=5.0,
    )
    give_feedback(
        store,
        result_sop_uid="2.25.100",
        tracking_uid="2.25.2",
        action=FeedbackAction.ACCEPT,
        who="AE:ORTHANC",
        source="dicom",
        now=6.0,
    )
    store.close()
    again = open_store()
    corrected, accepted = again.list_feedback(study_key="k1")
    assert corrected == fb
    assert corrected.corrected_box == box
    assert accepted.corrected_box is None
    # the study's history says an outline was corrected (never the coordinates)
    detail = again.get_study("k1")
    assert detail is not None
    (line,) = [e.detail for e in detail.events if e.kind == "feedback_correct"]
    assert line.endswith("finding 2.25.1 -> new outline by AE:ORTHANC (dicom)")
    with pytest.raises(FeedbackError, match="corrected_box is only for action 'correct'"):
        give_feedback(
            again,
            result_sop_uid="2.25.100",
            tracking_uid="2.25.2",
            action=FeedbackAction.REJECT,
            who="x",
            source="api",
            corrected_box=box,
        )


def test_a_schema_7_store_keeps_its_feedback_and_gains_corrected_box(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SqliteStore(path)
    store.record_findings([finding()])
    give_feedback(
        store,
        result_sop_uid="2.25.100",
        tracking_uid="2.25.1",
        action=FeedbackAction.REJECT,
        who="alice",
        source="review",
        now=5.0,
    )
    store.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE feedback DROP COLUMN corrected_box")
    db.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    db.commit()
    db.close()

    store = SqliteStore(path)
    (old,) = store.list_feedback()
    assert (old.action, old.who, old.corrected_box) == (FeedbackAction.REJECT, "alice", None)
    box = ImageBox("1.2.3.4", 2, 1.0, 2.0, 3.0, 4.0)
    give_feedback(
        store,
        result_sop_uid="2.25.100",
        tracking_uid="2.25.1",
        action=FeedbackAction.CORRECT,
        who="AE:ORTHANC",
        source="dicom",
        corrected_box=box,
        now=6.0,
    )
    assert [f.corrected_box for f in store.list_feedback()] == [None, box]
    store.close()
    version = sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()[0]
    assert version == str(SCHEMA_VERSION) == "13"
