"""issue 14 'Hardening' of the HTTP layer, against the real node over real sockets
(uvicorn as ``cds serve`` runs it): request bodies bounded before they are read (413),
422s that never echo what was sent, security headers on every answer, the API docs
served offline, failed logins counted per address and credential (a valid token is
never refused), and X-Forwarded-For believed only from a trusted proxy."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from cds.api.app import create_app
from cds.api.auth import PUBLIC
from cds.api.peers import client_of
from cds.api.throttle import FailureThrottle
from cds.config import Settings

from ..admin.helpers import serving
from ..review.test_review_page import CHROMIUM
from .authkit import TOKENS, audit_records, bearer, csrf_of, token_settings

LIMIT = 8 * 1024  # http.max_body_bytes of the nodes here
FEEDBACK = "/api/results/1.2.3/findings/4.5.6/feedback"
CANARY = "CANARY-7f3a9c"
SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@dataclass
class Served:
    settings: Settings
    base: str
    port: int

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in audit_records(self.settings) if r["event"] == event]


@contextmanager
def _serve(home: Path, **http: Any) -> Iterator[Served]:
    settings = token_settings(home, http={"max_body_bytes": LIMIT, **http})
    with serving(settings):
        port = settings.http.port
        yield Served(settings, f"http://127.0.0.1:{port}", port)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with _serve(tmp_path / "home") as node:
        yield node


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.base, follow_redirects=False, timeout=10) as client:
        yield client


# --- raw HTTP/1.1, to send what httpx would not ----------------------------------------


def _connect(served: Served, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    sock.sendall(head.replace("\n", "\r\n").encode())
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the node closed the connection without an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _post_head(path: str, extra: str) -> str:
    auth = f"Authorization: Bearer {TOKENS['radiologist']}"
    return f"POST {path} HTTP/1.1\nHost: cds\n{auth}\nContent-Type: application/json\n{extra}\n"


# --- body limit ------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_413_before_any_of_it_is_sent(served: Served) -> None:
    """Content-Length says 50 MB and not one byte follows: the node answers at once
    (had it waited for the body, recv would time out), with a JSON message."""
    with _connect(served, _post_head(FEEDBACK, "Content-Length: 50000000\n")) as sock:
        status, headers, body = _answer(sock)
    assert status == 413
    assert headers["connection"] == "close"
    assert body == b'{"detail":"request body over 8192 bytes (http.max_body_bytes)"}'
    assert headers["x-frame-options"] == "DENY"


def test_a_chunked_body_is_cut_off_once_over_the_limit_and_not_read_on(served: Served) -> None:
    """A chunked body that never ends is answered 413 once it passes the limit; after
    that the node reads no more of it: 64 MiB more cannot be pushed into it."""
    piece = b"x" * 1024
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    with _connect(served, _post_head(FEEDBACK, "Transfer-Encoding: chunked\n")) as sock:
        for _ in range(LIMIT // len(piece) + 2):
            sock.sendall(chunk)
        status, _, body = _answer(sock)  # the body was never finished
        assert status == 413
        assert b"http.max_body_bytes" in body
        # reset (the node closed it), or a send that blocks (the node reads no more)
        with pytest.raises((ConnectionError, TimeoutError)):
            _push(sock, chunk * 64, 64 * 1024 * 1024)


def _push(sock: socket.socket, data: bytes, total: int) -> None:
    for _ in range(total // len(data) + 1):
        sock.sendall(data)


def test_bodies_under_the_limits_pass_and_forms_have_their_own(
    served: Served, http: httpx.Client
) -> None:
    small = http.post(FEEDBACK, json={"action": "accept"}, headers=bearer("radiologist"))
    assert small.status_code == 404  # read and answered: no such result
    # an HTML form may be larger than the JSON limit, up to http.max_form_bytes (64 KiB)
    form = http.get("/login")
    got = http.post("/login", data={"csrf": csrf_of(form.text), "next": "/x" * 6000})
    assert got.status_code == 403  # the login form's own refusal, not 413
    over = http.post("/login", data={"csrf": "x", "next": "/x" * 40_000})
    assert over.status_code == 413
    assert over.json() == {"detail": "request body over 65536 bytes (http.max_form_bytes)"}


# --- 422 -------------------------------------------------------------------------------


def test_validation_errors_say_where_and_what_but_never_the_input(
    served: Served, http: httpx.Client
) -> None:
    radiologist = bearer("radiologist")
    bad_body = http.post(
        FEEDBACK, json={"action": CANARY, "reason": CANARY * 300}, headers=radiologist
    )
    assert bad_body.status_code == 422
    errors = bad_body.json()["detail"]
    assert {tuple(e["loc"]) for e in errors} == {("body", "action"), ("body", "reason")}
    assert all(e["msg"] and set(e) == {"type", "loc", "msg"} for e in errors)
    bad_json = http.post(
        FEEDBACK,
        content=f'{{"action": "{CANARY}'.encode(),
        headers={**radiologist, "Content-Type": "application/json"},
    )
    not_object = http.post(FEEDBACK, json=[CANARY], headers=radiologist)
    bad_query = http.get("/api/feedback", params={"limit": CANARY}, headers=radiologist)
    assert bad_query.json()["detail"][0]["loc"] == ["query", "limit"]
    for got in (bad_body, bad_json, not_object, bad_query):
        assert got.status_code == 422
        assert CANARY not in got.text
        assert got.headers["x-content-type-options"] == "nosniff"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    tags: dict[str, int] = {}


def test_a_key_the_client_made_up_is_not_echoed_in_the_location(tmp_path: Path) -> None:
    """No route of the node forbids unknown keys today; one that did would not echo
    them: a location part the API does not declare is said as '*'."""
    app = create_app(token_settings(tmp_path / "home"))

    @app.post("/strict", dependencies=[PUBLIC])
    def strict(body: _Strict) -> None:
        del body

    with TestClient(app) as client:
        got = client.post("/strict", json={"name": 1, CANARY: 1, "tags": {CANARY + "k": "x"}})
    assert got.status_code == 422
    locs = sorted(tuple(e["loc"]) for e in got.json()["detail"])
    assert locs == [("body", "*"), ("body", "name"), ("body", "tags", "*")]
    assert CANARY not in got.text


# --- security headers ------------------------------------------------------------------


def _csp(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return dict(part.strip().partition(" ")[::2] for part in policy.split(";"))


def test_every_answer_carries_the_security_headers(served: Served, http: httpx.Client) -> None:
    observer = bearer("observer")
    answers = {
        "json": http.get("/health"),
        "json 401": http.get("/api/studies"),
        "json 403": http.get("/api/studies", headers=observer),
        "json 404": http.get("/api/studies/none", headers=bearer("radiologist")),
        "json 413": http.post(FEEDBACK, content=b"x" * (LIMIT + 1)),
        "html": http.get("/login"),
        "html 403": http.get("/review", headers={**observer, "Accept": "text/html"}),
        "html page": http.get("/observatory", headers=observer),
        "css": http.get("/static/review.css"),
        "docs": http.get("/docs", headers=observer),
    }
    assert answers["html 403"].headers["content-type"].startswith("text/html")
    for what, got in answers.items():
        for name, value in SECURITY.items():
            assert got.headers.get(name) == value, (what, name)
        csp = _csp(got)
        assert csp["default-src"] == "'none'", what
        assert csp["frame-ancestors"] == "'none'", what
        assert csp["script-src"] == "'self'", what
        assert "unsafe-inline" not in got.headers["content-security-policy"], what


def test_a_crash_is_a_json_500_with_the_headers_too(tmp_path: Path) -> None:
    """The headers wrap Starlette's own error handling (the outermost layer); the
    answer says nothing of the cause."""
    app = create_app(token_settings(tmp_path / "home"))

    @app.get("/crash", dependencies=[PUBLIC])
    def crash() -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        got = client.get("/crash")
    assert got.status_code == 500
    assert got.json() == {"detail": "internal error: the node's log has the details"}
    assert got.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in got.headers["content-security-policy"]


def test_the_pages_have_no_inline_script_or_style(served: Served, http: httpx.Client) -> None:
    """What the policy would block: the pages link their CSS and JS from /static."""
    observer = bearer("observer")
    pages = [http.get("/login"), http.get("/observatory", headers=observer)]
    for page in pages:
        assert page.status_code == 200
        assert "<style" not in page.text
        assert " style=" not in page.text
        assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None
        assert re.search(r"\son[a-z]+=", page.text) is None
        for ref in re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text):
            assert http.get(ref).status_code == 200, ref


# --- the API docs, offline ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_docs_load_only_from_the_node(
    served: Served, http: httpx.Client, path: str
) -> None:
    page = http.get(path, headers=bearer("observer"))
    assert page.status_code == 200
    refs = re.findall(r'(?:href|src)="([^"]+)"', page.text)
    assert refs
    assert not [r for r in refs if not r.startswith("/") or r.startswith("//")]
    assert not re.search(r"https?://", page.text)
    assert "<script>" not in page.text  # no inline script: the start-up is a file too
    kinds = {"js": "text/javascript", "css": "text/css", "png": "image/png"}
    for ref in refs:
        asset = http.get(ref)
        assert asset.status_code == 200, ref
        assert asset.headers["content-type"].startswith(kinds[ref.rsplit(".", 1)[1]]), ref
    sources = " ".join(v for k, v in _csp(page).items() if k.endswith("-src"))
    assert not re.search(r"https?:|\*", sources)  # the node ('self') only
    assert "unsafe-inline" not in sources
    assert "unsafe-eval" not in sources


@pytest.mark.parametrize(("path", "drawn"), [("/docs", ".opblock"), ("/redoc", "[role=menuitem]")])
def test_the_api_docs_render_in_chromium_within_their_policy(
    served: Served, path: str, drawn: str
) -> None:
    """Signed in at /login, the docs draw the API with nothing blocked by their policy
    (but ReDoc's "powered by" logo, on a CDN) and nothing asked of another host."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no system Chromium at {CHROMIUM}")
    said: list[str] = []
    asked: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda message: said.append(message.text))
            page.on("request", lambda request: asked.append(request.url))
            page.goto(f"{served.base}/login?next={path}")
            page.locator("input[name=token]").fill(TOKENS["observer"])
            page.locator("button.sign-in").click()
            page.wait_for_url(served.base + path)
            page.locator(drawn).first.wait_for()
            assert page.locator(drawn).count() > 5
        finally:
            browser.close()
    logo = "https://cdn.redoc.ly/"
    assert not [t for t in said if "Content Security Policy" in t and logo not in t]
    assert not [u for u in asked if not u.startswith((served.base, "blob:", "data:", logo))]


