"""issue 5: an urgent finding is announced to a worklist as a FHIR R4 DiagnosticReport.

A real HTTP server on loopback stands in for the RIS. The source study is a corpus CT
whose patient name, ID, birth date and accession number must never leave the node.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from structlog.testing import capture_logs

from cds.delivery.notify import Notifier, fhir_diagnostic_report, urgent_findings
from cds.domain import InstanceRecord
from cds.findings import Code, Finding, InferenceRecord, InferenceResult, Label, Text
from cds.routing.rules import RoutingFile, parse_routing
from cds.store.sqlite import SqliteStore

from ..conftest import free_port

SOURCE = Path(__file__).resolve().parents[3] / "shared/dicom/ct/Philips_IngenuityFlex_GH342.dcm"
SHA = "3f" * 32
TOKEN = "Bearer s3cret-token"  # noqa: S105 - a test token for a loopback server


class Ris:
    """An HTTP server that records each request and answers the next status in line."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        ris = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ris.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status = ris.statuses.pop(0) if ris.statuses else 201
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        port = self.server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{port}/fhir/DiagnosticReport"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ris() -> Iterator[Ris]:
    r = Ris()
    yield r
    r.close()


@pytest.fixture
def source() -> Any:
    if not SOURCE.is_file():
        pytest.skip(f"corpus file missing: {SOURCE}")
    ds = dcmread(SOURCE, stop_before_pixels=True)
    assert ds.PatientName
    assert ds.PatientID
    assert ds.PatientBirthDate
    assert ds.AccessionNumber
    return ds


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


def label(value: str, en: str, fr: str, *, normal: bool = False) -> Label:
    return Label(
        index=0,
        code=Code(scheme="SCT", value=value, meaning=en),
        display=Text(en=en, fr=fr),
        threshold=0.5,
        normal=normal,
    )


BLEED = label("1386000", "Intracranial haemorrhage", "Hémorragie intracrânienne")
FRACTURE = label("125605004", "Fracture of bone", "Fracture osseuse")
NORMAL = label("17621005", "Normal", "Normal", normal=True)


def result(*findings: Finding, kind: str = "classification") -> InferenceResult:
    rec = InferenceRecord(
        model="cds-ref-ct-head",
        version="1.4.2",
        sha256=SHA,
        provider="CPUExecutionProvider",
        cds_version="0.1.0",
        series_uids=("1.2.1",),
        images=1,
        seconds=0.1,
        timings={},
    )
    return InferenceResult(rec, kind, list(findings), {}, [])


def routing(url: str, notify: dict[str, Any] | None, **target: Any) -> RoutingFile:
    pipe: dict[str, Any] = {"model": "cds-ref-ct-head", "results": ["SR"]}
    if notify is not None:
        pipe["notify"] = notify
    return parse_routing(
        {
            "notifications": {
                "worklist": {"url": url, "headers": {"Authorization": TOKEN}, **target}
            },
            "pipelines": {"ct-head": pipe},
        },
        "test",
    )


def notifier(
    store: SqliteStore, rf: RoutingFile, clock: Clock | None = None, **kw: Any
) -> Notifier:
    box = {"rf": rf}
    n = Notifier(
        store,
        lambda: box["rf"].notifications,
        clock or Clock(),
        notify_of=lambda p: s.notify if (s := box["rf"].pipelines.get(p)) else None,
        backoff_initial_s=2.0,
        backoff_max_s=30.0,
        **kw,
    )
    n.box = box  # type: ignore[attr-defined]  # lets a test edit the routing file
    return n


def events(store: SqliteStore, kind: str) -> list[str]:
    study = store.get_study("k1")
    assert study is not None
    return [e.detail for e in study.events if e.kind == kind]


def patient_values(ds: Any) -> list[str]:
    return [
        str(ds.PatientName),
        *str(ds.PatientName).split("^"),
        str(ds.PatientID),
        str(ds.PatientBirthDate),
        str(ds.AccessionNumber),
    ]


ANY = {"target": "worklist", "findings": ["any"]}


