"""The API's description (OpenAPI) and its pages, for observers and up.

FastAPI's own ``/docs``, ``/redoc`` and ``/openapi.json`` are turned off in
``create_app`` and served here behind the observer role: what the node offers is
conformance information a vendor may read, not something for anyone on the
network. A browser signed in at ``/login`` reads them with its session cookie.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

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


@router.get("/docs")
def swagger(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - API")


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} - API")
