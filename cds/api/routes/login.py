"""Sign in and out of the pages: paste a token (a configured one, or an OIDC access
token), get a signed, HttpOnly, SameSite=Strict session cookie (Secure under HTTPS).

The login form itself carries a CSRF token bound to an anonymous session, so a
page of another site cannot sign a browser in as someone else. Each login starts
a new session id. Logins and refusals go to the audit trail (never the token).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from cds.api.auth import (
    audit,
    authenticator,
    csrf_ok,
    identify,
    page_session,
    public,
    refused_login,
    too_many,
)
from cds.api.oidc import TokenRefused
from cds.api.review import pages
from cds.api.review.texts import t
from cds.audit import AuditEvent
from cds.i18n import Lang, page_language
from cds.orchestrator import Node

router = APIRouter(include_in_schema=False, dependencies=[Depends(public)])
MAX_FORM_BYTES = 16 * 1024
_FORM = "application/x-www-form-urlencoded"


def _lang(request: Request, query: str | None) -> Lang:
    node: Node = request.app.state.node
    return page_language(
        query, request.headers.get("accept-language"), node.settings.results.language
    )


def _safe_next(value: str | None) -> str:
    """Only a path of this node (no open redirect to another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/review"
    return value


def _login_page(
    request: Request, lang: Lang, next_url: str, status: int = 200, error: str | None = None
) -> Response:
    auth = authenticator(request)
    session, new = page_session(request)
    try:
        ident = identify(request, cookie=True)
    except HTTPException:  # a refused bearer on the login page: show the form
        ident = None
    viewer = pages.Viewer(
        ident.name if ident is not None and auth.enabled else None,
        ident.role if ident is not None else None,
        auth.sessions.csrf_token(session),
    )
    html = pages.login_page(lang, next_url, viewer, auth_off=not auth.enabled, error=error)
    response = HTMLResponse(html, status, headers={"Cache-Control": "no-store"})
    if new:
        auth.set_cookie(response, session)
    return response


@router.get("/login", response_class=HTMLResponse, summary="The sign-in form")
def login_form(
    request: Request,
    next_url: Annotated[str | None, Query(alias="next")] = None,
    lang: Annotated[str | None, Query()] = None,
) -> Response:
    return _login_page(request, _lang(request, lang), _safe_next(next_url))


async def _fields(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != _FORM:
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in form.items()}


@router.post("/login", summary="Sign in with a token")
async def login(request: Request, lang: Annotated[str | None, Query()] = None) -> Response:
    page_lang = _lang(request, lang)
    form = await _fields(request)
    next_url = _safe_next(form.get("next"))
    if not csrf_ok(request, form.get("csrf")):
        return _login_page(request, page_lang, next_url, 403, t(page_lang, "csrf_refused"))
    auth = authenticator(request)
    if not auth.enabled:
        return RedirectResponse(next_url, 303)
    token = form.get("token", "").strip()
    try:
        # checked whatever the throttle says (a valid token is never refused); off the
        # event loop: an OIDC token may need the provider's keys (jwks_url)
        ident, expires = await run_in_threadpool(auth.bearer, token)
    except TokenRefused as exc:
        if await run_in_threadpool(refused_login, request, str(exc), "login form", token):
            raise too_many(request) from None
        return _login_page(request, page_lang, next_url, 401, t(page_lang, "login_refused"))
    session = auth.login_session(ident, expires)
    await run_in_threadpool(
        audit, request, AuditEvent.LOGIN, ident.who, detail={"via": ident.via, "role": ident.role}
    )
    response = RedirectResponse(next_url, 303)
    auth.set_cookie(response, session)
    return response


@router.post("/logout", summary="Sign out")
async def logout(request: Request) -> Response:
    form = await _fields(request)
    if not csrf_ok(request, form.get("csrf")):
        page_lang = _lang(request, None)
        return _login_page(request, page_lang, "/review", 403, t(page_lang, "csrf_refused"))
    auth = authenticator(request)
    response = RedirectResponse("/login", 303)
    auth.set_cookie(response, auth.sessions.new())  # a fresh anonymous session
    return response
