"""The pages' login session and CSRF tokens: a signed cookie, no server-side state.

The cookie holds ``{sid, name, role, exp}`` (base64url JSON) and its HMAC-SHA256
under the session key; a session without a name is anonymous (it only carries the
CSRF binding of the login form, or of the review page when auth is off). The CSRF
token of a form is the HMAC of the session id: a page of another site can neither
read it nor forge it, and it changes with each login. The key is
``http.auth.session_secret`` or, by default, 32 random bytes kept in
``<home>/keys/session.key`` (mode 0600).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cds.config import Settings

COOKIE = "cds_session"
KEY_FILE = "session.key"
ANONYMOUS_SECONDS = 3600.0  # a login form (or a page with auth off) stays usable this long


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    name: str | None  # None: anonymous (no login yet)
    role: str | None
    via: str | None  # "token:<fingerprint of the token>" or "oidc"
    exp: float


def session_key(settings: Settings) -> bytes:
    """The key that signs cookies and CSRF tokens; made once, kept 0600."""
    secret = settings.http.auth.session_secret
    if secret is not None:
        return hashlib.sha256(secret.encode()).digest()
    folder = settings.keys_path
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    text = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise ValueError(f"{path}: not a session key (64 hex characters); remove it to make one")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    def __init__(self, key: bytes, lifetime_s: float) -> None:
        self._key = key
        self.lifetime_s = lifetime_s

    def _sign(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\0" + data, hashlib.sha256).digest()

    def new(
        self, name: str | None = None, role: str | None = None, via: str | None = None
    ) -> Session:
        """A fresh session (a new id at each login: no session fixation)."""
        life = ANONYMOUS_SECONDS if name is None else self.lifetime_s
        return Session(secrets.token_urlsafe(18), name, role, via, time.time() + life)

    def encode(self, s: Session) -> str:
        payload = json.dumps(
            {"sid": s.sid, "name": s.name, "role": s.role, "via": s.via, "exp": s.exp},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._sign('session', payload))}"

    def decode(self, cookie: str | None) -> Session | None:
        """The session of a cookie, or None when it is absent, forged or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, sig = cookie.split(".")
        try:
            payload, mac = _unb64(body), _unb64(sig)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._sign("session", payload)):
            return None
        try:
            d = json.loads(payload)
            s = Session(str(d["sid"]), d["name"], d["role"], d["via"], float(d["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return s if s.exp > time.time() else None

    def csrf_token(self, s: Session) -> str:
        return _b64(self._sign("csrf", s.sid.encode()))

    def csrf_ok(self, s: Session | None, token: str | None) -> bool:
        if s is None or not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(s).encode())
