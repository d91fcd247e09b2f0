"""Configuration changes between runs: the settings' fingerprint at each start.

The node's settings are fixed while it runs (routing and the kill switch, which
change at run time, are audited where they change). At each start the node
records ``config_changed`` when the settings' fingerprint differs from the one
of the previous start (kept in ``<audit>/config.sha256``), naming the sections
that changed, never their values.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from pydantic import BaseModel

from cds.audit.events import AuditEvent
from cds.audit.trail import AuditTrail

STATE_NAME = "config.json"


def fingerprints(settings: BaseModel) -> dict[str, str]:
    """SHA-256 of each top-level section (secrets are masked by pydantic's dump,
    so a changed secret is not seen; a changed secret file path is)."""
    data: dict[str, Any] = json.loads(settings.model_dump_json())
    return {
        name: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
        for name, value in sorted(data.items())
    }


def record_config(trail: AuditTrail, settings: BaseModel) -> str:
    """Record ``config_changed`` if the settings differ from the last start's;
    returns the whole configuration's fingerprint (for ``application_start``)."""
    now = fingerprints(settings)
    whole = hashlib.sha256(json.dumps(now, sort_keys=True).encode()).hexdigest()
    state = trail.path / STATE_NAME
    try:
        before: dict[str, str] | None = json.loads(state.read_text())
    except (OSError, ValueError):
        before = None
    if before != now:
        changed = sorted(k for k in now.keys() | (before or {}).keys()
                         if now.get(k) != (before or {}).get(k))  # fmt: skip
        trail.record(
            AuditEvent.CONFIG_CHANGED,
            who="system",
            detail={"sections": changed if before is not None else ["(first start)"],
                    "sha256": whole},
        )  # fmt: skip
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps(now, sort_keys=True))
        os.replace(tmp, state)
    return whole


__all__ = ["fingerprints", "record_config"]
