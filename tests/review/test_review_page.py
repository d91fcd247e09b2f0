"""issue 6: the radiologist's review page. A real node runs the reference models on a
real CT (boxes: SR + GSPS; bone: SR + SEG) and a real DX (triage: SR), its HTTP app is
served by uvicorn on a loopback port, and the page is driven in the system Chromium:
accept, correct and reject are clicked, then read back from the store. Plain HTTP
tests cover the endpoints (404s, the PNG and its overlay, escaping, languages, refusals).

issue 7: the node runs with token authentication; the browser signs in at /login
(a radiologist's token), feedback is recorded as ``user:dr.martin``, and every form
carries a CSRF token: a post without it, or with a forged one, is refused (403) and
nothing is stored.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from pydicom import dcmread

from cds.api.app import create_app
from cds.api.review.basis import read_basis
from cds.domain import Feedback, FindingRecord, StudyState
from cds.i18n import page_language
from cds.orchestrator import Node
from cds.requestor import PauseSafeAE

from ..api.authkit import (
    NAMES,
    TOKENS,
    audit_bytes,
    audit_records,
    bearer,
    csrf_of,
    login,
    token_settings,
)
from ..conftest import DICOM, REPO, free_port

CHROMIUM = Path("/usr/bin/chromium")
ROUTING = """
pipelines:
  blobs: {model: cds-ref-blob-detect, results: [SR, GSPS]}
  bone: {model: cds-ref-ct-bone, results: [SR, SEG]}
  triage: {model: cds-ref-cxr-triage, results: [SR, GSPS]}
rules:
  - name: CT
    match: [{attribute: Modality, equals: CT}]
    pipelines: [blobs, bone]
  - name: DX
    match: [{attribute: Modality, in: [CR, DX]}]
    pipelines: [triage]
