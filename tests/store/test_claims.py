"""issue 21: several nodes on one store share the work by claims, on both stores.

Each node is a store of its own on the same file or database (``open_store(name)``),
as two ``cds serve`` processes are: the quiet-time check of a study, a job and a
delivery go to exactly one node, which is recorded; a claim a live node renews is
never taken, one whose lease lapsed (its node died) is.
"""

from __future__ import annotations

from cds.domain import DeliveryState, JobState, StudyState
from cds.store.claims import DELIVERY_LEASE_S, LEASE_S

from .conftest import StoreOpener
from .test_contract import result
from .test_sqlite import rec


def test_each_node_records_what_it_received(open_store: StoreOpener) -> None:
    a, b = open_store("node-a"), open_store("node-b")
    a.record_instance(rec(1))
    b.record_instance(rec(2))
    (summary,) = a.list_studies()
    assert summary.received_by == ("node-a", "node-b")
    assert summary.instance_count == 2


def test_one_node_claims_a_studys_quiet_time_check(open_store: StoreOpener) -> None:
    a, b = open_store("node-a"), open_store("node-b")
    a.record_instance(rec(1))  # due at 1011
    assert not a.complete_study("k1", 1010.0)
    assert b.complete_study("k1", 1011.0)
    assert not a.complete_study("k1", 1011.0)  # moved on: exactly one completes it
    assert not a.claim_study("k1", now=1012.0)  # b holds it while it routes
    assert b.claim_study("k1", now=1012.0)  # its own
    b.release_study("k1")
    assert a.claim_study("k1", now=1013.0)
    assert a.lapsed_studies(now=1013.0 + LEASE_S + 1) == []  # its own: not lapsed to itself
    assert b.lapsed_studies(now=1013.0 + LEASE_S + 1) == ["k1"]


def test_an_early_start_holds_the_study_against_completion(open_store: StoreOpener) -> None:
    a, b = open_store("node-a"), open_store("node-b")
    a.record_instance(rec(1))
    assert a.claim_study("k1", now=1005.0)  # its required series are present
    assert not b.complete_study("k1", 1011.0)  # due, but a still decides its jobs
    assert a.list_studies()[0].state is StudyState.RECEIVING
    a.release_study("k1")
    assert b.complete_study("k1", 1012.0)


def test_a_lapsed_claim_is_taken_and_a_renewed_one_is_not(open_store: StoreOpener) -> None:
    a, b = open_store("node-a"), open_store("node-b")
    a.record_instance(rec(1))
    assert a.complete_study("k1", 1011.0)
    assert a.renew_claims(now=1011.0 + LEASE_S) == 1
    assert not b.claim_study("k1", now=1011.0 + LEASE_S + 1)  # renewed: a is alive
    assert b.claim_study("k1", now=1011.0 + 2 * LEASE_S + 1)  # a stopped renewing it


def test_jobs_are_claimed_by_one_node_and_say_which(open_store: StoreOpener) -> None:
    a, b = open_store("node-a"), open_store("node-b")
    a.record_instance(rec(1))
    first = a.create_job("k1", "bone:m", now=1.0)
    second = a.create_job("k1", "blobs:m", now=2.0)
    cancelled = a.create_job("k1", "chest:m", now=3.0)
    a.cancel_job(cancelled.job_id, now=3.5)
    (got,) = b.claim_jobs(job_ids=[second.job_id], now=4.0)
    assert (got.job_id, got.state, got.claimed_by) == (second.job_id, JobState.RUNNING, "node-b")
    assert a.claim_jobs(job_ids=[second.job_id], now=4.0) == []  # exactly once
    assert a.claim_jobs(job_ids=[cancelled.job_id], now=4.0) == []
    assert [j.job_id for j in a.claim_jobs(limit=5, now=5.0)] == [first.job_id]
    assert {j.job_id: j.claimed_by for j in b.list_jobs()} == {
        first.job_id: "node-a",
        second.job_id: "node-b",
        cancelled.job_id: "node-a",  # the node that created it
    }


