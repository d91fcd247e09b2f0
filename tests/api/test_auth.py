"""issue 7 'HTTP authentication': bearer tokens, OIDC access tokens (a local RSA key
and a JWKS file, no network), the pages' login form and session cookie, and what
the audit trail records (login, login_failed without the token, access_denied,
who asked for a purge or a kill switch)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from cds.api.app import create_app
from cds.api.auth import Authenticator
from cds.api.session import COOKIE
from cds.config import Settings

from ..conftest import make_settings
from ..ingest.test_scp import connect, ct
from .authkit import (
    NAMES,
    TOKENS,
    audit_bytes,
    audit_records,
    bearer,
    csrf_of,
    login,
    token_entries,
    token_settings,
)

ISSUER = "https://idp.hospital.test/realms/radiology"
AUDIENCE = "cds"
ROUTING = """
destinations: {}
pipelines:
  p: {model: m-under-test, results: [SR]}
rules:
  - name: CT
    match: [{attribute: Modality, equals: CT}]
    pipelines: [p]
"""


@pytest.fixture
def tsettings(tmp_path: Path) -> Settings:
    (tmp_path / "routing.yaml").write_text(ROUTING)
    return token_settings(tmp_path / "home", routing={"file": str(tmp_path / "routing.yaml")})


@pytest.fixture
def client(tsettings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(tsettings)) as c:
        yield c


def _events(settings: Settings, event: str) -> list[dict[str, Any]]:
    return [r for r in audit_records(settings) if r["event"] == event]


# --- bearer tokens ---------------------------------------------------------------------


def test_a_configured_token_gets_in_by_digest_or_plain(client: TestClient) -> None:
    assert client.get("/api/studies", headers=bearer("radiologist")).status_code == 200
    assert client.get("/api/queue", headers=bearer("observer")).status_code == 200  # plain


def test_a_wrong_token_is_401_and_audited_without_the_token(
    client: TestClient, tsettings: Settings
) -> None:
    wrong = "Zz9-this-is-not-a-configured-token"
    got = client.get("/api/studies", headers={"Authorization": f"Bearer {wrong}"})
    assert got.status_code == 401
    assert got.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in got.headers["www-authenticate"]
    basic = client.get("/api/studies", headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    assert basic.status_code == 401
    failed = _events(tsettings, "login_failed")
    assert len(failed) == 2
    assert failed[0]["outcome"] == "4"  # minor failure
    assert failed[0]["where"] == "testclient"
    assert failed[0]["detail"]["reason"] == "unknown token"
    assert failed[0]["detail"]["path"] == "/api/studies"
    data = audit_bytes(tsettings)
    assert wrong.encode() not in data
    assert b"YWRtaW46YWRtaW4" not in data
    for token in TOKENS.values():
        assert token.encode() not in data


def test_a_role_too_low_is_403_and_audited(client: TestClient, tsettings: Settings) -> None:
    got = client.post("/api/models/m-under-test/disable", headers=bearer("radiologist"))
    assert got.status_code == 403
    assert got.json()["detail"] == ("the radiologist role may not do this: it needs the admin role")
    (denied,) = _events(tsettings, "access_denied")
    assert denied["who"] == f"user:{NAMES['radiologist']}"
    assert denied["detail"] == {
        "method": "POST",
        "path": "/api/models/{name}/disable",
        "role": "radiologist",
        "needs": "admin",
    }
    assert client.app.state.node.routing.disabled() == set()  # type: ignore[attr-defined]


def test_admin_acts_are_audited_with_who_asked(client: TestClient, tsettings: Settings) -> None:
    admin = bearer("admin")
    got = client.post("/api/models/m-under-test/disable", headers=admin)
    assert got.status_code == 200, got.text
    assert client.post("/api/models/m-under-test/enable", headers=admin).status_code == 200
    who = f"user:{NAMES['admin']}"
    (off,) = _events(tsettings, "model_disabled")
    (on,) = _events(tsettings, "model_enabled")
    assert (off["who"], off["detail"]["model"]) == (who, "m-under-test")
    assert (on["who"], on["detail"]["model"]) == (who, "m-under-test")
    # a purge
    node = client.app.state.node  # type: ignore[attr-defined]
    a = connect(node)
    study = generate_uid()
    assert a.send_c_store(ct(study=study)).Status == 0
    a.release()
    key = node.receiver.key(study)
    got = client.post(f"/api/studies/{key}/purge", params={"force": True}, headers=admin)
    assert got.status_code == 200, got.text
    purges = [r for r in _events(tsettings, "purge") if r["who"] == who]
    assert len(purges) == 1
    assert purges[0]["study_key"] == key
    assert purges[0]["detail"]["reason"] == "admin"


def test_feedback_api_records_the_signed_in_user_not_the_body(client: TestClient) -> None:
    """The body's user is not trusted with auth on (no finding here: 404 after auth)."""
    got = client.post(
        "/api/results/1.2.3/findings/1.2.4/feedback",
        json={"action": "accept", "user": "someone.else"},
        headers=bearer("radiologist"),
    )
    assert got.status_code == 404  # past authentication, no such result


