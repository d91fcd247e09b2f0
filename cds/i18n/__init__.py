"""Every text cds shows people, in French and English (both first-class).

One table per language with the same keys (``cds.i18n.en``, ``cds.i18n.fr``), grouped
by part: ``advisory`` (result objects), ``review`` (review and sign-in pages),
``observatory``, ``refusal`` (the HTML 401/403 page) and ``fhir`` (notifications). A base
module: it imports nothing else of cds, so every stage and the face may use it.
"""

from cds.i18n.advisory import LABEL_SEPARATOR, AdvisoryTexts, advisory
from cds.i18n.catalog import (
    LANGS,
    TABLES,
    Lang,
    check_lang,
    other,
    page_language,
    section,
    text,
)

__all__ = [
    "LABEL_SEPARATOR",
    "LANGS",
    "TABLES",
    "AdvisoryTexts",
    "Lang",
    "advisory",
    "check_lang",
    "other",
    "page_language",
    "section",
    "text",
]
