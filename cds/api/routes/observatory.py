"""The observatory for admins: the figures per model version as JSON
(``GET /api/observatory/models``) and a dashboard page (``GET /observatory``).

The page is plain HTML with inline SVG plots (weekly verdicts per model, score
histogram): no script, nothing loaded from outside the node (its CSS is
cds/api/static/observatory.css, colours of the legend included). French or English by
``?lang=fr|en``, else the browser's ``Accept-Language``, else ``results.language``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import HTMLResponse

from cds.api.auth import OBSERVER, observer_page
from cds.api.deps import get_node
from cds.api.schemas import Problem
from cds.i18n import LANGS, Lang, section
from cds.observatory.stats import (
    Bucket,
    ModelStats,
    Percentiles,
    load_records,
    model_stats,
    parse_when,
    stats_dict,
)
from cds.orchestrator import Node

router = APIRouter(tags=["observatory"])
NodeDep = Annotated[Node, Depends(get_node)]
SinceQ = Annotated[
    str | None, Query(description="from this date (YYYY-MM-DD, UTC) or ISO 8601 date-time")
]
UntilQ = Annotated[str | None, Query(description="up to this date or date-time (excluded)")]
BucketQ = Annotated[Bucket, Query(description="one row per model version and day/week/month")]


def _range(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    try:
        start = None if since is None else parse_when(since, "since")
        end = None if until is None else parse_when(until, "until")
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if start is not None and end is not None and end <= start:
        raise HTTPException(422, "until must come after since")
    return start, end


@router.get(
    "/api/observatory/models",
    summary="Figures per model version and period: studies, findings, positive rate, "
    "accept/correct/reject rates, time to feedback, time-to-result and run-time percentiles",
    responses={422: {"model": Problem}},
    dependencies=[OBSERVER],
)
def models(
    node: NodeDep, since: SinceQ = None, until: UntilQ = None, bucket: BucketQ = Bucket.WEEK
) -> list[dict[str, Any]]:
    start, end = _range(since, until)
    return [stats_dict(s) for s in model_stats(load_records(node.store), bucket, start, end)]


# --- the dashboard ------------------------------------------------------------------

_COLOURS = {"accept": "#2e7d32", "correct": "#ef6c00", "reject": "#c62828"}


def _lang(query: str | None, accept_language: str | None, default: Lang) -> Lang:
    if query in LANGS:
        return query
    for part in (accept_language or "").split(","):
        primary = part.split(";")[0].strip().lower().split("-")[0]
        for lang in LANGS:
            if primary == lang:
                return lang
    return default


_NBSP = "\u00a0"  # keeps a number and its unit on one line


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}{_NBSP}%"


def _secs(s: float | None) -> str:
    if s is None:
        return "-"
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if s < limit:
            return f"{s / size:.1f}{_NBSP}{unit}"
    return f"{s / 86400:.1f}{_NBSP}d"


def _pcts(p: Percentiles) -> str:
    return " / ".join(_secs(v) for v in (p.p50, p.p90, p.p99))


def _row(s: ModelStats, first: Sequence[str], lang: Lang) -> str:
    figures = [
        _pct(s.positive_rate),
        _pct(s.reviewed_rate),
        _pct(s.accept_rate),
        _pct(s.correct_rate),
        _pct(s.reject_rate),
        _secs(s.median_time_to_feedback_s),
        _pcts(s.time_to_result_s),
        _pcts(s.job_run_time_s),
    ]
    if lang == "fr":  # the decimal comma
        figures = [f.replace(".", ",") for f in figures]
    cells = [*first, str(s.studies), str(s.findings), *figures]
    return "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"


def _table(
    t: Mapping[str, str], rows: Sequence[ModelStats], first: Sequence[str], lang: Lang
) -> str:
    keys = ["studies", "findings", "positive", "reviewed", "accept", "correct", "reject"]
    head = [*first, *(t[k] for k in keys), t["to_feedback"], t["ttr"], t["run"]]
    body = "".join(
        _row(s, [s.model, s.version] if len(first) == 2 else [s.model, s.version, s.period], lang)
        for s in rows
    )
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in head)
        + f"</tr></thead><tbody>{body}</tbody></table>"
    )


def verdict_bars(t: Mapping[str, str], rows: Sequence[ModelStats]) -> str:
    """Stacked bars of accepted / corrected / rejected findings, one bar per period."""
    h, bar, gap, left, bottom = 160, 26, 10, 36, 64
    top = max((s.accepted + s.corrected + s.rejected for s in rows), default=0) or 1
    width = left + len(rows) * (bar + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + bottom}" '
        f'role="img" aria-label="{escape(t["verdicts"].format(bucket=""))}">',
        f'<line x1="{left}" y1="{h}" x2="{width}" y2="{h}" stroke="#888"/>',
        f'<text x="{left - 4}" y="12" font-size="11" text-anchor="end">{top}</text>',
        f'<text x="{left - 4}" y="{h}" font-size="11" text-anchor="end">0</text>',
    ]
    for i, s in enumerate(rows):
        x, y = left + gap + i * (bar + gap), float(h)
        for key, n in (("accept", s.accepted), ("correct", s.corrected), ("reject", s.rejected)):
            if n:
                hh = n / top * (h - 10)
                y -= hh
                parts.append(
                    f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{hh:.1f}" '
                    f'fill="{_COLOURS[key]}"><title>{escape(s.period)}: {escape(t[key])} '
                    f"{n}</title></rect>"
                )
        parts.append(
            f'<text x="{x + bar / 2}" y="{h + 8}" font-size="10" text-anchor="end" '
            f'transform="rotate(-45 {x + bar / 2} {h + 8})">{escape(s.period)}</text>'
        )
    parts.append("</svg>")
    legend = " ".join(f'<span class="legend-{k}">&#9632;</span> {escape(t[k])}' for k in _COLOURS)
    return "".join(parts) + f"<div>{legend}</div>"


def score_histogram(t: Mapping[str, str], s: ModelStats) -> str:
    """Findings per tenth of the score."""
    h, bar, left = 140, 24, 36
    bins = s.score_histogram
    top = max(bins, default=0) or 1
    width = left + len(bins) * bar + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + 24}" '
        f'role="img" aria-label="{escape(t["scores"])}">',
        f'<line x1="{left}" y1="{h}" x2="{width}" y2="{h}" stroke="#888"/>',
        f'<text x="{left - 4}" y="12" font-size="11" text-anchor="end">{top}</text>',
    ]
    for i, n in enumerate(bins):
        x, hh = left + i * bar, n / top * (h - 10)
        lo, hi = i / len(bins), (i + 1) / len(bins)
        parts.append(
            f'<rect x="{x + 1}" y="{h - hh:.1f}" width="{bar - 2}" height="{hh:.1f}" '
            f'fill="#1565c0"><title>[{lo:.1f}, {hi:.1f}): {n}</title></rect>'
        )
        parts.append(
            f'<text x="{x}" y="{h + 14}" font-size="10" text-anchor="middle">{lo:.1f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _form(
    t: Mapping[str, str], since: str | None, until: str | None, bucket: Bucket, lang: Lang
) -> str:
    options = "".join(
        f'<option value="{b.value}"{" selected" if b is bucket else ""}>'
        f"{escape(t[b.value])}</option>"
        for b in Bucket
    )
    dates = "".join(
        f'<label>{escape(t[name])} <input type="date" name="{name}" '
        f'value="{escape(value or "")}"></label>'
        for name, value in (("since", since), ("until", until))
    )
    return (
        '<form method="get" action="/observatory">'
        f'<input type="hidden" name="lang" value="{lang}">{dates}'
        f'<label>{escape(t["bucket"])} <select name="bucket">{options}</select></label>'
        f'<button type="submit">{escape(t["show"])}</button></form>'
    )


def render_dashboard(
    lang: Lang,
    periods: Sequence[ModelStats],
    totals: Sequence[ModelStats],
    *,
    since: str | None = None,
    until: str | None = None,
    bucket: Bucket = Bucket.WEEK,
) -> str:
    """The dashboard page (both lists come from ``model_stats``: per period, and over
    the whole range)."""
    t = section(lang, "observatory")
    other: Lang = "fr" if lang == "en" else "en"
    query = {k: v for k, v in (("since", since), ("until", until)) if v}
    link = urlencode({**query, "bucket": bucket.value, "lang": other})
    unit = t[bucket.value]
    body = [
        f'<p class="banner">{escape(t["intro"])}</p>',
        f'<p><a href="/observatory?{escape(link)}" hreflang="{other}">{escape(t["other"])}</a></p>',
        _form(t, since, until, bucket, lang),
    ]
    if not totals:
        body.append(f"<p>{escape(t['none'])}</p>")
    else:
        body += [
            f"<h2>{escape(t['summary'])}</h2>",
            _table(t, totals, [t["model"], t["version"]], lang),
        ]
        for total in totals:
            mine = [s for s in periods if (s.model, s.version) == (total.model, total.version)]
            body += [
                f"<h2>{escape(total.model)} {escape(total.version)}</h2>",
                '<div class="plots"><figure>',
                verdict_bars(t, mine),
                f"<figcaption>{escape(t['verdicts'].format(bucket=unit))}</figcaption></figure>",
                "<figure>",
                score_histogram(t, total),
                f"<figcaption>{escape(t['scores'])}</figcaption></figure></div>",
                f"<h3>{escape(t['periods'].format(bucket=unit))}</h3>",
                _table(t, mine, [t["model"], t["version"], t["period"]], lang),
            ]
        body.append(f'<p class="notes">{escape(t["notes"])}</p>')
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">'
        f"<title>{escape(t['title'])}</title>"
        # no inline style (the Content-Security-Policy allows none: cds.api.hardening)
        '<link rel="stylesheet" href="/static/observatory.css"></head>'
        f"<body><h1>{escape(t['title'])}</h1>{''.join(body)}</body></html>"
    )


@router.get(
    "/observatory",
    summary="Dashboard page for admins (HTML, ?lang=fr|en)",
    response_class=HTMLResponse,
    responses={422: {"model": Problem}},
    dependencies=[Depends(observer_page)],
)
def dashboard(
    node: NodeDep,
    *,
    since: SinceQ = None,
    until: UntilQ = None,
    bucket: BucketQ = Bucket.WEEK,
    lang: Annotated[str | None, Query(description="fr or en")] = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> HTMLResponse:
    since, until = since or None, until or None  # an empty date field means no bound
    start, end = _range(since, until)
    records = load_records(node.store)
    page_lang = _lang(lang, accept_language, node.settings.results.language)
    page = render_dashboard(
        page_lang,
        model_stats(records, bucket, start, end),
        model_stats(records, Bucket.ALL, start, end),
        since=since,
        until=until,
        bucket=bucket,
    )
    return HTMLResponse(page)
