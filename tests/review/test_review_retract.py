"""issue 25, item 4: the review page's Retract button. A real node runs the bone model on
a real CT (SR + SEG), its HTTP app is served by uvicorn on a loopback port, and the page
is driven in the system Chromium, signed in as a radiologist: a reason is required, the
result becomes ``retracted`` on the page and in ``GET /api/results``, the retraction is
recorded as the signed-in user, and its form is gone. Plain HTTP tests cover the
refusals (no CSRF token, no reason, a result of another study, a second retraction) and
the French page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from cds.api.app import create_app
from cds.orchestrator import Node
from cds.store.retractions import RetractionLog

from ..api.authkit import TOKENS, audit_records, bearer, csrf_of, login, token_settings
from ..conftest import DICOM, REPO, free_port
from .test_review_page import _send, _wait_done

CHROMIUM = Path("/usr/bin/chromium")
ROUTING = """
pipelines:
  bone: {model: cds-ref-ct-bone, results: [SR, SEG]}
rules:
  - name: CT
    match: [{attribute: Modality, equals: CT}]
    pipelines: [bone]
"""
REASON = "phantom scan sent by mistake"


@dataclass
class Served:
    node: Node
    base: str
    key: str

    def results(self, **params: str) -> list[dict[str, object]]:
        r = httpx.get(
            f"{self.base}/api/results",
            params={"study_key": self.key, **params},
            headers=bearer("radiologist"),
        )
        r.raise_for_status()
        return list(r.json())

    def uid(self, modality: str) -> str:
        (row,) = [r for r in self.results() if r["modality"] == modality]
        return str(row["sop_instance_uid"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not DICOM.is_dir():
        pytest.skip(f"shared DICOM corpus not found at {DICOM}")
    tmp = tmp_path_factory.mktemp("retract")
    (tmp / "routing.yaml").write_text(ROUTING)
    settings = token_settings(
        tmp / "home",
        inference={"model_dirs": [str(REPO / "models" / "cds-ref-ct-bone")], "providers": "cpu"},
        routing={"file": str(tmp / "routing.yaml")},
    )
    node = Node(settings)
    node.start()
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    try:
        key = _send(node, sorted((DICOM / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3])
        _wait_done(node, [key])
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, node),
                host="127.0.0.1",
                port=port,
                log_config=None,
                access_log=False,
            )
        )
        thread = threading.Thread(target=server.run, name="retract-uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield Served(node, f"http://127.0.0.1:{port}", key)
    finally:
        if server is not None and thread is not None:
            server.should_exit = True  # the app's lifespan stops the node
            thread.join(timeout=10)
        node.stop()


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    """Signed in as the radiologist dr.martin, through the login form."""
    with httpx.Client(base_url=served.base, follow_redirects=False) as client:
        assert login(client, TOKENS["radiologist"]).status_code == 303
        yield client


def _retract_url(served: Served, uid: str) -> str:
    return f"/review/{served.key}/results/{uid}/retract?lang=en"


def test_refusals_leave_the_result_current(served: Served, http: httpx.Client) -> None:
    """No CSRF token: 403; no reason: 422 with the page's message; a result named under
    another study: 404. The result stays current, nothing is retracted."""
    uid = served.uid("SEG")
    url = _retract_url(served, uid)
    csrf = csrf_of(http.get(f"/review/{served.key}").text)
    assert http.post(url, data={"reason": REASON}).status_code == 403
    blank = http.post(url, data={"csrf": csrf, "reason": "  "})
    assert blank.status_code == 422
    assert "Say why the result is retracted" in blank.text
    elsewhere = http.post(
        f"/review/other-study/results/{uid}/retract", data={"csrf": csrf, "reason": REASON}
    )
    assert elsewhere.status_code == 404
    assert {r["state"] for r in served.results()} == {"current"}
    french = http.get(f"/review/{served.key}?lang=fr").text
    assert ">Retirer</button>" in french
    assert "Motif (conservé avec la rétractation)" in french
    assert RetractionLog(served.node.store).all() == []


def test_retract_in_chromium_then_the_api_says_retracted(served: Served) -> None:
    """issue 25 'a button on the review page': sign in, press Retract without a reason
    (the browser asks for one: nothing is sent), give one, see ``retracted``; the API
    lists it so, the retraction is dr.martin's, the form is gone, a second post is 409."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no system Chromium at {CHROMIUM}")
    uid = served.uid("SR")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(extra_http_headers={"Accept-Language": "en"})
            page = context.new_page()
            page.goto(f"{served.base}/login?next=/review/{served.key}")
            page.locator("input[name=token]").fill(TOKENS["radiologist"])
            page.locator("button.sign-in").click()
            page.wait_for_url(f"**/review/{served.key}*")
            result = page.locator(f'article[data-result-uid="{uid}"]')
            assert result.locator(".result-state").inner_text() == "current"
            button = result.locator("button.retract")
            assert button.inner_text() == "Retract"
            button.click()  # no reason: the form is not sent
            reason = result.locator("textarea[name=reason]").first
            assert reason.evaluate("e => e.validity.valueMissing") is True
            assert served.results(state="retracted") == []
            reason.fill(REASON)
            with page.expect_navigation():
                button.click()
            page.wait_for_selector("#retracted")
            assert "Result retracted" in page.locator("#retracted").inner_text()
            result = page.locator(f'article[data-result-uid="{uid}"]')
            assert result.locator(".result-state").inner_text() == "retracted"
            assert result.locator("form.retract").count() == 0
            assert REASON not in page.content()
        finally:
            browser.close()
    states = {r["modality"]: r["state"] for r in served.results()}
    # the SR and SEG are one result, withdrawn together; the KO is its rejection note
    assert states == {"SR": "retracted", "SEG": "retracted", "KO": "rejection"}
    (done,) = RetractionLog(served.node.store).all()
    assert (done.who, done.reason) == ("user:dr.martin", REASON)
    (rec,) = [r for r in audit_records(served.node.settings) if r["event"] == "results_retracted"]
    assert rec["who"] == "user:dr.martin"
    assert REASON not in str(rec)
    with httpx.Client(base_url=served.base, follow_redirects=False) as client:
        assert login(client, TOKENS["radiologist"]).status_code == 303
        csrf = csrf_of(client.get(f"/review/{served.key}").text)
        again = client.post(_retract_url(served, uid), data={"csrf": csrf, "reason": "again"})
        assert again.status_code == 409
        assert "retracted already" in again.text
        assert "rétracté" in client.get(f"/review/{served.key}?lang=fr").text