"""
# put in the DX's patient fields before sending: none may reach a page
CANARIES = {
    "PatientName": "CANARYNAME^PATIENT",
    "PatientID": "CANARY-ID-4711",
    "PatientBirthDate": "19010203",
}
BANNER_EN = "AI suggestions - advisory, to be reviewed by a radiologist"
BANNER_FR = "Suggestions de l'IA - indicatives, à faire valider par un radiologue"
REGION = (255, 200, 0)  # the box colour of cds.api.review.render


@dataclass
class Served:
    node: Node
    base: str
    ct_key: str
    dx_key: str

    def findings(self, key: str, model: str) -> list[FindingRecord]:
        return [f for f in self.node.store.list_findings(key) if f.model == model]

    def feedback(self, f: FindingRecord) -> list[Feedback]:
        return self.node.store.list_feedback(tracking_uid=f.tracking_uid)


def _send(node: Node, files: list[Path], **patient: str) -> str:
    datasets = [dcmread(f) for f in files]
    ae = PauseSafeAE(ae_title="TESTSCU")
    for sop_class in {str(ds.SOPClassUID) for ds in datasets}:
        ae.add_requested_context(sop_class, "1.2.840.10008.1.2.1")
    host, port = node.listener.address
    assoc = ae.associate(host, port, ae_title="CDS")
    assert assoc.is_established
    for ds in datasets:
        for keyword, value in patient.items():
            setattr(ds, keyword, value)
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    return node.receiver.key(str(datasets[0].StudyInstanceUID))


def _wait_done(node: Node, keys: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = [node.store.get_study(k) for k in keys]
        if all(s is not None and s.summary.state is StudyState.DONE for s in states):
            return
        assert all(s is None or s.summary.state is not StudyState.FAILED for s in states)
        assert time.monotonic() < deadline, f"studies not done: {states}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not DICOM.is_dir():
        pytest.skip(f"shared DICOM corpus not found at {DICOM}")
    tmp = tmp_path_factory.mktemp("review")
    (tmp / "routing.yaml").write_text(ROUTING)
    models = ["cds-ref-blob-detect", "cds-ref-ct-bone", "cds-ref-cxr-triage"]
    settings = token_settings(
        tmp / "home",
        inference={"model_dirs": [str(REPO / "models" / m) for m in models], "providers": "cpu"},
        routing={"file": str(tmp / "routing.yaml")},
    )
    node = Node(settings)
    node.start()
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    try:
        ct = sorted((DICOM / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]
        ct_key = _send(node, ct)
        dx_key = _send(node, [DICOM / "cr_dx" / "highdicom_dx_image_veterinary.dcm"], **CANARIES)
        _wait_done(node, [ct_key, dx_key])
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
        thread = threading.Thread(target=server.run, name="review-uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield Served(node, f"http://127.0.0.1:{port}", ct_key, dx_key)
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


def _post(http: httpx.Client, url: str, form: dict[str, str], **kw: object) -> httpx.Response:
    """Post a review form as the page does: with the CSRF token of this session."""
    page = http.get("/review")
    return http.post(url, data={"csrf": csrf_of(page.text), **form}, **kw)  # type: ignore[arg-type]


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text
    assert "Internal Server Error" not in text


# --- the page in Chromium ------------------------------------------------------------


def _loaded(page: Any, img: Any) -> None:
    img.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())


def _section(page: Any, f: FindingRecord) -> Any:
    return page.locator(f'section[data-tracking-uid="{f.tracking_uid}"]')


def _accept_then_reject(page: Any, served: Served) -> None:
    boxes = served.findings(served.ct_key, "cds-ref-blob-detect")
    bone = served.findings(served.ct_key, "cds-ref-ct-bone")
    assert len(boxes) >= 2
    assert bone
    page.goto(f"{served.base}/review")  # not signed in: sent to the login form
    page.wait_for_url("**/login?next=*")
    page.locator("input[name=token]").fill(TOKENS["radiologist"])
    page.locator("button.sign-in").click()
    page.wait_for_url(f"{served.base}/review")
    assert page.locator("#signed-in").inner_text() == "Signed in as dr.martin (radiologist)"
    assert page.locator("#advisory").inner_text() == BANNER_EN
    ct_row = page.locator(f'tr[data-study-key="{served.ct_key}"]')
    assert "CT" in ct_row.inner_text()
    assert ct_row.locator(".unreviewed").inner_text() == str(len(boxes) + len(bone))
    ct_row.locator("a.study").click()
    page.wait_for_url(f"**/review/{served.ct_key}?*")
    for f in (boxes[0], bone[0]):  # a box on its image, a SEG segment on its slice
        _loaded(page, _section(page, f).locator("img.preview"))
    first = _section(page, boxes[0])
    assert first.locator(".verdict").inner_text() == "not reviewed yet"
    assert first.locator("input[name=who]").count() == 0  # who is the signed-in user
    first.locator("button.accept").click()
    page.wait_for_selector("#recorded")
    (fb,) = served.feedback(boxes[0])
    assert (fb.action.value, fb.source, fb.who) == ("accept", "review", "user:dr.martin")
    assert (fb.model, fb.sha256) == (boxes[0].model, boxes[0].sha256)
    assert _section(page, boxes[0]).locator(".verdict").inner_text() == "accepted"
    assert "dr.martin" in page.locator("#recorded").inner_text()
    second = _section(page, boxes[1])
    second.locator("textarea[name=reason]").fill("beam-hardening artefact")
    second.locator("button.reject").click()
    page.wait_for_selector("#recorded")
    (fb,) = served.feedback(boxes[1])
    assert (fb.action.value, fb.reason, fb.who) == (
        "reject",
        "beam-hardening artefact",
        "user:dr.martin",
    )
    assert _section(page, boxes[1]).locator(".verdict").inner_text() == "rejected"
    assert "beam-hardening artefact" in _section(page, boxes[1]).locator(".history").inner_text()


def _correct(page: Any, served: Served, low_contrast: FindingRecord) -> None:
    """A categorical finding: the model's other labels are offered as corrections."""
    page.goto(f"{served.base}/review")
    page.locator(f'tr[data-study-key="{served.dx_key}"] a.study').click()
    page.wait_for_url(f"**/review/{served.dx_key}?*")
    form = _section(page, low_contrast)
    _loaded(page, form.locator("img.preview"))
    form.locator("textarea[name=reason]").fill("contrast is fine on this film")
    form.locator("select[name=corrected]").select_option(label="Adequate contrast")
    form.locator("button.correct").click()
    page.wait_for_selector("#recorded")
    (fb,) = served.feedback(low_contrast)
    assert (fb.action.value, fb.source) == ("correct", "review")
    assert (fb.corrected_scheme, fb.corrected_value, fb.corrected_meaning) == (
        "99CDS",
        "CDS-0002",
        "Adequate contrast",
    )
    assert fb.reason == "contrast is fine on this film"
    assert _section(page, low_contrast).locator(".verdict").inner_text() == "corrected"
    assert "Adequate contrast" in _section(page, low_contrast).locator(".history").inner_text()
    html = page.content()
    for canary in CANARIES.values():
        assert canary not in html


