"""Refusals on the pages people open in a browser (review, observatory, login) as a
small HTML page in French and English, not the API's JSON body. The API keeps JSON."""

from __future__ import annotations

import html

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

#: path prefixes of the pages a browser opens
PAGES = ("/review", "/observatory", "/login", "/logout")

_TITLES = {
    401: ("Connexion requise", "Sign-in required"),
    403: ("Accès refusé", "Access denied"),
}


def _is_page(request: Request) -> bool:
    path = request.url.path
    wants_html = "text/html" in request.headers.get("accept", "")
    return wants_html and any(path == p or path.startswith(p + "/") for p in PAGES)


def refusal_page(status: int, detail: str) -> str:
    fr, en = _TITLES[status]
    text = html.escape(detail)
    return (
        '<!doctype html><html lang="fr"><head><meta charset="utf-8">'
        f"<title>{fr} / {en}</title></head><body>"
        f'<h1>{fr} <span lang="en">/ {en}</span></h1>'
        f'<p id="message" lang="en">{text}</p>'
        '<p><a href="/login">Se connecter</a> / <a href="/login" lang="en">Sign in</a>'
        ' &middot; <a href="/review">Revue</a></p></body></html>'
    )


def install(app: FastAPI) -> None:
    """Render 401/403 on the browser pages as HTML; everything else as FastAPI does."""

    @app.exception_handler(StarletteHTTPException)
    async def _handler(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in _TITLES and _is_page(request):
            return HTMLResponse(
                refusal_page(exc.status_code, str(exc.detail)),
                status_code=exc.status_code,
                headers=dict(exc.headers or {}),
            )
        return await http_exception_handler(request, exc)
