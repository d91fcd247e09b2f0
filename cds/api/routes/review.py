"""The radiologist's review page: a study's AI findings with their image and
overlay, model and basis, and accept / reject / correct on each (issue 6).

Plain HTML forms posting to the node (no JavaScript needed), in French and
English (``?lang=``, else ``Accept-Language``, else ``results.language``).
Feedback goes through :func:`cds.feedback.service.give_feedback` with source
``review``: appended, the result never changes. Each current result also has a
Retract form (a reason required): ``cds.retraction`` withdraws it everywhere, through
the function ``POST /api/results/{uid}/retract`` calls.

Radiologists and admins only (issue 7): a browser signs in at ``/login`` and
keeps a signed session cookie; feedback is recorded as the signed-in user
(``user:<name>``). Every form carries a CSRF token bound to that session and a
post without it is refused (403), nothing stored. With authentication off
(loopback only) "who" is the login name typed in the form, recorded as given and
remembered in a cookie for the next finding. No patient attribute is read or
shown: studies are named by their pseudonymous key and UIDs only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from starlette.concurrency import run_in_threadpool

from cds.api.auth import (
    Identity,
    authenticator,
    csrf_ok,
    page_session,
    radiologist_form,
    radiologist_page,
)
from cds.api.deps import get_node
from cds.api.refusals import http_status
from cds.api.review import pages
from cds.api.review.basis import Basis, bases_of
from cds.api.review.preview import NoPreview, preview_png
from cds.api.review.texts import t
from cds.api.routes.results import retract
from cds.api.session import Session
from cds.domain import (
    Feedback,
    FeedbackAction,
    FindingRecord,
    Job,
    JobState,
    ResultObject,
    ResultState,
)
from cds.errors import FeedbackError
from cds.feedback.service import CorrectedLabel, give_feedback
from cds.i18n import Lang, advisory, page_language, text
from cds.logging import get_logger
from cds.orchestrator import Node
from cds.results.text import label_statement

log = get_logger("cds.review")

router = APIRouter(prefix="/review", tags=["review page"], include_in_schema=False)
NodeDep = Annotated[Node, Depends(get_node)]
LangQuery = Annotated[str | None, Query(description="page language: fr or en")]
PageUser = Annotated[Identity, Depends(radiologist_page)]
FormUser = Annotated[Identity, Depends(radiologist_form)]

WHO_COOKIE = "cds_review_who"
WHO_COOKIE_MAX_AGE = 30 * 24 * 3600
STUDIES_LISTED = 200
_FORM = "application/x-www-form-urlencoded"


def _lang(request: Request, node: Node, query: str | None) -> Lang:
    return page_language(
        query, request.headers.get("accept-language"), node.settings.results.language
    )


def _study_url(study_key: str, lang: Lang, **query: str) -> str:
    return pages.url(f"/review/{quote(study_key, safe='')}", lang, **query)


def _viewer(request: Request, user: Identity) -> tuple[pages.Viewer, Session | None]:
    """Who reads the page, with the CSRF token of its forms, and the session to set
    as a cookie when the browser had none."""
    session, new = page_session(request)
    csrf = authenticator(request).sessions.csrf_token(session)
    name = None if user.via == "none" else user.name
    return pages.Viewer(name, user.role, csrf), session if new else None


def _html(request: Request, html: str, new_session: Session | None) -> Response:
    response = HTMLResponse(html, headers={"Cache-Control": "no-store"})
    if new_session is not None:
        authenticator(request).set_cookie(response, new_session)
    return response


def _message(lang: Lang, status: int, title_key: str, message: str, back: str | None) -> Response:
    return HTMLResponse(pages.message_page(lang, t(lang, title_key), message, back), status)


def _labels_of(node: Node, f: FindingRecord, lang: Lang) -> list[pages.LabelChoice]:
    """The model's other labels, for a categorical finding (a model with several labels)."""
    loaded = node.models.get(f.model)
    if loaded is None or loaded.manifest is None:
        return []
    return [
        pages.LabelChoice(
            f"{label.code.scheme}|{label.code.value}",
            label.display.fr if lang == "fr" else label.display.en,
        )
        for label in loaded.manifest.output.labels
        if (label.code.scheme, label.code.value) != (f.label_scheme, f.label_value)
    ]


