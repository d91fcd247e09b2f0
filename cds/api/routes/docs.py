"""The API's description (OpenAPI) and its pages, for observers and up.

FastAPI's own ``/docs``, ``/redoc`` and ``/openapi.json`` are turned off in
``create_app`` and served here behind the observer role: what the node offers is
conformance information a vendor may read, not something for anyone on the
network. A browser signed in at ``/login`` reads them with its session cookie.

Swagger UI and ReDoc are served by the node itself (``/static``: the files of the
fastapi-offline package, and cds's own start-up scripts), not from a CDN: a hospital
network is often offline, and the pages' Content-Security-Policy allows the node only
(:mod:`cds.api.hardening`).
"""

from __future__ import annotations

import secrets
from html import escape
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from cds.api import hardening
from cds.api.auth import observer_page

router = APIRouter(include_in_schema=False, dependencies=[Depends(observer_page)])


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    schema: dict[str, Any] = dict(request.app.openapi())
    # Swagger's "Authorize" button: every call takes a bearer token
    components = dict(schema.get("components", {}))
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    schema["components"] = components
    schema["security"] = [{"bearer": []}]
    return JSONResponse(schema)


def _page(title: str, head: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="icon" href="/static/favicon.png">{head}'
        f"</head><body>{body}</body></html>"
    )


@router.get("/docs")
def swagger(request: Request) -> HTMLResponse:
    return _page(
        f"{request.app.title} - API",
        '<link rel="stylesheet" href="/static/swagger-ui.css">',
        '<div id="swagger-ui"></div><script src="/static/swagger-ui-bundle.js"></script>'
        '<script src="/static/swagger-init.js"></script>',
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    # ReDoc styles itself at run time: its style elements carry this answer's nonce,
    # the only inline style the page's policy allows
    nonce = secrets.token_urlsafe(18)
    page = _page(
        f"{request.app.title} - API",
        f'<meta name="cds-style-nonce" content="{nonce}">',
        '<div id="redoc"></div><script src="/static/redoc.standalone.js"></script>'
        '<script src="/static/redoc-init.js"></script>',
    )
    page.headers["Content-Security-Policy"] = hardening.with_style_nonce("/redoc", nonce)
    return page