def _french_then_refused(page: Any, served: Served, low_contrast: FindingRecord) -> None:
    page.goto(f"{served.base}/review/{served.dx_key}?lang=fr")
    assert page.locator("#advisory").inner_text() == BANNER_FR
    assert page.locator("html").get_attribute("lang") == "fr"
    target = _section(page, low_contrast)
    assert target.locator(".verdict").inner_text() == "corrigé"
    assert target.locator("button.accept").inner_text() == "Accepter"
    assert "Image peu contrastée" in target.locator("h3").inner_text()
    # a form whose CSRF token was tampered with: refused with a message, nothing stored
    before = len(served.node.store.list_feedback(study_key=served.dx_key))
    target.locator("input[name=csrf]").evaluate("e => e.value = 'forged'")
    with page.expect_navigation() as nav:
        target.locator("button.accept").click()
    assert nav.value is not None
    assert nav.value.status == 403
    assert "formulaire a expiré" in page.locator("#message").inner_text()
    _no_traceback(page.content())
    assert len(served.node.store.list_feedback(study_key=served.dx_key)) == before


def _no_preview(page: Any, served: Served) -> None:
    """issue 14: under the Content-Security-Policy (no inline script or style) the page
    is still styled, and a picture the node cannot draw still gives way to the
    "no preview" note (cds/api/static/review.js)."""
    page.route("**/findings/*.png*", lambda route: route.fulfill(status=404, body="gone"))
    page.goto(f"{served.base}/review/{served.ct_key}?lang=en")
    section = page.locator("section.finding").first
    section.locator("p.nopreview").wait_for(state="visible")
    assert section.locator("img.preview").is_hidden()
    page.unroute("**/findings/*.png*")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(244, 245, 247)"  # /static/review.css applied


