"""Shared by the issue 7 HTTP access tests: one token per role, settings in token
mode, audit records read back, and a browser-like login through the form."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from cds.config import Settings

from ..conftest import make_settings

TOKENS = {
    "admin": "adm-7Hq2vN9xKp4Lm8Rt3Wz6Yb1C",
    "radiologist": "rad-Q4mV8sT1xN6pK3zL9wR2bY7H",
    "observer": "obs-J5kP2nW8qX4tM7vR1zL6cB3D",
}
NAMES = {"admin": "pacs.admin", "radiologist": "dr.martin", "observer": "vendor.bot"}
ROLES = ("admin", "radiologist", "observer")


def token_entries() -> list[dict[str, str]]:
    """Two by digest (as ``cds token new`` prints them), the observer by plain token."""
    out = []
    for role, token in TOKENS.items():
        entry = {"name": NAMES[role], "role": role}
        if role == "observer":
            entry["token"] = token
        else:
            entry["token_sha256"] = hashlib.sha256(token.encode()).hexdigest()
        out.append(entry)
    return out


def token_settings(home: Path, **sections: dict[str, Any]) -> Settings:
    http = {"auth": {"mode": "token", "tokens": token_entries()}}
    http.update(sections.pop("http", {}))
    return make_settings(home, http=http, **sections)


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def audit_records(settings: Settings) -> list[dict[str, Any]]:
    path = settings.audit_path / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def audit_bytes(settings: Settings) -> bytes:
    """Everything under the audit folder, to grep for what must never be there."""
    return b"\n".join(p.read_bytes() for p in settings.audit_path.rglob("*") if p.is_file())


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF field in the page"
    return found.group(1)


def login(client: TestClient | httpx.Client, token: str, next_url: str = "/review") -> Any:
    """Sign in through the form, as a browser does; returns the POST's response."""
    form = client.get("/login", params={"next": next_url})
    assert form.status_code == 200, form.text
    return client.post(
        "/login",
        data={"csrf": csrf_of(form.text), "token": token, "next": next_url},
        follow_redirects=False,
    )
