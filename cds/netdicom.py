"""The one pynetdicom release cds is built and tested against.

The receive path (``cds.ingest.server``, ``cds.ingest.sources``, the fast path) and the
requestor (``cds.requestor``) subclass or replace pynetdicom internals (about 28
private names) and set its module configuration. Any other release, a patch release
included, may change them silently, so each place checks the release first and
refuses to start with a message naming both versions. ``pyproject.toml`` pins the
same release; moving to another is a change of this constant, run through the whole
suite (the fast-path and requestor tests drive these internals).
"""

from __future__ import annotations

import pynetdicom

PYNETDICOM_VERSION = "3.0.4"


def check_pynetdicom(who: str) -> None:
    """Raise RuntimeError unless the installed pynetdicom is the release ``who`` adapts."""
    found = pynetdicom.__version__
    if found != PYNETDICOM_VERSION:
        raise RuntimeError(
            f"{who} adapts pynetdicom {PYNETDICOM_VERSION} internals, found {found}: "
            f"install pynetdicom=={PYNETDICOM_VERSION} (pyproject.toml pins it)"
        )
