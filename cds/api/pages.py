"""Refusals on the pages people open in a browser (review, observatory, login) as a
small HTML page in French and English, not the API's JSON body. The API keeps JSON."""

from __future__ import annotations

import html

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds.i18n import text

#: path prefixes of the pages a browser opens
PAGES = ("/review", "/observatory", "/login", "/logout")

#: the refusals shown as a page (their titles: ``refusal.title_<status>`` in cds.i18n)
REFUSALS = (401, 403)


def _is_page(request: Request) -> bool:
    path = request.url.path
    wants_html = "text/html" in request.headers.get("accept", "")
    return wants_html and any(path == p or path.startswith(p + "/") for p in PAGES)


def _fr_en(key: str) -> tuple[str, str]:
    """The text ``key`` in French and in English, HTML-escaped."""
    return html.escape(text("fr", key)), html.escape(text("en", key))


def refusal_page(status: int, detail: str) -> str:
    """The page of a refusal: French first, English beside it (the detail is English)."""
    fr, en = _fr_en(f"refusal.title_{status}")
    sign_in_fr, sign_in_en = _fr_en("refusal.sign_in")
    review_fr, _ = _fr_en("refusal.review")
    message = html.escape(detail)
    return (
        '<!doctype html><html lang="fr"><head><meta charset="utf-8">'
        f"<title>{fr} / {en}</title></head><body>"
        f'<h1>{fr} <span lang="en">/ {en}</span></h1>'
        f'<p id="message" lang="en">{message}</p>'
        f'<p><a href="/login">{sign_in_fr}</a> / <a href="/login" lang="en">{sign_in_en}</a>'
        f' &middot; <a href="/review">{review_fr}</a></p></body></html>'
    )


def install(app: FastAPI) -> None:
    """Render 401/403 on the browser pages as HTML; everything else as FastAPI does."""

    @app.exception_handler(StarletteHTTPException)
    async def _handler(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in REFUSALS and _is_page(request):
            return HTMLResponse(
                refusal_page(exc.status_code, str(exc.detail)),
                status_code=exc.status_code,
                headers=dict(exc.headers or {}),
            )
        return await http_exception_handler(request, exc)