def test_review_page_in_chromium_records_accept_correct_reject(served: Served) -> None:
    """issue 6 'Review page': open the list, follow a study, see the finding images,
    accept / correct / reject in a real browser, and find each in the store. issue 14:
    nothing on the way breaks the page's Content-Security-Policy."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no system Chromium at {CHROMIUM}")
    triage = served.findings(served.dx_key, "cds-ref-cxr-triage")
    low_contrast = next(f for f in triage if f.label_value == "CDS-0001")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(extra_http_headers={"Accept-Language": "en"})
            page = context.new_page()
            said: list[str] = []
            page.on("console", lambda message: said.append(message.text))
            _accept_then_reject(page, served)
            _correct(page, served, low_contrast)
            _french_then_refused(page, served, low_contrast)
            _no_preview(page, served)
        finally:
            browser.close()
    assert not [text for text in said if "Content Security Policy" in text]


# --- the endpoints over HTTP -----------------------------------------------------------


def test_unknown_study_or_finding_is_404_with_a_message(served: Served, http: httpx.Client) -> None:
    got = http.get("/review/no-such-study")
    assert got.status_code == 404
    assert "no-such-study" in got.text
    assert BANNER_EN in got.text
    f = served.findings(served.ct_key, "cds-ref-blob-detect")[0]
    assert http.get(f"/review/{served.ct_key}/findings/1.2.3.png").status_code == 404
    # a finding of another study is not found under this one
    assert http.get(f"/review/{served.dx_key}/findings/{f.tracking_uid}.png").status_code == 404
    posted = _post(http, f"/review/{served.dx_key}/findings/{f.tracking_uid}", {"action": "accept"})
    assert posted.status_code == 404
    for r in (got, posted):
        _no_traceback(r.text)
    assert all(x.study_key == served.ct_key for x in served.feedback(f))


def _png(http: httpx.Client, key: str, f: FindingRecord) -> np.ndarray:
    got = http.get(f"/review/{key}/findings/{f.tracking_uid}.png")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(got.content)).convert("RGB"))


def test_finding_png_draws_the_box_where_the_sr_puts_it(served: Served, http: httpx.Client) -> None:
    f = served.findings(served.ct_key, "cds-ref-blob-detect")[2]
    (sr,) = [
        r for r in served.node.store.list_results(served.ct_key) if r.sop_uid == f.result_sop_uid
    ]
    basis = read_basis(served.node.settings.results_path / sr.path, f.tracking_uid)
    assert basis is not None
    assert basis.regions
    assert [m.name for m in basis.measurements] == ["Probability"]
    xs = [x for x, _ in basis.regions[0].points]
    ys = [y for _, y in basis.regions[0].points]
    rgb = _png(http, served.ct_key, f)
    banner = rgb.shape[0] - 512  # the CT is 512 x 512; the banner strip sits above it
    assert banner > 0
    drawn = np.all(rgb[banner:] == REGION, axis=-1)
    rows, cols = np.nonzero(drawn)
    assert rows.size > 0, "the box is drawn"
    assert abs(cols.min() - min(xs)) <= 3
    assert abs(cols.max() - max(xs)) <= 3
    assert abs(rows.min() - min(ys)) <= 3
    assert abs(rows.max() - max(ys)) <= 3
    # a segmentation finding: its mask tints its slice red
    bone = served.findings(served.ct_key, "cds-ref-ct-bone")[0]
    tinted = _png(http, served.ct_key, bone)
    assert np.any(np.all(tinted == (255, 64, 64), axis=-1))
    # a classification: the image it was computed on, nothing drawn
    dx = _png(http, served.dx_key, served.findings(served.dx_key, "cds-ref-cxr-triage")[0])
    assert not np.any(np.all(dx == REGION, axis=-1))


def test_reasons_and_names_are_html_escaped(served: Served, http: httpx.Client) -> None:
    f = served.findings(served.ct_key, "cds-ref-blob-detect")[-1]
    posted = _post(
        http,
        f"/review/{served.ct_key}/findings/{f.tracking_uid}",
        {"action": "reject", "who": "dr.<b>x</b>", "reason": "<script>alert(1)</script>"},
    )
    assert posted.status_code == 303
    assert posted.headers["location"].startswith(f"/review/{served.ct_key}?")
    page = http.get(posted.headers["location"])
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<b>x</b>" not in page.text
    (fb,) = served.feedback(f)
    assert fb.reason == "<script>alert(1)</script>"  # stored as given
    assert fb.who == "user:dr.martin"  # a "who" field posted is not who the user is


def test_language_from_query_then_header_then_settings(served: Served, http: httpx.Client) -> None:
    fr, en = escape(BANNER_FR), escape(BANNER_EN)  # as the page writes them
    assert fr in http.get("/review", headers={"Accept-Language": "fr-FR,fr;q=0.9"}).text
    assert en in http.get("/review?lang=en", headers={"Accept-Language": "fr"}).text
    assert fr in http.get("/review?lang=fr").text
    assert en in http.get("/review").text  # results.language defaults to en
    assert page_language(None, "de-DE, en;q=0.5, fr;q=0.8", "en") == "fr"
    assert page_language("xx", None, "fr") == "fr"
    assert page_language(None, "fr;q=0, en", "fr") == "en"


def test_bad_forms_are_refused_and_nothing_is_stored(served: Served, http: httpx.Client) -> None:
    f = served.findings(served.dx_key, "cds-ref-cxr-triage")[-1]
    url = f"/review/{served.dx_key}/findings/{f.tracking_uid}"
    before = len(served.feedback(f))
    cases: list[tuple[dict[str, str], int, str]] = [
        ({"action": "maybe"}, 422, "Accept, Reject or Correct"),
        ({"action": "correct"}, 422, "corrected label, a reason"),
        ({"action": "correct", "corrected": "SCT|1"}, 422, "not one of"),
    ]
    for form, status, text in cases:
        got = _post(http, url, form)
        assert got.status_code == status, (form, got.text)
        assert text in got.text, (form, got.text)
        _no_traceback(got.text)
    fr = _post(http, f"{url}?lang=fr", {"action": "maybe"})
    assert fr.status_code == 422
    assert "Accepter, Rejeter ou Corriger" in fr.text
    json = http.post(url, json={"action": "accept"})
    assert json.status_code == 415
    assert len(served.feedback(f)) == before


def test_csrf_a_form_without_or_with_a_wrong_token_is_refused(
    served: Served, http: httpx.Client
) -> None:
    """issue 7 'CSRF': the signed-in browser's cookie alone is not enough to post."""
    f = served.findings(served.dx_key, "cds-ref-cxr-triage")[0]
    url = f"/review/{served.dx_key}/findings/{f.tracking_uid}"
    before = len(served.feedback(f))
    other = httpx.Client(base_url=served.base)  # another browser's session and token
    assert login(other, TOKENS["radiologist"]).status_code == 303
    foreign = csrf_of(other.get("/review").text)
    other.close()
    for form in (
        {"action": "accept"},
        {"action": "accept", "csrf": ""},
        {"action": "accept", "csrf": "forged"},
        {"action": "accept", "csrf": foreign},
    ):
        got = http.post(url, data=form)
        assert got.status_code == 403, (form, got.text)
        assert "did not come from this node" in got.text
        _no_traceback(got.text)
    # a bearer token alone (no page session) cannot post the form either
    bare = httpx.post(served.base + url, data={"action": "accept"}, headers=bearer("radiologist"))
    assert bare.status_code == 403
    assert len(served.feedback(f)) == before
    # with the page's token it goes through
    assert _post(http, url, {"action": "accept"}).status_code == 303
    assert len(served.feedback(f)) == before + 1