def _statement(node: Node, f: FindingRecord) -> tuple[bool | None, bool]:
    """What the SR states of ``f`` (True present, False absent, None no decision) and
    whether its label is the model's normal state: a normal class that reaches its
    threshold is present, not a finding (``label_statement``). The record's word when
    its model or label is no longer loaded."""
    loaded = node.models.get(f.model)
    if loaded is None or loaded.manifest is None:
        return f.present, False
    output = loaded.manifest.output
    code = (f.label_scheme, f.label_value)
    label = next((lb for lb in output.labels if (lb.code.scheme, lb.code.value) == code), None)
    if label is None:
        return f.present, False
    return label_statement(label, f.score, present=f.present, kind=output.kind), label.normal


def _finding_view(
    node: Node, f: FindingRecord, feedback: Sequence[Feedback], basis: Basis | None, lang: Lang
) -> pages.FindingView:
    stated, normal = _statement(node, f)
    return pages.FindingView(
        finding=f,
        feedback=[fb for fb in feedback if fb.tracking_uid == f.tracking_uid],
        basis=basis,
        choices=_labels_of(node, f, lang),
        stated=stated,
        normal=normal,
    )


def _corrected(node: Node, f: FindingRecord, value: str) -> CorrectedLabel | None:
    loaded = node.models.get(f.model)
    if loaded is None or loaded.manifest is None:
        return None
    for label in loaded.manifest.output.labels:
        if f"{label.code.scheme}|{label.code.value}" == value:
            return CorrectedLabel(label.code.scheme, label.code.value, label.code.meaning)
    return None


def _bases(
    node: Node, result: ResultObject | None, findings: list[FindingRecord]
) -> dict[str, Basis]:
    if result is None or result.modality != "SR":
        return {}
    try:
        sr = dcmread(node.settings.results_path / result.path)
    except (OSError, InvalidDicomError):
        return {}
    return bases_of(sr, [f.tracking_uid for f in findings])


@router.get("", response_class=HTMLResponse, summary="Studies with AI findings to review")
def review_studies(
    request: Request, node: NodeDep, user: PageUser, lang: LangQuery = None
) -> Response:
    page_lang = _lang(request, node, lang)
    rows = []
    for study in node.store.list_studies(limit=STUDIES_LISTED):
        found = node.store.list_findings(study.study_key)
        if not found:
            continue
        reviewed = {
            fb.tracking_uid
            for fb in node.store.list_feedback(study_key=study.study_key, limit=100_000)
        }
        rows.append(
            pages.StudyRow(
                study_key=study.study_key,
                modalities=study.modalities,
                last_received_at=study.last_received_at,
                models=sorted({f"{f.model} {f.version}" for f in found}),
                findings=len(found),
                unreviewed=sum(1 for f in found if f.tracking_uid not in reviewed),
            )
        )
    viewer, new_session = _viewer(request, user)
    return _html(request, pages.study_list(page_lang, rows, viewer), new_session)