def test_the_redoc_style_nonce_is_new_for_each_answer(served: Served, http: httpx.Client) -> None:
    nonces = {
        _csp(http.get("/redoc", headers=bearer("observer")))["style-src"].split("'nonce-")[1]
        for _ in range(2)
    }
    assert len(nonces) == 2


# --- failed logins ------------------------------------------------------------------------


def _as(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def test_one_credential_failing_again_and_again_is_throttled_alone(
    served: Served, http: httpx.Client
) -> None:
    """A script retrying a revoked token gets 429 after 20 failures; another wrong
    token from the same address (a colleague's typo behind the same NAT) still gets
    its 401, and the login form still works."""
    revoked = _as("revoked-token-of-an-old-script")
    codes = [http.get("/api/queue", headers=revoked).status_code for _ in range(21)]
    assert codes == [401] * 20 + [429]
    refused = http.get("/api/queue", headers=revoked)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert http.get("/api/queue", headers=_as("a-colleague-typo")).status_code == 401
    assert http.get("/api/queue", headers=bearer("observer")).status_code == 200
    form = http.get("/login")
    signed = http.post("/login", data={"csrf": csrf_of(form.text), "token": TOKENS["admin"]})
    assert signed.status_code == 303
    assert len(served.events("login_failed")) == 20  # 19 + the colleague; none past the limit
    (alert,) = served.events("security_alert")
    assert alert["where"] == "127.0.0.1"
    assert alert["detail"]["failures"] == 20
    assert "one credential" in alert["detail"]["reason"]


def test_a_valid_token_is_never_refused_while_its_address_is_throttled(
    served: Served, http: httpx.Client
) -> None:
    """Someone tries 101 tokens from one address: past 100 its refusals are 429 and
    written no more, but a valid token from that address, bearer or through the login
    form, gets in each time."""
    codes = [http.get("/api/queue", headers=_as(f"guess-{i:04d}")).status_code for i in range(101)]
    assert codes == [401] * 100 + [429]
    assert http.get("/api/queue", headers=_as("guess-new")).status_code == 429
    for role in ("observer", "radiologist", "admin"):
        assert http.get("/api/queue", headers=bearer(role)).status_code == 200
    form = http.get("/login")
    wrong = http.post("/login", data={"csrf": csrf_of(form.text), "token": "guess-form"})
    assert wrong.status_code == 429
    right = http.post("/login", data={"csrf": csrf_of(form.text), "token": TOKENS["radiologist"]})
    assert right.status_code == 303
    assert http.get("/review").status_code == 200  # the session the form opened
    assert len(served.events("login_failed")) == 99
    (alert,) = served.events("security_alert")
    assert alert["detail"]["failures"] == 100
    assert "from this address" in alert["detail"]["reason"]
    for token in TOKENS.values():
        assert token not in str(audit_records(served.settings))


def test_the_throttle_forgets_after_its_window() -> None:
    now = [1000.0]
    throttle = FailureThrottle(limit=3, window_s=60, address_limit=5, clock=lambda: now[0])
    a, b = throttle.fingerprint("token-a"), throttle.fingerprint("token-b")
    assert a != b
    assert a == throttle.fingerprint("token-a")
    assert "token" not in a
    counts = [throttle.failed("10.0.0.1", a) for _ in range(5)]
    assert [c.credential for c in counts] == [1, 2, 3, 4, 4]  # kept: one past the limit
    assert counts[2].reached(throttle)
    assert counts[3].past(throttle)
    assert not throttle.failed("10.0.0.2", a).past(throttle)  # another address
    assert throttle.failed("10.0.0.1", b).past(throttle)  # 6 from 10.0.0.1: past 5
    now[0] += 60
    assert throttle.failed("10.0.0.1", a).credential == 1


def test_a_flood_of_new_tokens_keeps_its_address_counted() -> None:
    """Memory is bounded (MAX_KEYS), but a key that keeps failing is kept: a flood of
    ever-new tokens cannot push its own address's count out and start again."""
    throttle = FailureThrottle(limit=3, address_limit=50)
    throttle.MAX_KEYS = 10
    counts = [throttle.failed("10.0.0.1", throttle.fingerprint(f"t{i}")) for i in range(60)]
    assert [c.address for c in counts[48:52]] == [49, 50, 51, 51]
    assert counts[-1].past(throttle)


# --- X-Forwarded-For ----------------------------------------------------------------------


def _failed_login_from(http: httpx.Client, served: Served, forwarded: str) -> str:
    http.get("/api/queue", headers=_as("wrong-token", **{"X-Forwarded-For": forwarded}))
    return str(served.events("login_failed")[-1]["where"])


def test_forwarded_for_is_ignored_without_a_trusted_proxy(
    served: Served, http: httpx.Client
) -> None:
    assert _failed_login_from(http, served, "203.0.113.7") == "127.0.0.1"


def test_forwarded_for_is_believed_from_a_trusted_proxy(tmp_path: Path) -> None:
    """The node behind a proxy on loopback: the audit trail and the throttle see the
    client the proxy names (the rightmost address not a proxy), not the proxy, nor
    an address the client wrote in the header itself."""
    proxies = ["127.0.0.1", "10.1.0.0/16"]
    with (
        _serve(tmp_path / "home", trusted_proxies=proxies) as served,
        httpx.Client(base_url=served.base, timeout=10) as http,
    ):
        assert _failed_login_from(http, served, "203.0.113.7") == "203.0.113.7"
        spoofed = "198.51.100.9, 203.0.113.8, 10.1.2.3"
        assert _failed_login_from(http, served, spoofed) == "203.0.113.8"
        # one client behind the proxy is throttled, the next one is not
        one = _as("revoked", **{"X-Forwarded-For": "203.0.113.50"})
        assert [http.get("/api/queue", headers=one).status_code for _ in range(21)][-1] == 429
        other = _as("revoked", **{"X-Forwarded-For": "203.0.113.51"})
        assert http.get("/api/queue", headers=other).status_code == 401


def _networks(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


@pytest.mark.parametrize(
    ("peer", "chain", "expected"),
    [
        ("192.0.2.1", ["203.0.113.7"], "192.0.2.1"),  # the peer is no proxy: header ignored
        ("10.0.0.5", [], "10.0.0.5"),  # a proxy that named nobody
        ("10.0.0.5", ["203.0.113.7"], "203.0.113.7"),
        ("10.0.0.5", ["1.1.1.1, 203.0.113.7", "10.0.0.9"], "203.0.113.7"),  # two headers
        ("10.0.0.5", ["not-an-address, 10.0.0.9"], "10.0.0.9"),  # stops at the last sure hop
        ("10.0.0.5", ["10.0.0.8, 10.0.0.9"], "10.0.0.8"),  # only proxies: the leftmost
        ("::ffff:10.0.0.5", ["[2001:db8::7]"], "2001:db8::7"),  # dual stack, IPv6 client
        ("testclient", ["203.0.113.7"], "testclient"),
    ],
)
def test_client_of_reads_the_chain_from_the_right(
    peer: str, chain: list[str], expected: str
) -> None:
    assert client_of(peer, chain, _networks("10.0.0.0/8")) == expected
    assert client_of(peer, chain, []) == peer  # no trusted proxy: always the peer
