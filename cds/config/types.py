"""The field types every settings section shares (ports, AE titles, seconds) and the
strict base of a section. Kept apart so that ``settings.py``, ``dicom.py`` and ``http.py`` all
build on them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash


def _check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be 1..65535")
    return value


def _check_ae_title(value: str) -> str:
    if not _AE_RE.match(value) or not value.strip():
        raise ValueError("must be 1..16 printable ASCII characters, not only spaces, no backslash")
    return value.strip()


def _check_positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be > 0")
    return value


Port = Annotated[int, AfterValidator(_check_port)]
AETitle = Annotated[str, AfterValidator(_check_ae_title)]
Seconds = Annotated[float, AfterValidator(_check_positive)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