@router.get("/{study_key}", response_class=HTMLResponse, summary="A study's AI findings")
def review_study(
    study_key: str,
    request: Request,
    *,
    node: NodeDep,
    user: PageUser,
    lang: LangQuery = None,
    recorded: Annotated[str | None, Query(description="id of the feedback just recorded")] = None,
    retracted: Annotated[str | None, Query(description="the result just retracted")] = None,
) -> Response:
    page_lang = _lang(request, node, lang)
    if node.store.get_study(study_key) is None:
        return _message(
            page_lang, 404, "not_found", t(page_lang, "no_study", key=study_key), "/review"
        )
    findings = node.store.list_findings(study_key)
    feedback = node.store.list_feedback(study_key=study_key, limit=100_000)
    objects = {r.sop_uid: r for r in node.store.list_results(study_key)}
    by_result: dict[str, list[FindingRecord]] = {}
    for f in findings:
        by_result.setdefault(f.result_sop_uid, []).append(f)
    views = []
    for sop_uid, found in by_result.items():
        obj = objects.get(sop_uid)
        bases: dict[str, Basis] = _bases(node, obj, found)
        first = found[0]
        views.append(
            pages.ResultView(
                sop_uid=sop_uid,
                model=first.model,
                version=first.version,
                sha256=first.sha256,
                pipeline=first.job_kind.partition(":")[0],
                created_at=obj.created_at if obj else first.created_at,
                superseded=obj is not None and obj.state is ResultState.SUPERSEDED,
                state=obj.state.value if obj is not None else ResultState.CURRENT.value,
                source_series_uid=obj.source_series_uid if obj else "",
                findings=[
                    _finding_view(node, f, feedback, bases.get(f.tracking_uid), page_lang)
                    for f in found
                ],
            )
        )
    views.sort(key=lambda v: (v.state != ResultState.CURRENT.value, -v.created_at))
    done: Feedback | None = next((fb for fb in feedback if fb.feedback_id == recorded), None)
    label = ""
    if done is not None:
        f_done = next((f for f in findings if f.tracking_uid == done.tracking_uid), None)
        label = (f_done.display_fr if page_lang == "fr" else f_done.display_en) if f_done else ""
    viewer, new_session = _viewer(request, user)
    html = pages.study_page(
        page_lang,
        study_key,
        views,
        who=request.cookies.get(WHO_COOKIE, ""),
        recorded=done,
        recorded_label=label,
        viewer=viewer,
        jobs=_not_made(node, study_key),
        retracted=retracted is not None and retracted in objects,
    )
    return _html(request, html, new_session)


def _not_made(node: Node, study_key: str) -> list[pages.JobNote]:
    """The latest job of each pipeline of the study, where it did not make every object."""
    latest: dict[str, Job] = {}
    for job in node.store.list_jobs(study_key=study_key, limit=1000):  # newest first
        latest.setdefault(job.kind, job)
    return [
        pages.JobNote(
            job.kind,
            job.state.value,
            [o.text for o in job.objects if o.failed] or [job.error or job.state.value],
        )
        for job in latest.values()
        if job.state in (JobState.PARTIAL, JobState.FAILED)
    ]


def _finding_in(node: Node, study_key: str, tracking_uid: str) -> FindingRecord | None:
    f = node.store.get_finding(tracking_uid)
    return f if f is not None and f.study_key == study_key else None