def test_only_radiologists_and_admins_reach_the_review_page(served: Served) -> None:
    with httpx.Client(base_url=served.base) as observer:
        assert login(observer, TOKENS["observer"]).status_code == 303
        got = observer.get("/review")
        assert got.status_code == 403
        assert "needs the radiologist role" in got.text
    with httpx.Client(base_url=served.base) as nobody:
        assert nobody.get("/review").status_code == 401
        assert login(nobody, "not-a-token-at-all-000").status_code == 401
    with httpx.Client(base_url=served.base) as admin:
        assert login(admin, TOKENS["admin"]).status_code == 303
        page = admin.get("/review")
        assert page.status_code == 200
        assert f"Signed in as {NAMES['admin']} (admin)" in page.text


def test_feedback_and_logins_are_in_the_audit_trail(served: Served) -> None:
    """issue 7 'audit': each page login and each feedback, by the signed-in user; the
    free-text reason and the tokens stay out."""
    records = audit_records(served.node.settings)
    logins = [r for r in records if r["event"] == "login"]
    assert {r["who"] for r in logins} >= {"user:dr.martin", f"user:{NAMES['admin']}"}
    given = [r for r in records if r["event"] == "feedback_given"]
    assert given
    assert {r["who"] for r in given} == {"user:dr.martin"}
    failed = [r for r in records if r["event"] == "login_failed"]
    assert failed
    assert all(r["outcome"] == "4" and r["where"] == "127.0.0.1" for r in failed)
    data = audit_bytes(served.node.settings)
    assert b"beam-hardening artefact" not in data
    for token in TOKENS.values():
        assert token.encode() not in data
