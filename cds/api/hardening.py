"""What every HTTP answer of the node gets, whatever route made it (issue 14):

- **a body limit checked before the body is read**: a declared ``Content-Length`` over
  it is answered 413 at once, unread; a chunked body is cut off with 413 as soon as it
  passes it (the server reads at most one flow-control window, 64 KiB, ahead). HTML
  form posts (``application/x-www-form-urlencoded``) may carry ``http.max_form_bytes``,
  STOW-RS requests (``/dicomweb/``) ``http.max_stow_bytes``, anything else
  ``http.max_body_bytes``;
- **security headers**: a Content-Security-Policy that lets a page load only from the
  node (no inline script or style: the pages' CSS and JS are files under ``/static``),
  no framing, no MIME sniffing, no ``Referer``;
- **validation errors (422) that never echo what was sent**: each error keeps its type,
  location and message, never the input, its context, or a location part the API does
  not declare (an unknown key of the body is said as ``*``);
- **a crash is a JSON 500** that says nothing of its cause (logged by type and route).

Both ASGI layers wrap the whole app, Starlette's own error handling included
(``create_app``), so a 500 gets the headers too.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cds.config import Settings
from cds.logging import get_logger

log = get_logger("cds.http")

FORM = "application/x-www-form-urlencoded"
#: STOW-RS (cds/api/routes/dicomweb.py): DICOM instances, bounded by http.max_stow_bytes
STOW_PREFIX = "/dicomweb/"
STATIC = Path(str(files("cds.api") / "static"))

_SELF = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: the Content-Security-Policy of each path; every other answer gets ``_SELF``
POLICIES = {
    # Swagger UI's stylesheet draws its icons as data: images
    "/docs": _SELF.replace("img-src 'self'", "img-src 'self' data:"),
    # ReDoc: its run-time styles carry a nonce (with_style_nonce); the two style elements
    # its bundle adds as it loads (one empty) by their hashes; its search index is built
    # in a worker made from a blob: of its own script
    "/redoc": _SELF.replace(
        "style-src 'self'",
        "style-src 'self' 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' "
        "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",
    ).replace("img-src 'self'", "img-src 'self' data:; worker-src blob:"),
}
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def policy(path: str) -> str:
    return POLICIES.get(path, _SELF)


def with_style_nonce(path: str, nonce: str) -> str:
    """The path's policy, also allowing the style elements that carry ``nonce`` (one
    answer's random value: a page whose library styles itself at run time)."""
    return policy(path).replace("style-src 'self'", f"style-src 'self' 'nonce-{nonce}'")


class SecurityHeaders:
    """Adds the security headers to every HTTP answer (a route may set its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = policy(scope["path"])

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                headers.setdefault("content-security-policy", csp)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                message["headers"] = headers.raw
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, f"request body over {limit} bytes (http.{setting})")


class BodyLimit:
    """Refuses a request body over its limit (413), before or while it arrives."""

    def __init__(
        self, app: ASGIApp, *, max_body: int, max_form: int, max_stow: int | None = None
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_form = max_form
        self.max_stow = max_body if max_stow is None else max_stow

    def limit(self, headers: Headers, path: str = "") -> tuple[int, str]:
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == FORM:
            return self.max_form, "max_form_bytes"
        if path.startswith(STOW_PREFIX):
            return self.max_stow, "max_stow_bytes"
        return self.max_body, "max_body_bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, setting = self.limit(headers, scope["path"])
        refusal = BodyTooLarge(limit, setting)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(refusal, scope, send)  # nothing read: not even a 100 Continue
            return
        received = 0
        over = False
        answer = "none"  # none, app (the app's answer went out), ours (the 413 went out)

        async def limited() -> Message:
            nonlocal received, over
            if over:  # the app asks again after the refusal: the client is gone for it
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise refusal
            return message

        async def guarded(message: Message) -> None:
            nonlocal answer
            if answer == "ours":
                return  # the rest of the app's own answer
            if message["type"] == "http.response.start" and answer == "none":
                if over:  # whatever the app made of a body it could not read: 413
                    answer = "ours"
                    await _refuse(refusal, scope, send)
                    return
                answer = "app"
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not over or answer == "app":
                raise
            if answer == "none":
                await _refuse(refusal, scope, send)


async def _refuse(refusal: BodyTooLarge, scope: Scope, send: Send) -> None:
    # the rest of the body is never read: the connection cannot carry another request
    response = JSONResponse(
        {"detail": refusal.detail}, refusal.status_code, headers={"Connection": "close"}
    )
    await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


# --- validation errors ----------------------------------------------------------------

_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})


def _properties(schema: Any) -> Iterator[str]:
    """Every property name anywhere in a JSON schema (nested models and $defs too)."""
    if isinstance(schema, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            yield from props
        for value in schema.values():
            yield from _properties(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _properties(value)


def declared_names(app: FastAPI) -> frozenset[str]:
    """Every parameter and body field name the app's routes declare (cached)."""
    cached: frozenset[str] | None = getattr(app.state, "declared_names", None)
    if cached is not None:
        return cached
    names = set(_SOURCES)
    for ctx in iter_route_contexts(app.routes):
        if not isinstance(ctx.original_route, APIRoute):
            continue
        stack = [ctx.dependant]
        while stack:
            d = stack.pop()
            stack.extend(d.dependencies)
            params = [*d.path_params, *d.query_params, *d.header_params, *d.cookie_params]
            for field in [*params, *d.body_params]:
                names |= {field.name, field.alias}
                if field.field_info.annotation is None:
                    continue
                try:
                    schema = TypeAdapter(field.field_info.annotation).json_schema()
                except Exception:  # noqa: S112 - a type without a JSON schema names nothing
                    continue
                names.update(_properties(schema))
    found = frozenset(names)
    app.state.declared_names = found
    return found


def _loc(part: Any, names: frozenset[str]) -> Any:
    if isinstance(part, int) or part in names:
        return part
    return "*"  # a key the client made up (an unknown field, a dict key): not echoed


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with where and what, never the value sent (FastAPI's own echoes ``input``)."""
    assert isinstance(exc, RequestValidationError)
    names = declared_names(request.app)
    detail = [
        {
            "type": e.get("type"),
            "loc": [_loc(part, names) for part in e.get("loc", ())],
            "msg": e.get("msg"),
        }
        for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, 422)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A crash: JSON like every other error, nothing of its cause (which may quote data)."""
    route = getattr(request.scope.get("route"), "path", None)
    log.error("http.internal_error", route=route, error=type(exc).__name__)
    return JSONResponse({"detail": "internal error: the node's log has the details"}, 500)


# --- wiring ---------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """The 422 and 500 handlers, and ``/static``: the pages' CSS and JS, and the files of Swagger
    UI and ReDoc (fastapi-offline), public like any stylesheet."""
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
    app.mount(
        "/static",
        StaticFiles(directory=STATIC, packages=[("fastapi_offline", "static")]),
        name="static",
    )


def outermost(app: ASGIApp, settings: Settings) -> ASGIApp:
    """The layers that wrap the whole app (see ``create_app``)."""
    limited = BodyLimit(
        app,
        max_body=settings.http.max_body_bytes,
        max_form=settings.http.max_form_bytes,
        max_stow=settings.http.max_stow_bytes,
    )
    return SecurityHeaders(limited)