def test_a_restart_hands_back_its_own_and_lapsed_jobs_only(open_store: StoreOpener) -> None:
    a, b = open_store("node-a"), open_store("node-b")
    a.record_instance(rec(1))
    mine = a.create_job("k1", "bone:m", now=10.0)
    a.claim_jobs(job_ids=[mine.job_id], now=10.0)
    live = b.create_job("k1", "blobs:m", now=11.0)
    b.claim_jobs(job_ids=[live.job_id], now=11.0)
    b.renew_claims(now=50.0)
    assert [j.job_id for j in a.open_claims(now=60.0)] == [mine.job_id]  # b's is alive
    assert [j.job_id for j in a.open_claims(now=50.0 + LEASE_S + 1)] == [
        mine.job_id,
        live.job_id,  # b stopped renewing it: it died
    ]
    assert [j.job_id for j in b.open_claims(now=60.0)] == [live.job_id]  # b restarted


def test_deliveries_are_leased_to_one_node(open_store: StoreOpener) -> None:
    a, b = open_store("node-a"), open_store("node-b")
    a.record_instance(rec(1))
    out = a.record_results([result(1), result(2)], ["pacs"], now=10.0)
    got = a.claim_deliveries(now=20.0, limit=10)
    assert {d.delivery_id for d in got} == {d.delivery_id for d in out}
    assert {d.claimed_by for d in got} == {"node-a"}
    assert b.claim_deliveries(now=21.0) == []
    assert b.deliveries_due_now("pacs", 22.0) == 0  # a destination back: a's stay a's
    sent = a.delivery_attempted(got[0].delivery_id, ok=True, now=23.0)
    assert (sent.state, sent.claimed_by) == (DeliveryState.DELIVERED, "node-a")
    (again,) = b.claim_deliveries(now=20.0 + DELIVERY_LEASE_S)  # a died holding it
    assert (again.delivery_id, again.claimed_by) == (got[1].delivery_id, "node-b")


def test_a_restarted_node_sends_again_at_once_what_it_had_leased(
    open_store: StoreOpener,
) -> None:
    """Killed between sending a batch and recording it (failpoint delivery.sent), the
    node's restart makes its own leased deliveries due at once, not after the lease
    (integration_tests/test_kill_phases.py waited 300 s); another node's lease stays."""
    a, b = open_store("node-a"), open_store("node-b")
    a.record_instance(rec(1))
    a.record_results([result(1), result(2)], ["pacs"], now=10.0)
    (mine,) = a.claim_deliveries(now=20.0, limit=1)
    (theirs,) = b.claim_deliveries(now=20.0, limit=1)
    again = open_store("node-a")  # node-a started again
    assert again.release_deliveries(now=30.0) == 1
    (due,) = again.claim_deliveries(now=30.0)
    assert (due.delivery_id, due.claimed_by) == (mine.delivery_id, "node-a")
    assert theirs.delivery_id != mine.delivery_id
    assert again.release_deliveries(now=31.0) == 1  # its own new lease, not b's
    (free,) = b.claim_deliveries(now=31.0)  # b's own is still leased to b: not due
    assert free.delivery_id == mine.delivery_id


def test_a_claim_lasts_the_nodes_lease(open_store: StoreOpener) -> None:
    """``node.lease_s`` (the store's ``lease_s``): a node killed holding a study or a job
    is taken over that long after its last renewal, not after the 60 s default."""
    a, b = open_store("node-a", lease_s=3.0), open_store("node-b", lease_s=3.0)
    assert (a.lease_s, b.lease_s) == (3.0, 3.0)
    a.record_instance(rec(1))
    assert a.complete_study("k1", 1011.0)  # held until 1014
    assert not b.claim_study("k1", now=1013.9)
    assert b.lapsed_studies(now=1014.1) == ["k1"]
    job = a.create_job("k1", "bone:m", now=1012.0)
    assert [j.job_id for j in a.claim_jobs(job_ids=[job.job_id], now=1012.0)] == [job.job_id]
    assert b.open_claims(now=1014.9) == []  # held until 1015
    assert a.renew_claims(now=1014.0) == 2  # the study and the job, until 1017
    assert not b.claim_study("k1", now=1016.9)
    assert b.open_claims(now=1016.9) == []
    assert [j.job_id for j in b.open_claims(now=1017.1)] == [job.job_id]
    assert b.claim_study("k1", now=1017.1)
    assert a.claim_study("k1", now=1017.2) is False  # b holds it now, for b's lease
    assert open_store("node-c").lease_s == LEASE_S == 60.0  # the default
