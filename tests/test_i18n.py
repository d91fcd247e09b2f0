"""issue 18: every text people read lives in one i18n module (cds.i18n), French and English
both first-class: one table per language with the same keys, no empty text, the same
``{fields}`` in both languages, and nothing of cds below it (every stage may import it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from string import Formatter

import pytest

from cds.i18n import (
    LANGS,
    TABLES,
    AdvisoryTexts,
    Lang,
    advisory,
    check_lang,
    other,
    section,
    text,
)

I18N = Path(__file__).resolve().parents[1] / "cds" / "i18n"


def _keys(lang: Lang) -> set[str]:
    return {f"{part}.{name}" for part, names in TABLES[lang].items() for name in names}


def _fields(value: str) -> set[str]:
    return {field for _, field, _, _ in Formatter().parse(value) if field is not None}


def test_both_languages_have_the_same_keys() -> None:
    assert set(TABLES) == set(LANGS) == {"en", "fr"}
    en, fr = _keys("en"), _keys("fr")
    assert en - fr == set(), "missing in French"
    assert fr - en == set(), "missing in English"


@pytest.mark.parametrize("lang", LANGS)
def test_no_text_is_empty(lang: Lang) -> None:
    empty = [key for key in _keys(lang) if not text(lang, key).strip()]
    assert empty == []


def test_both_languages_fill_in_the_same_fields() -> None:
    differ = {
        key: (_fields(text("en", key)), _fields(text("fr", key)))
        for key in _keys("en")
        if _fields(text("en", key)) != _fields(text("fr", key))
    }
    assert differ == {}


def test_text_formats_its_fields_and_section_gives_a_part() -> None:
    assert text("en", "review.by", who="a", when="b", source="c") == "by a, b (c)"
    assert text("fr", "fhir.title") == "Suggestion de l'IA : résultat urgent"
    assert section("fr", "observatory")["other"] == "English"
    assert (other("en"), other("fr")) == ("fr", "en")


def test_an_unknown_language_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"unknown language 'de' \(known: en, fr\)"):
        check_lang("de")
    with pytest.raises(ValueError, match="unknown language 'de'"):
        advisory("de")


@pytest.mark.parametrize("lang", LANGS)
def test_the_advisory_texts_fit_their_dicom_values(lang: Lang) -> None:
    t = advisory(lang)
    assert isinstance(t, AdvisoryTexts)
    assert t.lang == lang
    assert re.fullmatch(r"[A-Z0-9 _]{1,16}", t.content_label)  # CS ContentLabel
    assert len(t.series_prefix) < 64  # the start of an LO SeriesDescription
    assert t.number(0.5) == ("0,50" if lang == "fr" else "0.50")


def test_the_i18n_module_imports_nothing_else_of_cds() -> None:
    """A base module: stages and the face import it, it imports none of them."""
    outside = set()
    for path in I18N.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            outside |= {
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] == "cds" and n.split(".")[:2] != ["cds", "i18n"]
            }
    assert outside == set()
