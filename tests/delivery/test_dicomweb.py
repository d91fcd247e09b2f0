"""issue 22 (DICOMweb, STOW-RS delivery): ``kind: dicomweb`` destinations in the routing
file, and ``stow_batch`` against a local HTTP server: files sent as written, per-instance
outcomes from the Store Instances Response, HTTP errors and no answer as failed
deliveries with their reason, credentials read from files and never shown."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cds.api.dicomweb import InstanceOutcome, boundary_of, response_body, split_multipart
from cds.delivery import worker
from cds.delivery.dicomweb import stow_batch
from cds.delivery.scu import Outcome
from cds.destinations import DicomWebDestination
from cds.routing.rules import RoutingFileError, parse_routing
from tests.conftest import free_port

TOKEN = "tok-9fQ2xL7mN4pR8sV1wZ3"  # noqa: S105 (a test credential)
SR = "1.2.840.10008.5.1.4.1.1.88.22"


class Peer(ThreadingHTTPServer):
    """A DICOMweb origin server that records each request and answers as told."""

    answer: tuple[int, dict[str, Any] | None] = (200, None)
    requests: list[tuple[str, dict[str, str], bytes]]


class _Handler(BaseHTTPRequestHandler):
    server: Peer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.requests.append((self.path, dict(self.headers), body))
        status, doc = self.server.answer
        if doc is None and status in (200, 202, 409):  # acknowledge what came, like a server
            parts = split_multipart(body, boundary_of(self.headers["Content-Type"]))
            doc = response_body([InstanceOutcome(SR, _uid(p.content)) for p in parts])
        raw = json.dumps(doc).encode() if doc is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


def _uid(raw: bytes) -> str:
    from pydicom import dcmread

    return str(dcmread(BytesIO(raw), stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def peer() -> Iterator[Peer]:
    server = Peer(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def result_files(folder: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        ds = Dataset()
        ds.SOPClassUID = SR
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.Modality = "SR"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = SR
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"r{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def dest(peer: Peer, **extra: Any) -> DicomWebDestination:
    url = f"http://127.0.0.1:{peer.server_address[1]}/dicom-web/"
    return DicomWebDestination(kind="dicomweb", url=url, **extra)


# --- the routing file ----------------------------------------------------------------


def test_a_dicomweb_destination_is_read_beside_c_store_ones() -> None:
    rf = parse_routing(
        {
            "destinations": {
                "pacs": {"ae_title": "PACS", "host": "10.0.0.5", "port": 104},
                "web": {
                    "kind": "dicomweb",
                    "url": "https://archive.local/dicom-web/",
                    "auth": {"username": "cds", "password_file": "/etc/cds/pw"},
                    "tls": {"ca_file": "/etc/cds/ca.pem"},
                },
            },
            "pipelines": {"p": {"model": "m", "results": ["SR"], "destinations": ["pacs", "web"]}},
        }
    )
    web = rf.destinations["web"]
    assert isinstance(web, DicomWebDestination)
    assert web.url == "https://archive.local/dicom-web"
    assert web.tls.verify
    assert web.describe() == "STOW-RS https://archive.local/dicom-web"
    assert web.address == "archive.local:443"
    assert rf.destinations["pacs"].kind == "dimse"


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"kind": "ftp", "url": "x"}, "destinations.web: kind must be one of dimse, dicomweb"),
        ({"kind": "dicomweb"}, "destinations.web.url: Field required"),
        ({"kind": "dicomweb", "url": "ftp://x"}, "must be an http:// or https:// URL"),
        ({"kind": "dicomweb", "url": "https://u:p@x"}, "credentials do not belong in the URL"),
        (
            {"kind": "dicomweb", "url": "https://x", "auth": {"username": "u"}},
            "destinations.web.auth: basic auth needs both username and password_file",
        ),
        (
            {"kind": "dicomweb", "url": "https://x", "auth": {}},
            "give either bearer_token_file, or username and password_file",
        ),
        ({"kind": "dicomweb", "url": "https://x", "ae_title": "X"}, "web.ae_title: unknown field"),
        ({"ae_title": "PACS", "host": "h", "port": 0}, "destinations.web.port: Input should be"),
    ],
)
def test_a_bad_destination_is_refused_by_its_path(entry: dict[str, Any], error: str) -> None:
    with pytest.raises(RoutingFileError) as exc:
        parse_routing({"destinations": {"web": entry}})
    assert any(error in e for e in exc.value.errors), exc.value.errors


def test_the_worker_sends_by_the_destination_kind(
    tmp_path: Path, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = result_files(tmp_path, 1)
    assert worker.send_batch(files, dest(peer), "CDS", 5) == [Outcome(True, "HTTP 200 stored")]
    assert len(peer.requests) == 1
    seen: list[str] = []
    monkeypatch.setattr(worker, "store_batch", lambda *a: seen.append("c-store") or [])
    rf = parse_routing({"destinations": {"pacs": {"ae_title": "P", "host": "h", "port": 104}}})
    worker.send_batch(files, rf.destinations["pacs"], "CDS", 5)
    assert seen == ["c-store"]


# --- stow_batch ------------------------------------------------------------------------


def test_files_go_as_written_in_one_request_with_the_bearer_token(
    tmp_path: Path, peer: Peer
) -> None:
    files = result_files(tmp_path, 3)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    outcomes = stow_batch(files, dest(peer, auth={"bearer_token_file": token_file}), 5)
    assert [o.ok for o in outcomes] == [True, True, True]
    ((path, headers, body),) = peer.requests
    assert path == "/dicom-web/studies"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/dicom+json"
    parts = split_multipart(body, boundary_of(headers["Content-Type"]))
    assert [p.content for p in parts] == [f.read_bytes() for f in files]
    assert all(p.content_type == "application/dicom" for p in parts)


def test_basic_auth_reads_the_password_file(tmp_path: Path, peer: Peer) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pass\n")
    stow_batch(
        result_files(tmp_path, 1), dest(peer, auth={"username": "cds", "password_file": pw}), 5
    )
    ((_, headers, _),) = peer.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"cds:s3cret-pass").decode()


def test_refused_instances_fail_alone_with_their_failure_reason(tmp_path: Path, peer: Peer) -> None:
    files = result_files(tmp_path, 2)
    uids = [_uid(f.read_bytes()) for f in files]
    peer.answer = (
        202,
        response_body([InstanceOutcome(SR, uids[0]), InstanceOutcome(SR, uids[1], 0xA700, "x")]),
    )
    first, second = stow_batch(files, dest(peer), 5)
    assert first.ok
    assert not second.ok
    assert "FailureReason A700" in second.detail
    assert "HTTP 202" in second.detail
    assert not second.permanent  # retried with backoff, like a C-STORE failure


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ((500, None), "answered HTTP 500 Internal Server Error"),
        ((401, None), "answered HTTP 401 Unauthorized"),
        ((409, {}), "answered HTTP 409 without acknowledging it"),
        ((202, {}), "answered HTTP 202 without acknowledging it"),
    ],
)
def test_an_http_error_fails_the_batch_with_its_status(
    tmp_path: Path, peer: Peer, answer: tuple[int, dict[str, Any] | None], words: str
) -> None:
    peer.answer = answer
    outcomes = stow_batch(result_files(tmp_path, 2), dest(peer), 5)
    assert [o.ok for o in outcomes] == [False, False]
    assert all(words in o.detail and not o.permanent for o in outcomes), outcomes


def test_no_answer_and_unreadable_credentials_or_files_are_failures(tmp_path: Path) -> None:
    files = result_files(tmp_path, 1)
    down = DicomWebDestination(kind="dicomweb", url=f"http://127.0.0.1:{free_port()}")
    (outcome,) = stow_batch(files, down, 2)
    assert not outcome.ok
    assert "no answer (ConnectError" in outcome.detail
    missing = DicomWebDestination.model_validate(
        {**down.model_dump(), "auth": {"bearer_token_file": tmp_path / "absent"}}
    )
    (outcome,) = stow_batch(files, missing, 2)
    assert "cannot read its credentials file" in outcome.detail
    (gone,) = stow_batch([tmp_path / "gone.dcm"], down, 2)
    assert gone.permanent
    assert "result file unreadable" in gone.detail


def test_the_token_never_shows_in_an_outcome_or_a_dump(tmp_path: Path, peer: Peer) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    d = dest(peer, auth={"bearer_token_file": token_file})
    peer.answer = (403, None)
    outcomes = stow_batch(result_files(tmp_path, 1), d, 5)
    assert TOKEN not in repr(outcomes) + repr(d) + json.dumps(d.model_dump(mode="json"))
