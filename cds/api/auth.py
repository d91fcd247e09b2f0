"""Who is calling, and may they: authentication and roles of the HTTP API and pages.

Every route states its decision with one dependency: ``Depends(require_admin)``,
``require_radiologist``, ``require_observer`` (each role includes the ones after
it), or ``Depends(public)`` for the few open routes (``/health``, the login form).
:func:`check_routes` refuses to build an app with a route that states none.

Credentials, in order: ``http.auth.mode: none`` (loopback only; everyone is the
local admin, as before issue 7); ``Authorization: Bearer <token>`` (a configured
token, compared in constant time by SHA-256, or an OIDC access token); the pages'
signed session cookie (:mod:`cds.api.session`), accepted for reading and for the
review forms, which carry a CSRF token. A missing credential is a 401 with
``WWW-Authenticate: Bearer`` (a browser asking for a page is sent to ``/login``),
a refused one a 401 audited as ``login_failed``, a role too low a 403 audited as
``access_denied``. Tokens are never logged nor audited.

Failed logins are counted per client address and credential (:mod:`cds.api.throttle`);
a valid credential is never refused, whatever the count. The client address is
:func:`client_address` (behind ``http.trusted_proxies``, from ``X-Forwarded-For``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, cast
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.responses import Response

from cds.api.oidc import RANK, OidcVerifier, TokenRefused
from cds.api.peers import client_of
from cds.api.session import COOKIE, Session, SessionCodec, session_key
from cds.api.throttle import FailureThrottle
from cds.audit import AuditEvent, AuditOutcome
from cds.config import Settings
from cds.logging import get_logger
from cds.orchestrator import Node

log = get_logger("cds.auth")

SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    role: str  # admin, radiologist or observer
    via: str  # none, token, oidc (bearer), or session (the pages' cookie)

    @property
    def who(self) -> str:
        """As the audit trail and feedback record it."""
        return "local:no-auth" if self.via == "none" else f"user:{self.name}"

    def has(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


LOCAL = Identity("local", "admin", "none")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    """The node's authentication settings made ready: token digests, OIDC keys, cookie key."""

    def __init__(self, settings: Settings) -> None:
        auth = settings.http.auth
        self.enabled = auth.mode != "none"
        self.secure_cookies = settings.http.https
        self.sessions = SessionCodec(session_key(settings), auth.session_hours * 3600)
        self._tokens = [
            (bytes.fromhex(t.token_sha256) if t.token_sha256 else _digest(t.token or ""), t)
            for t in auth.tokens
        ]
        self._oidc = (
            OidcVerifier(auth.oidc) if auth.mode == "oidc" and auth.oidc is not None else None
        )
        self.throttle = FailureThrottle()
        self.trusted_proxies = list(settings.http.trusted_proxies)

    def bearer(self, token: str) -> tuple[Identity, float | None]:
        """The identity of a bearer token and when it expires (None: a static token)."""
        if not token:
            raise TokenRefused("empty token")
        presented = _digest(token)
        found = None
        for digest, cfg in self._tokens:  # every entry compared: the time says nothing
            if hmac.compare_digest(presented, digest):
                found = cfg
        if found is not None:
            return Identity(found.name, found.role, "token"), None
        if self._oidc is not None and token.count(".") == 2:
            user = self._oidc.verify(token)
            return Identity(user.name, user.role, "oidc"), user.exp
        raise TokenRefused("unknown token")

    def _fingerprint(self, name: str) -> str:
        """Names the token a session was opened with (a hash of its digest, not the token):
        a session ends when its token is replaced or removed from the configuration."""
        for digest, cfg in self._tokens:
            if cfg.name == name:
                return hashlib.sha256(digest).hexdigest()[:16]
        return ""

    def login_session(self, ident: Identity, expires: float | None) -> Session:
        """A fresh session for a signed-in user (an OIDC one ends with its access token)."""
        via = f"token:{self._fingerprint(ident.name)}" if ident.via == "token" else ident.via
        s = self.sessions.new(ident.name, ident.role, via)
        return replace(s, exp=expires) if expires is not None and expires < s.exp else s

    def of_session(self, s: Session | None) -> Identity | None:
        """A signed-in session's identity, while its token is still configured as it was."""
        if s is None or s.name is None or s.role not in RANK:
            return None
        if s.via is not None and s.via.startswith("token:"):
            still = any(t.name == s.name and t.role == s.role for _, t in self._tokens)
            if not still or s.via != f"token:{self._fingerprint(s.name)}":
                return None
        elif s.via != "oidc" or self._oidc is None:
            return None
        return Identity(s.name, s.role, "session")

    def session(self, request: Request) -> Session | None:
        return self.sessions.decode(request.cookies.get(COOKIE))

    def set_cookie(self, response: Response, s: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.sessions.encode(s),
            max_age=max(1, int(s.exp - time.time())),
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
        )


