"""The languages, their tables of texts, and how a page picks its language."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from cds.i18n import en, fr

Lang = Literal["en", "fr"]
LANGS: Final[tuple[Lang, ...]] = ("en", "fr")
#: one table per language: part -> name -> text (the same keys in every language)
TABLES: Final[Mapping[Lang, Mapping[str, Mapping[str, str]]]] = {"en": en.TEXTS, "fr": fr.TEXTS}


def check_lang(lang: str) -> Lang:
    """``lang`` if it is a known language; ValueError names the known ones."""
    for known in LANGS:
        if lang == known:
            return known
    raise ValueError(f"unknown language {lang!r} (known: {', '.join(LANGS)})")


def other(lang: Lang) -> Lang:
    """The other language (a page links to itself in it)."""
    return "fr" if lang == "en" else "en"


def section(lang: Lang, part: str) -> Mapping[str, str]:
    """The texts of ``part`` (``review``, ``observatory``, ...) in ``lang``."""
    return TABLES[lang][part]


def text(lang: Lang, key: str, /, **values: object) -> str:
    """The text ``key`` (``part.name``) in ``lang``, formatted with ``values``
    (not HTML-escaped: the caller escapes for where the text goes)."""
    part, _, name = key.partition(".")
    value = TABLES[lang][part][name]
    return value.format(**values) if values else value


def page_language(query: str | None, accept_language: str | None, default: Lang) -> Lang:
    """``?lang=`` if it names a known language, else the best of ``Accept-Language``
    (by q-value, then order), else ``default`` (``results.language``)."""
    for lang in LANGS:
        if query == lang:
            return lang
    best: tuple[float, int, Lang] | None = None
    for pos, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        for lang in LANGS:
            if primary == lang and q > 0 and (best is None or (q, -pos) > (best[0], -best[1])):
                best = (q, pos, lang)
    return best[2] if best else default