# --- the login form and the session cookie ---------------------------------------------


def test_login_form_sets_a_strict_httponly_session_and_audits(
    client: TestClient, tsettings: Settings
) -> None:
    got = login(client, TOKENS["radiologist"], "/review?lang=fr")
    assert got.status_code == 303
    assert got.headers["location"] == "/review?lang=fr"
    cookie = got.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see test_https
    assert TOKENS["radiologist"] not in cookie
    assert client.get("/review").status_code == 200
    assert client.get("/api/studies").status_code == 200  # reading with the cookie
    (rec,) = _events(tsettings, "login")
    assert rec["who"] == f"user:{NAMES['radiologist']}"
    assert rec["detail"] == {"via": "token", "role": "radiologist"}


def test_the_session_cookie_is_not_enough_to_post_to_the_api(client: TestClient) -> None:
    assert login(client, TOKENS["admin"]).status_code == 303
    assert client.get("/api/routing").status_code == 200
    assert client.post("/api/models/m-under-test/disable").status_code == 401


def test_login_refusals(client: TestClient, tsettings: Settings) -> None:
    bad = login(client, "Qq1-not-a-configured-token-here")
    assert bad.status_code == 401
    assert "not accepted" in bad.text
    (rec,) = _events(tsettings, "login_failed")
    assert rec["detail"]["via"] == "login form"
    assert b"Qq1-not-a-configured" not in audit_bytes(tsettings)
    # no CSRF token: refused, no session
    forged = client.post("/login", data={"token": TOKENS["admin"]}, follow_redirects=False)
    assert forged.status_code == 403
    assert client.get("/api/routing").status_code == 401
    # an open redirect is not followed
    away = login(client, TOKENS["admin"], "//evil.example/")
    assert away.headers["location"] == "/review"


def test_forged_or_expired_cookies_are_ignored(client: TestClient, tsettings: Settings) -> None:
    assert login(client, TOKENS["admin"]).status_code == 303
    value = client.cookies[COOKIE]
    body, sig = value.split(".")
    client.cookies.clear()
    for forged in (f"{body}.{sig[:-2]}AA", f"{body[:-4]}AAAA.{sig}", "x", ""):
        client.cookies.set(COOKIE, forged)
        assert client.get("/api/routing").status_code == 401
        client.cookies.clear()
    # the same cookie made with another node's key does not open this one
    other = make_settings(tsettings.home.parent / "other")
    with TestClient(create_app(other)) as c2:
        page = c2.get("/login")
        assert COOKIE in page.cookies
        client.cookies.set(COOKIE, page.cookies[COOKIE])
        assert client.get("/api/routing").status_code == 401


def test_logout_needs_the_csrf_token_and_ends_the_session(client: TestClient) -> None:
    assert login(client, TOKENS["radiologist"]).status_code == 303
    page = client.get("/review")
    assert "Signed in as dr.martin" in page.text
    assert client.post("/logout", follow_redirects=False).status_code == 403
    assert client.get("/review").status_code == 200
    out = client.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/review").status_code == 401


def test_a_session_ends_when_its_token_is_replaced(client: TestClient, tsettings: Settings) -> None:
    assert login(client, TOKENS["radiologist"]).status_code == 303
    assert client.get("/review").status_code == 200
    rotated = [dict(t) for t in token_entries()]
    rotated[1]["token_sha256"] = hashlib.sha256(b"a-new-token-for-dr-martin-8f3").hexdigest()
    same_key = token_settings(tsettings.home, http={"auth": {"mode": "token", "tokens": rotated}})
    cookie = client.cookies[COOKIE]
    before, after = Authenticator(tsettings), Authenticator(same_key)  # same session key
    assert before.of_session(before.sessions.decode(cookie)) is not None
    assert after.sessions.decode(cookie) is not None  # a valid signature...
    assert after.of_session(after.sessions.decode(cookie)) is None  # ...of a replaced token


def test_the_session_key_is_kept_0600_in_home_keys(client: TestClient, tsettings: Settings) -> None:
    key = tsettings.keys_path / "session.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(bytes.fromhex(key.read_text().strip())) == 32