@router.get("/{study_key}/findings/{tracking_uid}.png", summary="A finding on its source image")
def finding_image(
    study_key: str,
    tracking_uid: str,
    request: Request,
    *,
    node: NodeDep,
    user: PageUser,
    lang: LangQuery = None,
) -> Response:
    del user  # the dependency is the access check
    page_lang = _lang(request, node, lang)
    f = _finding_in(node, study_key, tracking_uid)
    if f is None:
        return Response(
            t(page_lang, "no_finding", uid=tracking_uid, key=study_key),
            404,
            media_type="text/plain",
        )
    try:
        png = preview_png(node, f, advisory(page_lang).banner)
    except NoPreview as exc:
        return Response(f"{t(page_lang, 'no_preview')}: {exc}", 404, media_type="text/plain")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _form(request: Request, lang: Lang) -> dict[str, str]:
    """The posted HTML form's fields (first value of each), once its CSRF token is found
    good: before anything else of it is looked at."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != _FORM:
        raise _Refused(415, f"content type must be {_FORM} (an HTML form)")
    body = await request.body()  # bounded by http.max_form_bytes (cds.api.hardening)
    if len(body) > get_node(request).settings.http.max_form_bytes:
        raise _Refused(413, t(lang, "too_large"))
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise _Refused(422, t(lang, "bad_action")) from None
    fields = {name: values[0] for name, values in form.items()}
    if not csrf_ok(request, fields.get("csrf")):
        raise _Refused(403, t(lang, "csrf_refused"))
    return fields


def _record(
    node: Node, f: FindingRecord, form: dict[str, str], lang: Lang, user: Identity
) -> Feedback:
    """Check the form (messages in the page language) and append the feedback."""
    try:
        action = FeedbackAction(form.get("action", ""))
    except ValueError:
        raise _Refused(422, t(lang, "bad_action")) from None
    who, reason, label = (form.get(k, "") for k in ("who", "reason", "corrected"))
    if user.via != "none":
        who = user.who  # signed in: the user, never a form field
    if not who.strip():
        raise _Refused(422, t(lang, "who_missing"))
    corrected = None
    if action is FeedbackAction.CORRECT:  # the label select is ignored on accept / reject
        if label:
            corrected = _corrected(node, f, label)
            if corrected is None:
                raise _Refused(422, t(lang, "bad_label"))
        elif not reason.strip():
            raise _Refused(422, t(lang, "correct_missing"))
    try:
        return give_feedback(
            node.store,
            result_sop_uid=f.result_sop_uid,
            tracking_uid=f.tracking_uid,
            action=action,
            who=who,
            source="review",
            reason=reason,
            corrected=corrected,
            audit=node.audit,  # feedback_given, by who
        )
    except FeedbackError as exc:
        raise _Refused(http_status(exc.refusal), str(exc)) from None


@router.post("/{study_key}/findings/{tracking_uid}", summary="Accept, reject or correct")
async def post_review(
    study_key: str,
    tracking_uid: str,
    request: Request,
    *,
    node: NodeDep,
    user: FormUser,
    lang: LangQuery = None,
) -> Response:
    page_lang = _lang(request, node, lang)
    back = _study_url(study_key, page_lang)
    try:
        form = await _form(request, page_lang)  # its CSRF token checked
    except _Refused as exc:
        return _message(page_lang, exc.status, "refused", str(exc), back)
    f = await run_in_threadpool(_finding_in, node, study_key, tracking_uid)
    if f is None:
        missing = t(page_lang, "no_finding", uid=tracking_uid, key=study_key)
        return _message(page_lang, 404, "not_found", missing, back)
    try:
        fb = await run_in_threadpool(_record, node, f, form, page_lang, user)
    except _Refused as exc:
        return _message(page_lang, exc.status, "refused", str(exc), back)
    log.info("review.feedback_recorded", study_key=fb.study_key, model=fb.model, action=fb.action)
    response = RedirectResponse(
        f"{_study_url(study_key, page_lang, recorded=fb.feedback_id)}#f-{quote(f.tracking_uid)}",
        status_code=303,
    )
    if user.via != "none":
        return response
    # authentication off: the name is remembered for the next finding, not trusted
    response.set_cookie(
        WHO_COOKIE,
        form.get("who", "").strip(),
        max_age=WHO_COOKIE_MAX_AGE,
        path="/review",
        httponly=True,
        samesite="lax",
    )
    return response


def _retract(node: Node, study_key: str, sop_uid: str, form: dict[str, str], who: str) -> None:
    """Withdraw a result of this study everywhere, as ``POST /api/results/{uid}/retract``
    does (the same function: queued durably, the workers woken); _Refused otherwise."""
    if not any(r.sop_uid == sop_uid for r in node.store.list_results(study_key)):
        raise _Refused(404, f"no result {sop_uid} in study {study_key}")
    try:
        retract(node, sop_uid, form.get("reason", ""), who)
    except HTTPException as exc:  # 404, 409 (not current), 422 (the reason)
        raise _Refused(exc.status_code, str(exc.detail)) from None


@router.post("/{study_key}/results/{sop_uid}/retract", summary="Retract a result everywhere")
async def post_retract(
    study_key: str,
    sop_uid: str,
    request: Request,
    *,
    node: NodeDep,
    user: FormUser,
    lang: LangQuery = None,
) -> Response:
    page_lang = _lang(request, node, lang)
    back = _study_url(study_key, page_lang)
    try:
        form = await _form(request, page_lang)  # its CSRF token checked
        who = user.who if user.via != "none" else form.get("who", "").strip()
        if not who:
            raise _Refused(422, t(page_lang, "who_missing"))
        if not form.get("reason", "").strip():
            raise _Refused(422, text(page_lang, "retraction.reason_missing"))
        await run_in_threadpool(_retract, node, study_key, sop_uid, form, who)
    except _Refused as exc:
        return _message(page_lang, exc.status, "refused", str(exc), back)
    log.info("review.result_retracted", study_key=study_key)  # never the reason
    return RedirectResponse(_study_url(study_key, page_lang, retracted=sop_uid), status_code=303)
