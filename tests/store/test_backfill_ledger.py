"""issue 22 (backfill): the ledger a run resumes from, on both stores (schema 10)."""

from __future__ import annotations

from cds.domain import StudyState
from cds.store.backfill import BackfillLedger, BackfillSpec, backfill_mark
from cds.store.base import StateStore

from .conftest import StoreOpener
from .test_sqlite import rec

SPEC = BackfillSpec("arch", "2024-01-01", "2024-01-31", "CT", rate_per_min=60)


def test_a_run_is_found_again_by_its_query(store: StateStore) -> None:
    ledger = BackfillLedger(store)
    assert ledger.open_run(SPEC) == "querying"
    ledger.set_run_state(SPEC.name, "retrieving")
    again = BackfillSpec("arch", "2024-01-01", "2024-01-31", "CT", rate_per_min=10)
    assert ledger.open_run(again) == "retrieving"
    (s,) = ledger.status()
    assert (s.name, s.rate_per_min, s.state) == (
        "arch/2024-01-01/2024-01-31/CT",
        10.0,
        "retrieving",
    )


def test_studies_are_queued_once_and_resume_where_they_stopped(open_store: StoreOpener) -> None:
    store = open_store()
    ledger = BackfillLedger(store)
    ledger.open_run(SPEC)
    found = [(f"1.2.{n}", f"key{n}") for n in range(4)]
    assert ledger.add_studies(SPEC.name, found, deliver=False) == 4
    assert ledger.add_studies(SPEC.name, found, deliver=False) == 0  # the query again
    ledger.set_study_state(SPEC.name, "1.2.0", "retrieving")
    ledger.set_study_state(SPEC.name, "1.2.0", "retrieved", instances=3)
    ledger.set_study_state(SPEC.name, "1.2.1", "retrieving")  # then kill -9
    store.close()

    ledger = BackfillLedger(open_store())  # the resumed run
    assert ledger.open_studies(SPEC.name) == ["1.2.1", "1.2.2", "1.2.3"]
    (s,) = ledger.status()
    assert s.counts["retrieved"] == 1
    assert s.remaining == 3
    assert s.eta_s == 3.0  # 3 studies at 60/min


def test_a_study_on_the_node_or_in_another_run_is_skipped(store: StateStore) -> None:
    store.record_instance(rec(1))  # study key k1: received live
    ledger = BackfillLedger(store)
    ledger.open_run(SPEC)
    assert ledger.add_studies(SPEC.name, [("1.2.3", "k1"), ("9.9", "k9")], deliver=False) == 1
    other = BackfillSpec("arch", "2024-01-01", "2024-12-31")
    ledger.open_run(other)
    assert ledger.add_studies(other.name, [("9.9", "k9")], deliver=True) == 0
    by_name = {s.name: s.counts for s in ledger.status()}
    assert by_name[SPEC.name]["skipped"] == 1
    assert by_name[other.name]["skipped"] == 1
    assert backfill_mark(store, "k1") is None  # a live study stays live
    mark = backfill_mark(store, "k9")
    assert mark is not None
    assert (mark.backfill, mark.deliver, mark.retrieved) == (SPEC.name, False, False)


def test_processed_counts_the_studies_the_node_has_run(store: StateStore) -> None:
    ledger = BackfillLedger(store)
    ledger.open_run(SPEC)
    ledger.add_studies(SPEC.name, [("1.2.3", "k1")], deliver=True)
    ledger.set_study_state(SPEC.name, "1.2.3", "retrieved", instances=1)
    store.record_instance(rec(1))
    assert ledger.status()[0].processed == 0
    store.set_study_state("k1", StudyState.DONE, "test")
    (s,) = ledger.status()
    assert s.processed == 1
    assert s.as_dict()["total"] == 1
    mark = backfill_mark(store, "k1")
    assert mark is not None
    assert mark.retrieved
    assert mark.deliver