def client_address(request: Request) -> str | None:
    """The client's address: the peer, or behind a trusted proxy the client it names
    (:mod:`cds.api.peers`). The audit trail, the logs and the throttle all use this."""
    if request.client is None:
        return None
    proxies = authenticator(request).trusted_proxies
    if not proxies:
        return request.client.host
    return client_of(request.client.host, request.headers.getlist("x-forwarded-for"), proxies)


def audit(
    request: Request,
    event: AuditEvent,
    who: str,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    study_key: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record an HTTP act in the node's audit trail (no token, no patient data)."""
    node = cast(Node, request.app.state.node)
    node.audit.record(
        event,
        who=who,
        outcome=outcome,
        where=client_address(request),
        study_key=study_key,
        detail=detail,
    )


def refused_login(request: Request, reason: str, via: str, credential: str) -> bool:
    """Count and audit a refused credential (never the credential itself); whether its
    client is past a failed-login limit (then answer :func:`too_many`, not 401).

    Below the limits each refusal is audited; the one that reaches a limit is a single
    security alert; past it nothing is written (no fsync, no log line per attempt).
    """
    throttle = authenticator(request).throttle
    address = client_address(request) or ""
    count = throttle.failed(address, throttle.fingerprint(credential))
    if count.past(throttle):
        return True
    one = count.credential >= throttle.limit
    if count.reached(throttle):
        log.warning("auth.failed_login_limit", via=via, client=address, one_credential=one)
        audit(
            request,
            AuditEvent.SECURITY_ALERT,
            "unknown",
            outcome=AuditOutcome.SERIOUS_FAILURE,
            detail={
                "reason": "too many failed logins "
                + ("with one credential from this address" if one else "from this address")
                + ": further refusals are answered 429 for a while; valid credentials get in",
                "failures": count.credential if one else count.address,
                "window_s": throttle.window_s,
            },
        )
        return False
    log.warning("auth.login_failed", reason=reason, via=via, client=address)
    audit(
        request,
        AuditEvent.LOGIN_FAILED,
        "unknown",
        outcome=AuditOutcome.MINOR_FAILURE,
        detail={"reason": reason, "via": via, "path": _route_path(request)},
    )
    return False


def too_many(request: Request) -> HTTPException:
    """The answer to a refused credential past a failed-login limit."""
    window = int(authenticator(request).throttle.window_s)
    return HTTPException(
        429,
        "too many failed logins from this address: try again later",
        headers={"Retry-After": str(window)},
    )


def _route_path(request: Request) -> str:
    """The route's template (``/api/studies/{study_key}``), not the values in it."""
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


def authenticator(request: Request) -> Authenticator:
    return cast(Authenticator, request.app.state.auth)


def identify(request: Request, *, cookie: bool) -> Identity | None:
    """The caller's identity; None when they sent no credential. A refused one: 401."""
    auth = authenticator(request)
    if not auth.enabled:
        return LOCAL
    header = request.headers.get("authorization")
    if header is not None:
        # checked first, whatever the throttle says: a valid credential is never refused
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            if refused_login(request, "not a Bearer authorization", "bearer", header):
                raise too_many(request)
            raise _unauthorized("use Authorization: Bearer <token>", error=True)
        try:
            return auth.bearer(token.strip())[0]
        except TokenRefused as exc:
            if refused_login(request, str(exc), "bearer", header):
                raise too_many(request) from None
            raise _unauthorized(f"token refused: {exc}", error=True) from None
    if cookie:
        return auth.of_session(auth.session(request))
    return None


def _unauthorized(message: str, *, error: bool = False) -> HTTPException:
    challenge = 'Bearer realm="cds"' + (', error="invalid_token"' if error else "")
    return HTTPException(401, message, headers={"WWW-Authenticate": challenge})


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/login?next={quote(target, safe='')}"


class Require:
    """The dependency that lets in callers with at least ``role``.

    ``form=True`` also accepts the session cookie on POST: only for HTML forms
    whose handler checks the CSRF token (the review page). ``page=True`` sends a
    browser without credentials to the login form instead of answering 401.
    """

    def __init__(self, role: str, *, form: bool = False, page: bool = False) -> None:
        assert role in RANK
        self.role = role
        self.form = form
        self.page = page

    def __repr__(self) -> str:
        return f"Require({self.role!r})"

    def __call__(self, request: Request) -> Identity:
        cookie = request.method in SAFE_METHODS or self.form
        ident = identify(request, cookie=cookie)
        if ident is None:
            if self.page and "text/html" in request.headers.get("accept", ""):
                raise HTTPException(303, "sign in first", headers={"Location": login_url(request)})
            raise _unauthorized("authentication required: send Authorization: Bearer <token>")
        if not ident.has(self.role):
            audit(
                request,
                AuditEvent.ACCESS_DENIED,
                ident.who,
                outcome=AuditOutcome.MINOR_FAILURE,
                detail={
                    "method": request.method,
                    "path": _route_path(request),
                    "role": ident.role,
                    "needs": self.role,
                },
            )
            raise HTTPException(
                403, f"the {ident.role} role may not do this: it needs the {self.role} role"
            )
        request.state.identity = ident
        return ident


def public() -> None:
    """Marks a route as open on purpose (no credential needed)."""


require_admin = Require("admin")
require_radiologist = Require("radiologist")
require_observer = Require("observer")
observer_page = Require("observer", page=True)
radiologist_page = Require("radiologist", page=True)
radiologist_form = Require("radiologist", form=True, page=True)

AdminUser = Annotated[Identity, Depends(require_admin)]
RadiologistUser = Annotated[Identity, Depends(require_radiologist)]
ADMIN = Depends(require_admin)
RADIOLOGIST = Depends(require_radiologist)
OBSERVER = Depends(require_observer)
PUBLIC = Depends(public)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    method: str
    path: str
    decision: str | None  # the role it needs, "public", or None: no decision stated


def _decision(dependant: Any) -> str | None:
    found: list[str] = []

    def walk(deps: list[Any]) -> None:
        for dep in deps:
            call: Callable[..., Any] | None = dep.call
            if isinstance(call, Require):
                found.append(call.role)
            elif call is public:
                found.append("public")
            walk(dep.dependencies)

    walk(dependant.dependencies)
    return max(found, key=lambda r: RANK.get(r, 0)) if found else None


def route_decisions(app: FastAPI) -> list[RouteDecision]:
    """Every API route of the app (included routers walked) and its access decision."""
    out = []
    for ctx in iter_route_contexts(app.routes):
        if not isinstance(ctx.original_route, APIRoute):
            continue
        decision = _decision(ctx.dependant)
        out += [RouteDecision(m, str(ctx.path), decision) for m in sorted(ctx.methods or ())]
    return out


def check_routes(app: FastAPI) -> None:
    """Refuse an app with a route that has made no access decision."""
    missing = [f"{r.method} {r.path}" for r in route_decisions(app) if r.decision is None]
    if missing:
        raise RuntimeError(f"routes without an access decision (cds.api.auth): {missing}")


def page_session(request: Request) -> tuple[Session, bool]:
    """The browser's session (for the CSRF token of a page's forms), and whether it
    is new (then the page must set its cookie)."""
    auth = authenticator(request)
    found = auth.session(request)
    return (found, False) if found is not None else (auth.sessions.new(), True)


def csrf_ok(request: Request, token: str | None) -> bool:
    """Whether a posted form's CSRF token belongs to this browser's session."""
    auth = authenticator(request)
    return auth.sessions.csrf_ok(auth.session(request), token)
