"""issue 25, item 2: an urgent finding reaches a RIS as an HL7 v2.5.1 ORU^R01 over MLLP,
through the durable notification outbox (item 1).

The RIS is hl7apy's own MLLP server (``mllp_peer.Ris``) on loopback, answering the ACK
codes a test gives it; the store is a real SQLite file.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import dcmread
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from structlog.testing import capture_logs

from cds.delivery.hl7v2 import (
    Hl7Error,
    control_id_of,
    escape,
    lines,
    oru_r01,
    read_ack,
    send_mllp,
    unescape,
)
from cds.delivery.notify import Notifier, notification_id
from cds.destinations import Hl7v2Target
from cds.domain import InstanceRecord
from cds.findings import Finding
from cds.routing.rules import RoutingFile, parse_routing
from cds.store.sqlite import SqliteStore

from ..conftest import free_port
from .mllp_peer import SILENT, Ris, target
from .test_notify import BLEED, FRACTURE, SHA, SOURCE, Clock, events, patient_values, result

ANY = {"target": "ris", "findings": ["any"]}
LONG_UID = "1.2.840.113704.1.111.6220.1471586090.1." + "9" * 25  # 64 characters


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "state.db")
    s.record_instance(  # the study whose history gets the events
        InstanceRecord(
            "1.2", "1.2.1", "1.2.1.1", CTImageStorage, "1.2.840.10008.1.2.1", "CT", 1, "k1",
            "spool/x.dcm", 1, "0" * 64, "TEST", 1000.0, 1.0,
        )
    )  # fmt: skip
    return s


@pytest.fixture
def source() -> Any:
    if not SOURCE.is_file():
        pytest.skip(f"corpus file missing: {SOURCE}")
    return dcmread(SOURCE, stop_before_pixels=True)


@pytest.fixture
def ris() -> Iterator[Ris]:
    r = Ris()
    yield r
    r.close()


def routing(port: int, timeout_s: float = 2.0, **extra: Any) -> RoutingFile:
    return parse_routing(
        {
            "notifications": {"ris": target(port, timeout_s=timeout_s, **extra)},
            "pipelines": {
                "ct-head": {"model": "cds-ref-ct-head", "results": ["SR"], "notify": ANY}
            },
        },
        "test",
    )


def notifier(store: SqliteStore, rf: RoutingFile, clock: Clock, **kw: Any) -> Notifier:
    return Notifier(
        store,
        lambda: rf.notifications,
        clock,
        notify_of=lambda p: s.notify if (s := rf.pipelines.get(p)) else None,
        backoff_initial_s=2.0,
        backoff_max_s=30.0,
        **kw,
    )


def parsed(message: str) -> Any:
    return parse_message(message, validation_level=VALIDATION_LEVEL.STRICT)


# --- the message ----------------------------------------------------------------
@pytest.mark.parametrize("priority", ["stat", "asap"])
def test_oru_r01_carries_findings_priority_model_and_no_patient(priority: str) -> None:
    """issue 25: MSH (cds, the RIS's application and facility, the control ID), no PID,
    OBR with the priority, OBX per finding (code, scheme, score), the model (name,
    version, SHA-256) and the advisory text; valid 2.5.1 ORU^R01 read back by hl7apy."""
    t = Hl7v2Target.model_validate(
        target(2575, receiving_application="RIS-APP", receiving_facility="HOSP",
               priority=priority)
    )  # fmt: skip
    res = result(Finding(BLEED, 0.93, True), Finding(FRACTURE, 0.71, True))
    text = "AI suggestion | à faire valider ^ par un radiologue. " * 5
    er7 = oru_r01(
        "0123456789abcdef0123", LONG_UID, res, res.findings,
        target=t, conclusion=text, issued=1_700_000_000.0,
    )  # fmt: skip
    m = parsed(er7)
    assert m.msh.msh_3.value == "cds"
    assert (m.msh.msh_5.value, m.msh.msh_6.value) == ("RIS-APP", "HOSP")
    assert m.msh.msh_9.value == "ORU^R01^ORU_R01"
    assert m.msh.msh_10.value == control_id_of(er7) == "0123456789abcdef0123"
    assert m.msh.msh_12.value == "2.5.1"
    assert m.msh.msh_18.value == "UNICODE UTF-8"
    assert m.msh.msh_7.value == "20231114221320+0000"
    assert "\rPID" not in er7  # no patient segment: the RIS maps the study UID
    group = m.oru_r01_patient_result.oru_r01_order_observation
    obr = group.obr
    code = {"stat": "S", "asap": "A"}[priority]
    assert obr.obr_5.value == code
    assert obr.obr_27.value == f"^^^^^{code}"
    assert obr.obr_25.value == "P"
    obx = [o.obx for o in group.oru_r01_observation]
    assert [o.obx_1.value for o in obx] == [str(i) for i in range(1, len(obx) + 1)]
    by_code = {o.obx_3.value.split("^")[0]: o for o in obx}
    assert by_code["113014"].obx_5.value == LONG_UID
    bleed = by_code["1386000"]
    assert bleed.obx_2.value == "NM"
    assert bleed.obx_3.value == "1386000^Intracranial haemorrhage^SCT"
    assert (bleed.obx_4.value, bleed.obx_5.value, bleed.obx_8.value) == ("1", "0.93", "A")
    assert by_code["125605004"].obx_5.value == "0.71"
    assert by_code["111001"].obx_5.value == "cds-ref-ct-head"
    assert by_code["111003"].obx_5.value == "1.4.2"
    assert by_code["sha256"].obx_5.value == SHA
    advisory = [o for o in obx if o.obx_3.value.startswith("18782-3^")]
    assert {o.obx_2.value for o in advisory} == {"TX"}
    assert len(advisory) == 2  # a line is at most 199 characters
    # separators in a text are escaped
    assert " ".join(unescape(o.obx_5.value) for o in advisory) == text
    assert all(o.obx_11.value == "P" for o in obx)


def test_lines_cut_between_words_and_never_inside_an_escape() -> None:
    text = "word " * 100 + "|" * 150
    got = lines(text.strip(), 50)
    assert all(len(x) <= 50 for x in got)
    assert all("\\" not in unescape(x) for x in got)  # no escape cut in two
    assert "".join(unescape(x) for x in got).replace(" ", "") == "word" * 100 + "|" * 150


def test_escape_round_trips_every_separator() -> None:
    raw = "a|b^c&d~e\\f\ng"
    assert escape(raw) == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g"
    assert unescape(escape(raw)) == raw


def test_control_id_must_fit_msh_10() -> None:
    t = Hl7v2Target.model_validate(target(2575))
    res = result(Finding(BLEED, 0.9, True))
    with pytest.raises(ValueError, match="1 to 20 letters"):
        oru_r01("x" * 21, "1.2", res, res.findings, target=t, conclusion="", issued=0.0)


def test_notification_id_is_deterministic_per_study_model_findings_and_target() -> None:
    f = [Finding(BLEED, 0.9, True)]
    a = notification_id("1.2", SHA, f, "ris")
    assert a == notification_id("1.2", SHA, [Finding(BLEED, 0.5, True)], "ris")
    assert len(a) == 20
    assert len({a, notification_id("1.3", SHA, f, "ris"), notification_id("1.2", "ab", f, "ris"),
                notification_id("1.2", SHA, f, "pacs")}) == 4  # fmt: skip


def test_read_ack_takes_msa_1_and_2() -> None:
    assert read_ack("MSH|^~\\&|R||cds\rMSA|AE|abc^x\r") == ("AE", "abc")
    with pytest.raises(Hl7Error, match="not an ACK"):
        read_ack("MSH|^~\\&|R||cds\rERR|x\r")


# --- through the outbox ---------------------------------------------------------
def test_aa_is_sent_once_and_recorded(ris: Ris, store: SqliteStore, source: Any) -> None:
    """An ORU with no patient value arrives; AA marks it sent; queuing the same
    finding again sends nothing more."""
    n = notifier(store, routing(ris.port), Clock())
    study_uid = str(source.StudyInstanceUID)
    with capture_logs() as logs:
        assert n.after_result("k1", study_uid, "ct-head", result(Finding(BLEED, 0.9, True)))
        (row,) = n.outbox.find()
        assert row.state == "pending"  # in the store before anything is sent
        assert ris.messages == []
        assert n.tick() == 1
    (msg,) = ris.messages
    assert study_uid in msg
    for value in patient_values(source):
        assert value not in msg
        assert value not in json.dumps(logs, default=str)
    (row,) = n.outbox.find()
    assert (row.state, row.attempts) == ("sent", 1)
    assert ris.control_ids == [row.notification_id]
    (done,) = events(store, "notified")
    assert "to ris (ACK AA)" in done
    assert not n.after_result("k1", study_uid, "ct-head", result(Finding(BLEED, 0.8, True)))
    assert n.tick() == 0
    assert len(ris.messages) == 1


def test_ae_is_retried_with_backoff_then_aa(ris: Ris, store: SqliteStore) -> None:
    clock = Clock()
    ris.answers = ["AE"]
    n = notifier(store, routing(ris.port), clock)
    n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
    assert n.tick() == 1
    (row,) = n.outbox.find()
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, "ACK AE")
    assert n.tick() == 0  # backing off
    clock.now += 2.0
    assert n.tick() == 1
    assert n.outbox.find()[0].state == "sent"
    assert len(set(ris.control_ids)) == 1  # the same message, the same control ID
    assert len(ris.messages) == 2
    assert "ACK AA" in events(store, "notified")[0]


def test_ar_until_max_attempts_is_dead_then_admin_retry_sends_it(
    ris: Ris, store: SqliteStore
) -> None:
    clock = Clock()
    ris.answers = ["AR", "AR", "AR"]
    n = notifier(store, routing(ris.port), clock, max_attempts=3)
    n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
    for wait in (0.0, 2.0, 4.0):
        clock.now += wait
        assert n.tick() == 1
    (row,) = n.outbox.find()
    assert (row.state, row.attempts) == ("dead", 3)
    (failed,) = events(store, "notify_failed")
    assert "after 3 tries: ACK AR" in failed
    assert n.pending == 0
    clock.now += 1000
    assert n.tick() == 0  # the dead letter waits for an admin
    after, changed = n.outbox.retry(row.notification_id, now=clock.now)
    assert changed
    assert after.state == "pending"
    assert n.tick() == 1
    assert n.outbox.find()[0].state == "sent"
    assert len(ris.messages) == 4
    assert len(events(store, "notify_retried")) == 1


def test_no_ack_in_time_is_retried(ris: Ris, store: SqliteStore) -> None:
    clock = Clock()
    ris.answers = [SILENT]
    n = notifier(store, routing(ris.port, timeout_s=0.5), clock)
    n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
    assert n.tick() == 1
    (row,) = n.outbox.find()
    assert (row.state, row.last_error) == ("pending", "no ACK within 0.5 s")
    clock.now += 2.0
    assert n.tick() == 1
    assert n.outbox.find()[0].state == "sent"


def test_outage_of_the_ris_then_sent_when_it_is_back(store: SqliteStore) -> None:
    """Nobody listens: the notification waits in the outbox, retried; once the RIS
    listens again it is sent, once."""
    clock = Clock()
    port = free_port()
    n = notifier(store, routing(port), clock, max_attempts=10)
    n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
    assert n.tick() == 1
    (row,) = n.outbox.find()
    assert row.state == "pending"
    assert row.last_error == "not reached (connection refused)"
    back = Ris(port)
    try:
        clock.now += 2.0
        assert n.tick() == 1
        assert back.control_ids == [row.notification_id]
        assert n.outbox.find()[0].state == "sent"
    finally:
        back.close()


def test_pending_notification_survives_a_restart_and_is_sent_once(
    ris: Ris, tmp_path: Path, store: SqliteStore
) -> None:
    """Written before it is sent: a node that stops (or dies) with it pending, or leased
    to itself mid-send, sends it at its next start; the RIS sees one control ID."""
    clock = Clock()
    n = notifier(store, routing(ris.port), clock)
    n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
    n.outbox.claim(clock())  # taken to send, then the node died: leased, unrecorded
    store.close()
    again = SqliteStore(tmp_path / "state.db")
    try:
        m = notifier(again, routing(ris.port), clock)
        assert m.tick() == 0  # still leased to the dead run
        m.start()  # a start takes back this node's leases: due now
        try:
            ris.wait_for(1)
        finally:
            m.stop()
        assert len(ris.control_ids) == 1
        assert m.outbox.find()[0].state == "sent"
    finally:
        again.close()


def test_tls_needs_a_trusted_certificate(tmp_path: Path) -> None:
    """With ``tls.enabled`` an untrusted RIS certificate is refused, before any byte of
    the message is sent."""
    key, cert = tmp_path / "ris.key", tmp_path / "ris.crt"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {made.stderr[-200:]!r}")
    ris = Ris()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ris.server.socket = ctx.wrap_socket(ris.server.socket, server_side=True)
    try:
        res = result(Finding(BLEED, 0.9, True))
        trusted = Hl7v2Target.model_validate(
            target(ris.port, tls={"enabled": True, "ca_file": str(cert)}, timeout_s=5)
        )
        msg = oru_r01("abc", "1.2", res, res.findings, target=trusted, conclusion="x", issued=0)
        no_ca = trusted.tls.model_copy(update={"ca_file": None})
        untrusted = trusted.model_copy(update={"tls": no_ca})
        with pytest.raises(Hl7Error, match="TLS: CERTIFICATE_VERIFY_FAILED"):
            send_mllp(untrusted, msg)
        assert send_mllp(trusted, msg) == "ACK AA"
        assert ris.control_ids == ["abc"]
    finally:
        ris.close()
