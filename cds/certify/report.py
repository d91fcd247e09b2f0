"""report.json and report.html of a certification.

``report.json`` is for machines (each check: id, status, evidence, figures, and its
title and requirement in both languages); ``report.html`` is for a PACS admin or a
vendor: a page in English then in French (``cds.i18n``, part ``certify``), one table
row per check. Evidence lines name files, tags and figures only, never a patient value.
"""

from __future__ import annotations

import html
import json
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cds import __version__
from cds.certify.checks import Check
from cds.i18n import LANGS, Lang, text

_CSS = (
    "body{font-family:sans-serif;max-width:70em;margin:2em auto}"
    "table{border-collapse:collapse;width:100%}td,th{border:1px solid #999;padding:.4em;"
    "vertical-align:top;text-align:left}.pass{color:#060}.fail{color:#a00;font-weight:bold}"
    ".not_applicable,.not_run{color:#666}ul{margin:0;padding-left:1.2em}"
)


def failed(results: Sequence[Check]) -> list[Check]:
    return [c for c in results if c.status == "fail"]


def as_json(subject: dict[str, str], results: Sequence[Check], when: datetime) -> dict[str, Any]:
    return {
        "subject": subject,
        "cds_version": __version__,
        "machine": platform.node(),
        "made": when.isoformat(timespec="seconds"),
        "passed": not failed(results),
        "checks": [
            {
                **c.as_json(),
                "title": {lang: text(lang, f"certify.{c.id}") for lang in LANGS},
                "requirement": {lang: text(lang, f"certify.{c.id}_req") for lang in LANGS},
            }
            for c in results
        ],
    }


def _section(lang: Lang, title: str, results: Sequence[Check], when: datetime) -> str:
    e = html.escape
    bad = failed(results)
    verdict = (
        text(lang, "certify.verdict_fail", count=len(bad))
        if bad
        else text(lang, "certify.verdict_pass")
    )
    rows = []
    for c in results:
        evidence = "".join(f"<li>{e(x)}</li>" for x in c.evidence)
        rows.append(
            f"<tr><td>{e(text(lang, f'certify.{c.id}'))}</td>"
            f"<td class='{c.status}'>{e(text(lang, f'certify.status_{c.status}'))}</td>"
            f"<td>{e(text(lang, f'certify.{c.id}_req'))}</td><td><ul>{evidence}</ul></td></tr>"
        )
    head = "".join(
        f"<th>{e(text(lang, f'certify.{k}'))}</th>"
        for k in ("check", "status", "requirement", "evidence")
    )
    made = text(
        lang,
        "certify.made",
        version=__version__,
        machine=platform.node(),
        when=when.isoformat(timespec="seconds"),
    )
    return (
        f"<section lang='{lang}' id='{lang}'><h1>{e(text(lang, 'certify.title'))}</h1>"
        f"<h2>{e(title)}</h2><p class='{'fail' if bad else 'pass'}'>{e(verdict)}</p>"
        f"<p>{e(made)}</p><table><tr>{head}</tr>{''.join(rows)}</table></section>"
    )


def write(
    out: Path, subject: dict[str, str], titles: dict[Lang, str], results: Sequence[Check]
) -> None:
    """``out/report.json`` and ``out/report.html`` (English, then French)."""
    when = datetime.now(UTC)
    out.mkdir(parents=True, exist_ok=True)
    data = as_json(subject, results, when)
    (out / "report.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    links = " | ".join(f"<a href='#{lang}'>{html.escape(lang)}</a>" for lang in LANGS)
    body = "<hr>".join(_section(lang, titles[lang], results, when) for lang in LANGS)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(text('en', 'certify.title'))}</title><style>{_CSS}</style>"
        f"</head><body><p>{links}</p>{body}</body></html>\n"
    )
    (out / "report.html").write_text(page, encoding="utf-8")
