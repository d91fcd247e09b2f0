"""The ``http`` section of the settings: the API's address, HTTPS, and who may use it
(tokens, OIDC, roles), with the checks that refuse an unsafe start (an API off
loopback without authentication, placeholder or weak secrets). Part of the one
``Settings`` object of ``config.py``, which re-exports these classes."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, IPvAnyNetwork, field_validator, model_validator

from cds.config.types import Port, _Section

_WEAK_WORDS = frozenset(
    {
        "admin",
        "changeit",
        "changeme",
        "default",
        "example",
        "letmein",
        "password",
        "placeholder",
        "secret",
        "test",
        "token",
    }
)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
MIN_TOKEN_CHARS = 16
MIN_SESSION_SECRET_CHARS = 32


def weak_secret(value: str, min_chars: int) -> str | None:
    """Why ``value`` is not a secret a node may start with (None: it may)."""
    low = value.strip().lower()
    squeezed = re.sub(r"[^a-z0-9]", "", low)
    if len(value) < min_chars:
        return f"shorter than {min_chars} characters"
    if len(set(low)) <= 2:
        return "a placeholder (one or two repeated characters)"
    if squeezed in _WEAK_WORDS or any(
        w in squeezed for w in ("changeme", "placeholder", "example", "password")
    ):
        return "a placeholder or well-known secret"
    if low.startswith("<") and low.endswith(">"):
        return "a placeholder (<...>)"
    return None


def _placeholder_digests() -> frozenset[str]:
    words = set(_WEAK_WORDS) | {"", "changeme123", "<token>", "<hex>"}
    words |= {w.upper() for w in _WEAK_WORDS} | {w.capitalize() for w in _WEAK_WORDS}
    words |= {c * n for c in "x0a1" for n in range(1, 65)}
    return frozenset(hashlib.sha256(w.encode()).hexdigest() for w in words)


_PLACEHOLDER_DIGESTS = _placeholder_digests()

Role = Literal["admin", "radiologist", "observer"]


class ApiToken(_Section):
    """One bearer token: who it is and what they may do."""

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._@-]+$",
        description="who: shown in the audit trail and feedback",
    )
    role: Role
    token_sha256: str | None = Field(
        None, description="hex SHA-256 of the token (preferred: no secret in the file)"
    )
    token: str | None = Field(None, description="the token itself (prefer token_sha256)")

    @field_validator("token_sha256")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _HEX64.match(value):
            raise ValueError("must be 64 hexadecimal characters (cds token new prints one)")
        if value.lower() in _PLACEHOLDER_DIGESTS:
            raise ValueError("is the SHA-256 of a placeholder or well-known secret")
        return value.lower()

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and (why := weak_secret(value, MIN_TOKEN_CHARS)) is not None:
            raise ValueError(f"refused: {why} (cds token new makes a strong one)")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> ApiToken:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token_sha256 (preferred) and token")
        return self


class OidcSettings(_Section):
    issuer: str = Field(min_length=1, description="the identity provider's issuer URL")
    audience: str = Field(
        min_length=1, description="the audience (client id) tokens must be issued for"
    )
    jwks_url: str | None = Field(None, description="default: <issuer>/.well-known/jwks.json")
    jwks_file: Path | None = Field(None, description="keys from a file instead of the network")
    role_claim: str = Field(
        "roles",
        description="claim that lists the user's roles; a dotted path reaches into objects "
        "(realm_access.roles)",
    )
    role_map: dict[str, Role] = Field(
        default_factory=dict,
        description="identity-provider role -> cds role (empty: the claim holds cds role names)",
    )
    username_claim: str = Field(
        "preferred_username", description="claim naming the user (else sub)"
    )

    @property
    def keys_url(self) -> str:
        return self.jwks_url or self.issuer.rstrip("/") + "/.well-known/jwks.json"


class AuthSettings(_Section):
    """Who may use the HTTP API and pages. 'none' is refused off loopback."""

    mode: Literal["none", "token", "oidc"] = "none"
    tokens: list[ApiToken] = Field(default_factory=list)
    oidc: OidcSettings | None = None
    session_secret: str | None = Field(
        None,
        description="signs the review page's login cookie and CSRF tokens "
        "(default: a random key kept in <home>/keys)",
    )
    session_hours: float = Field(
        12.0, gt=0, le=168, description="a page login lasts this long (one shift)"
    )

    @field_validator("session_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and (why := weak_secret(value, MIN_SESSION_SECRET_CHARS)) is not None:
            raise ValueError(f"refused: {why}; leave it out to use a random key in <home>/keys")
        return value

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.mode == "token" and not self.tokens:
            raise ValueError("mode token needs at least one entry in http.auth.tokens")
        if self.mode == "oidc" and self.oidc is None:
            raise ValueError("mode oidc needs the http.auth.oidc section")
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("http.auth.tokens: each name must be given once")
        return self


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the port on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    tls_cert_file: Path | None = Field(None, description="HTTPS certificate (PEM)")
    tls_key_file: Path | None = Field(None, description="HTTPS private key (PEM)")
    auth: AuthSettings = AuthSettings()
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=1024**3,
        description="largest request body the API reads (JSON); a bigger one is answered "
        "413 before it is read (by its Content-Length, or as soon as a chunked body passes it)",
    )
    max_stow_bytes: int = Field(
        512 * 1024**2,
        ge=1024,
        le=16 * 1024**3,
        description="largest STOW-RS request (POST /dicomweb/studies, multipart/related) the "
        "API reads; it is held in memory while its instances are stored; bigger: 413",
    )
    max_form_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="largest HTML form post (the login and review pages' forms); bigger: 413",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="reverse proxies (addresses or CIDR networks) in front of the node: only "
        "when the peer is one of them is X-Forwarded-For read (its rightmost address that is "
        "not a trusted proxy is the client); empty: the peer is the client",
    )

    @model_validator(mode="after")
    def _safe(self) -> HttpSettings:
        errors = []
        if self.auth.mode == "none" and not is_loopback(self.host):
            errors.append(
                f"http.auth.mode is none but http.host {self.host!r} is not a loopback address: "
                "anyone on the network could use the API; set http.auth.mode to token or oidc"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            errors.append("http.tls_cert_file and http.tls_key_file must be given together")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @property
    def https(self) -> bool:
        return self.tls_cert_file is not None
