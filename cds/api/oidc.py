"""OIDC access tokens (JWT): signature by the identity provider's keys (JWKS),
issuer, audience and expiry, then the user's cds role from a claim.

PyJWT does the JWT work; the keys come from ``http.auth.oidc.jwks_file`` (read
once at start) or from ``jwks_url`` (fetched and cached by PyJWT's client).
Only asymmetric algorithms are accepted: a token signed with a shared secret,
or with ``none``, is refused whatever its header says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt

from cds.config import OidcSettings

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
RANK = {"observer": 1, "radiologist": 2, "admin": 3}
LEEWAY_S = 30


class TokenRefused(Exception):
    """Why a bearer token is refused (said in the audit trail, never the token)."""


@dataclass(frozen=True, slots=True)
class OidcUser:
    name: str
    role: str
    exp: float


class OidcVerifier:
    def __init__(self, cfg: OidcSettings) -> None:
        self.cfg = cfg
        self._keys: jwt.PyJWKSet | None = None
        self._client: jwt.PyJWKClient | None = None
        if cfg.jwks_file is not None:
            try:
                data = json.loads(cfg.jwks_file.read_text(encoding="utf-8"))
                self._keys = jwt.PyJWKSet.from_dict(data)
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise ValueError(
                    f"http.auth.oidc.jwks_file: cannot read a JWKS from {cfg.jwks_file} ({exc})"
                ) from None
        else:
            self._client = jwt.PyJWKClient(cfg.keys_url, cache_keys=True, lifespan=3600, timeout=5)

    def _key(self, token: str) -> Any:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"not a JWT ({type(exc).__name__})") from None
        if self._client is not None:
            try:
                return self._client.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError:
                raise TokenRefused("the identity provider's keys cannot be fetched") from None
            except jwt.PyJWTError:
                raise TokenRefused("signed by an unknown key") from None
        assert self._keys is not None
        found = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if not found:
            raise TokenRefused("signed by an unknown key")
        return found[0].key

    def verify(self, token: str) -> OidcUser:
        key = self._key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.cfg.audience,
                issuer=self.cfg.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("wrong issuer") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"invalid ({type(exc).__name__})") from None
        role = self.role_of(claims)
        if role is None:
            raise TokenRefused(f"no cds role in claim {self.cfg.role_claim!r}")
        name = claims.get(self.cfg.username_claim) or claims["sub"]
        return OidcUser(str(name)[:64], role, float(claims["exp"]))

    def role_of(self, claims: dict[str, Any]) -> str | None:
        """The highest cds role the claim grants (a dotted path reaches into objects)."""
        value: Any = claims
        for part in self.cfg.role_claim.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        mapped = [
            self.cfg.role_map.get(v, v if not self.cfg.role_map else "")
            for v in values
            if isinstance(v, str)
        ]
        granted = [r for r in mapped if r in RANK]
        return max(granted, key=RANK.__getitem__) if granted else None
