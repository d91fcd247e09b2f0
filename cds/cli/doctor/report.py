"""One row of ``cds doctor`` and the report the checks add their rows to."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cds.i18n import text

if TYPE_CHECKING:
    from cds.config import Settings
    from cds.i18n import Lang

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True, slots=True)
class Check:
    id: str  # stable, for machines: python, model:NAME, port:dicom, destination:NAME ...
    name: str  # as people read it, in their language
    status: Status
    detail: str
    fix: str = ""  # what to do; only where the status is not ok


@dataclass
class Report:
    """The checks of one install so far, in one language."""

    settings: Settings
    lang: Lang
    timeout_s: float  # each network check
    checks: list[Check] = field(default_factory=list)

    def t(self, key: str, **values: object) -> str:
        """The text ``doctor.<key>`` in the report's language."""
        return text(self.lang, f"doctor.{key}", **values)

    def add(self, id_: str, name: str, status: Status, detail: str, fix: str = "") -> None:
        self.checks.append(Check(id_, name, status, detail, fix if status != "ok" else ""))

    @property
    def failed(self) -> bool:
        return any(c.status == "fail" for c in self.checks)


def existing(path: Path) -> Path | None:
    """``path``, or its nearest folder that exists (where it would be created)."""
    for p in (path, *path.absolute().parents):
        if p.exists():
            return p
    return None


def user() -> str:
    try:
        import pwd  # noqa: PLC0415

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())
