"""The review and sign-in pages' texts: the ``review`` part of ``cds.i18n``, in French
and English (both first-class), by short name (``t(lang, "banner")``).

The page language is ``?lang=fr|en``, else the browser's ``Accept-Language``, else
``results.language`` (``cds.i18n.page_language``). The banner says what every result
object already says: the findings are suggestions.
"""

from __future__ import annotations

from typing import Final

from cds.i18n import Lang, text

#: the text that names a verdict, by the form's action
VERDICT_KEY: Final[dict[str, str]] = {
    "accept": "accepted",
    "reject": "rejected",
    "correct": "corrected",
}


def t(lang: Lang, name: str, /, **values: object) -> str:
    """The text ``review.<name>`` in ``lang``, formatted with ``values`` (not yet HTML-escaped)."""
    return text(lang, f"review.{name}", **values)