ADVISORY = {"en": "to be reviewed by a radiologist", "fr": "à faire valider par un radiologue"}


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_urgent_finding_posts_a_preliminary_fhir_report(
    ris: Ris, store: SqliteStore, source: Any, lang: str
) -> None:
    """issue 5: a present finding the pipeline calls urgent is POSTed once, as FHIR R4
    JSON naming the study (by UID), the finding codes, the model, version and SHA-256,
    with an advisory text in both languages, the configured headers, and no patient data."""
    other = "fr" if lang == "en" else "en"
    rf = routing(ris.url, {"target": "worklist", "findings": ["1386000"], "min_score": 0.8})
    n = notifier(store, rf, language=lang)
    study_uid = str(source.StudyInstanceUID)
    res = result(Finding(BLEED, 0.93, True), Finding(FRACTURE, 0.97, True))
    with capture_logs() as logs:
        assert n.after_result("k1", study_uid, "ct-head", res)
        assert n.tick() == 1
    assert n.pending == 0
    (req,) = ris.requests
    assert req["path"] == "/fhir/DiagnosticReport"
    assert req["headers"]["Authorization"] == TOKEN
    assert req["headers"]["Content-Type"].startswith("application/fhir+json")
    report = json.loads(req["body"])
    assert report["resourceType"] == "DiagnosticReport"
    assert report["status"] == "preliminary"
    assert report["language"] == lang
    assert {c["code"] for c in report["category"][0]["coding"]} == {"LP29684-5", "RAD"}
    assert report["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "18748-4",
        "display": "Diagnostic imaging study",
    }
    (study,) = report["imagingStudy"]
    assert study["identifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}
    # only the urgent finding, coded; the fracture is not on the notify list
    assert [c["coding"][0]["code"] for c in report["conclusionCode"]] == ["1386000"]
    assert report["conclusionCode"][0]["coding"][0]["system"] == "http://snomed.info/sct"
    assert report["conclusionCode"][0]["text"] == BLEED.display.get(lang)
    conclusion = report["conclusion"]
    assert ADVISORY[lang] in conclusion
    assert BLEED.display.get(lang) in conclusion
    assert FRACTURE.display.get(lang) not in conclusion
    assert all(v in conclusion for v in ("cds-ref-ct-head", "1.4.2", SHA))
    (tr,) = report["_conclusion"]["extension"]
    parts = {e["url"]: e for e in tr["extension"]}
    assert parts["lang"]["valueCode"] == other
    assert ADVISORY[other] in parts["content"]["valueString"]
    assert SHA in parts["content"]["valueString"]
    assert report["meta"]["security"][0]["code"] == "AIAST"
    assert "subject" not in report
    # no patient data anywhere: payload, headers, history, logs
    sent = req["body"].decode() + json.dumps(req["headers"])
    history = json.dumps([(e.kind, e.detail) for e in store.get_study("k1").events])  # type: ignore[union-attr]
    logged = json.dumps(logs, default=str)
    for value in patient_values(source):
        assert value not in sent
        assert value not in history
        assert value not in logged
    # the history says where and how it went, never what was sent
    (done,) = events(store, "notified")
    assert "worklist" in done
    assert "HTTP 201" in done
    assert study_uid not in history
    assert study_uid not in logged
    assert TOKEN not in history
    assert TOKEN not in logged


def test_report_identifier_is_stable_for_the_same_findings() -> None:
    """A repeated notification (a re-run) carries the same report identifier."""
    res = result(Finding(BLEED, 0.9, True))
    a = fhir_diagnostic_report("1.2.3", res, res.findings, "en", issued=1.0)
    b = fhir_diagnostic_report("1.2.3", res, res.findings, "en", issued=2.0)
    c = fhir_diagnostic_report("1.2.4", res, res.findings, "en", issued=1.0)
    assert a["identifier"] == b["identifier"] != c["identifier"]
    assert a["issued"] != b["issued"]
    with pytest.raises(ValueError, match="unknown language 'de'"):
        fhir_diagnostic_report("1.2.3", res, res.findings, "de")


@pytest.mark.parametrize(
    ("notify", "findings"),
    [
        pytest.param(None, [Finding(BLEED, 0.99, True)], id="pipeline-without-notify"),
        pytest.param(
            {"target": "worklist", "findings": ["125605004"]},
            [Finding(BLEED, 0.99, True)],
            id="no-listed-code",
        ),
        pytest.param(
            {"target": "worklist", "findings": ["1386000"], "min_score": 0.95},
            [Finding(BLEED, 0.94, True)],
            id="below-min-score",
        ),
        pytest.param(ANY, [Finding(BLEED, 0.4, False)], id="not-present"),
        pytest.param(ANY, [Finding(NORMAL, 0.99, True)], id="normal-class"),
    ],
)
def test_nothing_is_sent_without_an_urgent_finding(
    ris: Ris, store: SqliteStore, notify: dict[str, Any] | None, findings: list[Finding]
) -> None:
    n = notifier(store, routing(ris.url, notify))
    assert not n.after_result("k1", "1.2.3", "ct-head", result(*findings))
    assert n.pending == 0
    assert n.tick() == 0
    assert ris.requests == []
    assert events(store, "notified") == events(store, "notify_failed") == []


def test_urgent_findings_selects_by_code_any_and_score() -> None:
    res = result(Finding(BLEED, 0.9, True), Finding(FRACTURE, 0.7, True))
    spec = routing("http://x", ANY).pipelines["ct-head"].notify
    assert spec is not None
    assert [f.label for f in urgent_findings(spec, res)] == [BLEED, FRACTURE]
    spec = spec.model_copy(update={"min_score": 0.8})
    assert [f.label for f in urgent_findings(spec, res)] == [BLEED]
    # a measurement is a value, never an urgent finding
    assert urgent_findings(spec, result(Finding(BLEED, 0.9, True), kind="measurement")) == []


def test_unknown_pipeline_sends_nothing(ris: Ris, store: SqliteStore) -> None:
    n = notifier(store, routing(ris.url, ANY))
    assert not n.after_result("k1", "1.2.3", "gone", result(Finding(BLEED, 0.9, True)))
    assert n.pending == 0


def test_server_error_is_retried_with_backoff_then_recorded_as_failed(
    ris: Ris, store: SqliteStore
) -> None:
    """A 500 is tried again after 2 s, then 4 s; after max_attempts, notify_failed."""
    clock = Clock()
    ris.statuses = [500, 500, 500]
    n = notifier(store, routing(ris.url, ANY), clock, max_attempts=3)
    assert n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
    assert n.tick() == 1
    assert n.tick() == 0  # not due yet
    clock.now += 1.9
    assert n.tick() == 0
    clock.now += 0.1
    assert n.tick() == 1
    assert events(store, "notify_failed") == []
    clock.now += 4.0
    assert n.tick() == 1
    assert len(ris.requests) == 3
    assert ris.requests[0]["body"] == ris.requests[2]["body"]  # the same report each time
    (failed,) = events(store, "notify_failed")
    assert "worklist" in failed
    assert "HTTP 500" in failed
    assert "after 3 tries" in failed
    assert events(store, "notified") == []
    assert n.pending == 0


def test_a_retry_that_succeeds_is_recorded_as_notified(ris: Ris, store: SqliteStore) -> None:
    clock = Clock()
    ris.statuses = [503, 200]
    n = notifier(store, routing(ris.url, ANY), clock)
    n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
    n.tick()
    clock.now += 2.0
    n.tick()
    assert len(ris.requests) == 2
    assert events(store, "notify_failed") == []
    (done,) = events(store, "notified")
    assert "HTTP 200" in done


def test_unreachable_server_is_retried_then_recorded_as_failed(store: SqliteStore) -> None:
    clock = Clock()
    url = f"http://127.0.0.1:{free_port()}/fhir/DiagnosticReport"  # nobody listens
    n = notifier(store, routing(url, ANY, timeout_s=2), clock, max_attempts=2)
    n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
    assert n.tick() == 1
    clock.now += 2.0
    assert n.tick() == 1
    (failed,) = events(store, "notify_failed")
    assert "not reached (connection refused)" in failed
    assert "after 2 tries" in failed


@pytest.mark.parametrize(
    ("status", "why"), [(400, "HTTP 400"), (302, "HTTP 302: redirect not followed")]
)
def test_refusal_and_redirect_are_not_retried(
    ris: Ris, store: SqliteStore, status: int, why: str
) -> None:
    """A 4xx will not change by trying again; a redirect would send the report somewhere
    the admin did not configure, so it is not followed."""
    ris.statuses = [status]
    n = notifier(store, routing(ris.url, ANY), Clock())
    n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
    assert n.tick() == 1
    assert [r["path"] for r in ris.requests] == ["/fhir/DiagnosticReport"]
    (failed,) = events(store, "notify_failed")
    assert why in failed
    assert "after 1 try" in failed
    assert n.pending == 0


def test_target_removed_from_the_routing_file_is_not_sent(ris: Ris, store: SqliteStore) -> None:
    n = notifier(store, routing(ris.url, ANY))
    n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
    n.box["rf"] = parse_routing({}, "test")  # type: ignore[attr-defined]
    assert n.tick() == 1
    assert ris.requests == []
    (failed,) = events(store, "notify_failed")
    assert "'worklist' is not in the routing file any more" in failed


def test_background_thread_sends_and_stops(ris: Ris, store: SqliteStore) -> None:
    n = Notifier(
        store,
        lambda: rf.notifications,
        notify_of=lambda p: s.notify if (s := rf.pipelines.get(p)) else None,
        backoff_initial_s=0.05,
        backoff_max_s=0.1,
    )
    rf = routing(ris.url, ANY)
    ris.statuses = [500]
    n.start()
    try:
        assert n.running
        n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
        deadline = time.monotonic() + 10
        while not events(store, "notified") and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        n.stop()
    assert not n.running
    assert len(ris.requests) == 2  # the 500, then the retry
    assert len(events(store, "notified")) == 1


def test_https_needs_a_trusted_certificate(tmp_path: Path, store: SqliteStore) -> None:
    """An unknown server certificate gets nothing; the target's ca_file lets it through."""
    key, cert = tmp_path / "ris.key", tmp_path / "ris.crt"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {made.stderr[-200:]!r}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ris = Ris(ctx)
    try:
        n = notifier(store, routing(ris.url, ANY), Clock(), max_attempts=1)
        n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
        n.tick()
        assert ris.requests == []
        (failed,) = events(store, "notify_failed")
        assert "TLS: CERTIFICATE_VERIFY_FAILED" in failed
        n = notifier(store, routing(ris.url, ANY, ca_file=str(cert)), Clock())
        n.after_result("k1", "1.2.3", "ct-head", result(Finding(BLEED, 0.9, True)))
        n.tick()
        assert len(ris.requests) == 1
        assert ris.requests[0]["headers"]["Authorization"] == TOKEN
        (done,) = events(store, "notified")
        assert "HTTP 201" in done
    finally:
        ris.close()
