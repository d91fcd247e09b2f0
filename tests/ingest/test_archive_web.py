"""issue 22 (a QIDO-RS/WADO-RS client for archives): what needs no archive.

- a WADO-RS part is handed on byte for byte, as the archive sent it;
- a QIDO-RS result gives the study, and one without a Study Instance UID is left out;
- nothing goes anywhere the routing file does not say: a redirect is refused (its
  target never asked) and an environment proxy is not used;
- credentials and CA files that cannot be read are named by their field.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pydicom
import pytest

from cds.destinations import DicomWebArchive, WebAuth, WebTls
from cds.ingest.archive import ArchiveError, StudyQuery
from cds.ingest.archive_web import WebArchiveClient, _study, address, part10

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "dicom"
FILES = [CORPUS / "ct" / "CT_small.dcm", CORPUS / "ct" / "GE_OptimaCT520_GH1308.dcm"]
JANUARY = StudyQuery(date(2024, 1, 1), date(2024, 1, 31))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_a_wado_part_is_handed_on_byte_for_byte(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"corpus missing: {path}")
    raw = path.read_bytes()
    ds = pydicom.dcmread(BytesIO(raw))  # as dicomweb-client reads a part
    assert part10(ds) == raw
    # a data set not read from a part (no buffer) is written as a PS3.10 file
    written = part10(pydicom.dcmread(path))
    assert written[128:132] == b"DICM"
    assert pydicom.dcmread(BytesIO(written)).SOPInstanceUID == ds.SOPInstanceUID


def test_a_qido_result_gives_the_study_and_nothing_else() -> None:
    found = _study(
        {
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00080020": {"vr": "DA", "Value": ["20240105"]},
            "00201208": {"vr": "IS", "Value": [12]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
        }
    )
    assert found is not None
    assert (found.study_uid, found.study_date, found.instances) == ("1.2.3", "20240105", 12)
    assert _study({"00080020": {"vr": "DA", "Value": ["20240105"]}}) is None
    assert _study({"0020000D": {"vr": "UI"}}) is None
    assert _study(["not", "an", "object"]) is None
    bad_count = _study({"0020000D": {"vr": "UI", "Value": ["1.2"]}, "00201208": {"Value": ["x"]}})
    assert bad_count is not None
    assert bad_count.instances is None


class _Counting(BaseHTTPRequestHandler):
    """A local HTTP server: ``redirect_to`` set, it redirects every GET there; it
    counts what it is asked."""

    hits: list[str]
    redirect_to: str | None = None

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", self.redirect_to + self.path)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2" if self.redirect_to is None else "0")
        self.end_headers()
        if self.redirect_to is None:
            self.wfile.write(b"[]")

    def log_message(self, *args: object) -> None:
        pass


def _server(redirect_to: str | None = None) -> tuple[ThreadingHTTPServer, list[str]]:
    hits: list[str] = []
    handler = type("H", (_Counting,), {"hits": hits, "redirect_to": redirect_to})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hits


@pytest.fixture
def servers() -> Iterator[list[ThreadingHTTPServer]]:
    started: list[ThreadingHTTPServer] = []
    yield started
    for s in started:
        s.shutdown()
        s.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_a_redirect_is_refused_and_its_target_never_asked(
    servers: list[ThreadingHTTPServer],
) -> None:
    elsewhere, elsewhere_hits = _server()
    servers.append(elsewhere)
    archive, hits = _server(redirect_to=_url(elsewhere))
    servers.append(archive)
    client = WebArchiveClient("pacs", DicomWebArchive(dicomweb_url=_url(archive) + "/dicom-web"))
    with pytest.raises(ArchiveError) as err:
        client.find_studies(JANUARY)
    assert str(err.value).startswith("archives.pacs.dicomweb_url: ")
    assert "redirect (HTTP 302), which is not followed" in str(err.value)
    assert len(hits) == 1
    assert hits[0].startswith("/dicom-web/studies?")
    assert elsewhere_hits == []


def test_an_environment_proxy_is_not_used(
    servers: list[ThreadingHTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, proxy_hits = _server()
    archive, hits = _server()
    servers.extend([proxy, archive])
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, _url(proxy))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = WebArchiveClient("pacs", DicomWebArchive(dicomweb_url=_url(archive)))
    assert client.find_studies(JANUARY) == []
    assert proxy_hits == []
    (asked,) = hits
    assert "StudyDate=20240101-20240131" in asked
    assert "includefield=0020000D" in asked


def test_unreadable_credentials_and_ca_file_are_named_by_their_field(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    basic = WebAuth(username="cds", password_file=missing)
    with pytest.raises(ArchiveError, match=r"^archives\.a\.auth\.password_file: cannot read"):
        WebArchiveClient("a", DicomWebArchive(dicomweb_url="http://h", auth=basic))
    bearer = WebAuth(bearer_token_file=missing)
    with pytest.raises(ArchiveError, match=r"^archives\.a\.auth\.bearer_token_file: cannot"):
        WebArchiveClient("a", DicomWebArchive(dicomweb_url="http://h", auth=bearer))
    tls = WebTls(ca_file=missing)
    with pytest.raises(ArchiveError, match=r"^archives\.a\.tls\.ca_file: no such file"):
        WebArchiveClient("a", DicomWebArchive(dicomweb_url="https://h", tls=tls))


def test_a_token_is_sent_in_the_authorization_header_only(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc123\n", encoding="utf-8")
    archive = DicomWebArchive(
        dicomweb_url="https://h:8443/dw", auth=WebAuth(bearer_token_file=token)
    )
    client = WebArchiveClient("a", archive)
    session = client.client._session
    assert session.headers["Authorization"] == "Bearer abc123"
    assert (session.trust_env, session.max_redirects, session.verify) == (False, 0, True)
    assert "abc123" not in repr(archive)
    assert address(archive.dicomweb_url) == "h:8443"
    assert address("http://h/dw") == "h:80"