def test_mode_none_on_loopback_is_as_before(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/studies").status_code == 200
        assert c.post("/api/deliveries/retry-dead").status_code == 202
        assert "dicom" in c.get("/health").json()
        assert c.get("/openapi.json").status_code == 200
        page = c.get("/login")
        assert "Authentication is off" in page.text
        # the review form still needs the CSRF token of the page's (anonymous) session
        assert c.get("/review").status_code == 200
        auth = c.app.state.auth  # type: ignore[attr-defined]
        session = auth.sessions.decode(c.cookies[COOKIE])
        url = "/review/x/findings/1.2.3"
        assert c.post(url, data={"action": "accept", "who": "dr.x"}).status_code == 403
        ok = {"action": "accept", "who": "dr.x", "csrf": auth.sessions.csrf_token(session)}
        assert c.post(url, data=ok).status_code == 404  # past CSRF: no such finding


# --- OIDC ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idp_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def oidc_settings(tmp_path: Path, idp_key: rsa.RSAPrivateKey) -> Settings:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(idp_key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    oidc = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_file": str(jwks),
        "role_claim": "realm_access.roles",
        "role_map": {"cds-admin": "admin", "cds-radiologist": "radiologist", "viewer": "observer"},
    }
    return make_settings(tmp_path / "home", http={"auth": {"mode": "oidc", "oidc": oidc}})


def _jwt(key: Any, *, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "0b6f-uuid",
        "preferred_username": "dr.durand",
        "iat": now,
        "exp": now + 300,
        "realm_access": {"roles": ["viewer", "cds-radiologist"]},
    }
    body.update(claims)
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def test_oidc_access_tokens(oidc_settings: Settings, idp_key: rsa.RSAPrivateKey) -> None:
    def h(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = idp_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with TestClient(create_app(oidc_settings)) as c:
        good = _jwt(idp_key)
        assert c.get("/api/studies", headers=h(good)).status_code == 200  # radiologist
        assert c.get("/api/routing", headers=h(good)).status_code == 403
        admin = _jwt(idp_key, realm_access={"roles": ["cds-admin"]})
        assert c.get("/api/routing", headers=h(admin)).status_code == 200
        refused = {
            "expired": _jwt(idp_key, exp=int(time.time()) - 120),
            "wrong audience": _jwt(idp_key, aud="another-app"),
            "wrong issuer": _jwt(idp_key, iss="https://evil.example/"),
            "other key": _jwt(other_key),
            "unknown kid": _jwt(idp_key, kid="k2"),
            "no role": _jwt(idp_key, realm_access={"roles": ["nurse"]}),
            "not a JWT": "aaa.bbb.ccc",
        }
        for why, token in refused.items():
            got = c.get("/api/studies", headers=h(token))
            assert got.status_code == 401, why
        # a token signed with HS256 using the public key as the secret (alg confusion)
        with pytest.raises(jwt.InvalidKeyError):  # PyJWT itself refuses to make one...
            _jwt(public_pem, alg="HS256")
        # ...so make it by hand

        def b64(b: bytes) -> str:
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

        head = b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
        claims = jwt.decode(good, options={"verify_signature": False})
        payload = b64(json.dumps(claims).encode())
        sig = hmac.new(public_pem, f"{head}.{payload}".encode(), hashlib.sha256).digest()
        assert c.get("/api/studies", headers=h(f"{head}.{payload}.{b64(sig)}")).status_code == 401
        reasons = [r["detail"]["reason"] for r in _events(oidc_settings, "login_failed")]
        assert {"expired", "wrong audience", "wrong issuer"} <= set(reasons)
        # the pages: paste the access token in the login form
        got = login(c, good)
        assert got.status_code == 303
        page = c.get("/review")
        assert page.status_code == 200
        assert "Signed in as dr.durand (radiologist)" in page.text
        data = audit_bytes(oidc_settings)
        assert good.encode() not in data
        assert good.split(".")[2].encode() not in data


# failed logins past the limits (per address and credential; a valid token is never
# refused): tests/api/test_hardening.py, against the real node


def test_a_page_refused_to_a_browser_is_an_html_page(client: TestClient) -> None:
    """A signed-in observer opening the review page gets a 403 page in French and English
    (with the reason and a way to sign in again), not the API's JSON; the API keeps JSON."""
    assert login(client, TOKENS["observer"]).status_code == 303
    page = client.get("/review", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "Accès refusé" in page.text
    assert "Access denied" in page.text
    assert "it needs the radiologist role" in page.text
    assert 'href="/login"' in page.text
    api = client.get("/api/studies", headers={**bearer("observer"), "Accept": "text/html"})
    assert api.status_code == 403
    assert api.json()["detail"].endswith("it needs the radiologist role")
