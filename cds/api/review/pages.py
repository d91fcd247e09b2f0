"""The review page's HTML: plain strings, every value escaped with ``html.escape``.

No template engine (none is a dependency) and no JavaScript needed (one small file
only swaps a missing preview for a note; its CSS and JS are in cds/api/static): each
finding is an HTML form posting to the node, so the page works in any browser
on the hospital network. No patient attribute is ever shown: studies are named
by their pseudonymous key and UIDs only (medical secrecy).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, urlencode

from cds.api.review.basis import Basis
from cds.api.review.texts import VERDICT_KEY, t
from cds.domain import Feedback, FindingRecord
from cds.i18n import Lang, text

# no inline style or script (the Content-Security-Policy allows neither: cds.api.hardening)
_HEAD = '<link rel="stylesheet" href="/static/review.css"><script src="/static/review.js"></script>'


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who reads the page (name None: authentication is off) and the forms' CSRF token."""

    name: str | None
    role: str | None
    csrf: str


@dataclass(frozen=True, slots=True)
class LabelChoice:
    value: str  # "<scheme>|<code value>", what the form posts
    display: str


@dataclass(frozen=True, slots=True)
class FindingView:
    finding: FindingRecord
    feedback: Sequence[Feedback]
    basis: Basis | None
    choices: Sequence[LabelChoice]  # the model's other labels (categorical findings)
    #: what the SR states of it (``cds.results.text.label_statement``): True present,
    #: False absent, None no decision (an informational score)
    stated: bool | None
    normal: bool = False  # the model's normal state: present is no finding


@dataclass(frozen=True, slots=True)
class ResultView:
    sop_uid: str
    model: str
    version: str
    sha256: str
    pipeline: str
    created_at: float
    superseded: bool
    source_series_uid: str
    findings: Sequence[FindingView]
    state: str = "current"  # a ResultState: current, superseded or retracted


@dataclass(frozen=True, slots=True)
class JobNote:
    """A job of the study that did not make every object (partial or failed): the
    pipeline's kind, its state, and each object not made with its reason."""

    kind: str
    state: str  # "partial" or "failed"
    lines: Sequence[str]


@dataclass(frozen=True, slots=True)
class StudyRow:
    study_key: str
    modalities: Sequence[str]
    last_received_at: float
    models: Sequence[str]
    findings: int
    unreviewed: int


def _colon(lang: Lang) -> str:
    """French sets a (non-breaking) space before a colon."""
    return "&nbsp;:" if lang == "fr" else ":"


def when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def url(path: str, lang: Lang, **query: str) -> str:
    return f"{path}?{urlencode({'lang': lang, **query})}"


def _csrf(viewer: Viewer) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(viewer.csrf)}">'


def _signed_in(lang: Lang, viewer: Viewer | None) -> str:
    if viewer is None or viewer.name is None:
        return ""
    said = t(lang, "signed_in_as", name=viewer.name, role=viewer.role or "")
    return (
        f'<span class="user" id="signed-in">{escape(said)}</span>'
        f'<form method="post" action="/logout" class="logout">{_csrf(viewer)}'
        f'<button type="submit">{escape(t(lang, "sign_out"))}</button></form>'
    )


def _page(
    lang: Lang, title: str, body: str, switch_to: str = "", viewer: Viewer | None = None
) -> str:
    other = "fr" if lang == "en" else "en"
    switch = (
        f'<a href="{escape(switch_to)}" hreflang="{other}">{escape(t(lang, "other_lang"))}</a>'
        if switch_to
        else ""
    )
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} - cds</title>{_HEAD}</head><body>"
        f'<p class="banner" role="note" id="advisory">{escape(t(lang, "banner"))}</p>'
        f'<header><nav><a href="{escape(url("/review", lang))}">{escape(t(lang, "back"))}</a>'
        f"{switch}{_signed_in(lang, viewer)}</nav><h1>{escape(title)}</h1></header>"
        f"<main>{body}</main></body></html>"
    )


def study_list(lang: Lang, rows: Sequence[StudyRow], viewer: Viewer | None = None) -> str:
    if not rows:
        body = f"<p>{escape(t(lang, 'no_studies'))}</p>"
    else:
        head = "".join(
            f"<th>{escape(t(lang, k))}</th>"
            for k in ("study_key", "modalities", "received", "models", "findings", "to_review")
        )
        lines = "".join(
            f'<tr data-study-key="{escape(r.study_key)}"><td><a class="study" href="'
            f'{escape(url("/review/" + quote(r.study_key, safe=""), lang))}">'
            f"{escape(r.study_key)}</a></td><td>{escape(', '.join(r.modalities))}</td>"
            f"<td>{escape(when(r.last_received_at))}</td><td>{escape(', '.join(r.models))}</td>"
            f'<td>{r.findings}</td><td class="unreviewed">{r.unreviewed}</td></tr>'
            for r in rows
        )
        body = f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"
    other: Lang = "fr" if lang == "en" else "en"
    return _page(lang, t(lang, "title_list"), body, url("/review", other), viewer)


def _display(lang: Lang, f: FindingRecord) -> str:
    return f.display_fr if lang == "fr" else f.display_en


def _feedback_line(lang: Lang, fb: Feedback) -> str:
    what = t(lang, VERDICT_KEY[fb.action.value])
    if fb.corrected_meaning:
        what += f" &rarr; {escape(fb.corrected_meaning)}"
    by = escape(t(lang, "by", who=fb.who, when=when(fb.at), source=fb.source))
    reason = f' <q class="reason">{escape(fb.reason)}</q>' if fb.reason else ""
    return f'<li data-action="{escape(fb.action.value)}">{what} {by}{reason}</li>'


def _basis(lang: Lang, study_key: str, result: ResultView, view: FindingView) -> tuple[str, str]:
    """(the picture, the basis list) of one finding."""
    f, basis = view.finding, view.basis
    parts = [
        f"<dt>{escape(t(lang, 'source_series'))}</dt><dd><code>"
        f"{escape(result.source_series_uid)}</code></dd>"
    ]
    if basis is not None:
        images = [r.image for r in basis.regions] + list(basis.images)
        for image in dict.fromkeys(images):
            parts.append(
                f"<dt>{escape(t(lang, 'source_image'))}</dt><dd><code>{escape(image.sop_uid)}"
                f"</code>{f' (frame {image.frame})' if image.frame > 1 else ''}</dd>"
            )
        for seg in basis.segments:
            parts.append(
                f"<dt>{escape(t(lang, 'segment', n=seg.segment))}</dt>"
                f"<dd><code>{escape(seg.seg_sop_uid)}</code></dd>"
            )
        if basis.measurements:
            items = "".join(
                f"<li>{escape(m.name)}: {m.value:.4g} {escape(m.unit)}</li>"
                for m in basis.measurements
            )
            parts.append(f"<dt>{escape(t(lang, 'measurements'))}</dt><dd><ul>{items}</ul></dd>")
    src = url(
        f"/review/{quote(study_key, safe='')}/findings/{quote(f.tracking_uid, safe='')}.png", lang
    )
    drawable = basis is not None and (basis.regions or basis.images or basis.segments)
    no_preview = escape(t(lang, "no_preview"))
    picture = (
        f'<img class="preview" src="{escape(src)}" alt="{escape(t(lang, "image_alt"))}" '
        'loading="lazy">'  # no picture: /static/review.js shows the note after it
        f'<p class="nopreview" hidden>{no_preview}</p>'
        if drawable
        else f'<p class="nopreview">{no_preview}</p>'
    )
    return (
        f'<div class="picture">{picture}</div>',
        f'<h4>{escape(t(lang, "basis"))}</h4><dl class="basis">{"".join(parts)}</dl>',
    )


def _form(lang: Lang, study_key: str, view: FindingView, who: str, viewer: Viewer) -> str:
    f = view.finding
    action = url(
        f"/review/{quote(study_key, safe='')}/findings/{quote(f.tracking_uid, safe='')}", lang
    )
    select = ""
    if view.choices:
        options = "".join(
            f'<option value="{escape(c.value)}">{escape(c.display)}</option>' for c in view.choices
        )
        select = (
            f'<label>{escape(t(lang, "corrected_label"))} <select name="corrected">'
            f'<option value="">{escape(t(lang, "no_change"))}</option>{options}</select></label>'
        )
    buttons = "".join(
        f'<button type="submit" name="action" value="{a}" class="{a}">{escape(t(lang, a))}</button>'
        for a in ("accept", "reject", "correct")
    )
    name = (
        f'<label>{escape(t(lang, "who"))} <input name="who" value="{escape(who)}" '
        f'maxlength="64" autocomplete="username"></label>'
        if viewer.name is None  # signed in: who is the signed-in user, not a field
        else ""
    )
    return (
        f'<form method="post" action="{escape(action)}" class="feedback">{_csrf(viewer)}{name}'
        f'<label>{escape(t(lang, "reason"))}<br><textarea name="reason" rows="2" '
        f'maxlength="2000"></textarea></label>{select}<p>{buttons}</p></form>'
    )


def _presence_key(view: FindingView) -> str:
    if view.stated is None:
        return "no_decision"
    if view.normal and view.stated:
        return "present_normal"
    return "present" if view.stated else "absent"


def _finding(
    lang: Lang, study_key: str, result: ResultView, view: FindingView, *, who: str, viewer: Viewer
) -> str:
    f = view.finding
    state = t(lang, _presence_key(view))
    latest = view.feedback[-1] if view.feedback else None
    verdict = t(lang, VERDICT_KEY[latest.action.value]) if latest else t(lang, "not_reviewed")
    history = (
        f'<h4>{escape(t(lang, "history"))}</h4><ol class="history">'
        + "".join(_feedback_line(lang, fb) for fb in view.feedback)
        + "</ol>"
        if view.feedback
        else ""
    )
    picture, basis = _basis(lang, study_key, result, view)
    return (
        f'<section class="finding" id="f-{escape(f.tracking_uid)}" '
        f'data-tracking-uid="{escape(f.tracking_uid)}">{picture}<div class="info">'
        f'<h3 class="label">{escape(_display(lang, f))} '
        f'<small class="presence">({escape(state)})</small></h3>'
        f'<p>{escape(t(lang, "score"))}{_colon(lang)} <span class="score">{f.score:.3f}</span>'
        f" &middot; {escape(t(lang, 'tracking_uid'))} <code>{escape(f.tracking_uid)}</code></p>"
        f'<p>{escape(t(lang, "verdict"))}{_colon(lang)} <span class="verdict" '
        f'data-verdict="{escape(latest.action.value) if latest else ""}">'
        f"{escape(verdict)}</span></p>{basis}{history}"
        f"{_form(lang, study_key, view, who, viewer)}</div></section>"
    )


def study_page(
    lang: Lang,
    study_key: str,
    results: Sequence[ResultView],
    *,
    who: str,
    recorded: Feedback | None,
    recorded_label: str,
    viewer: Viewer,
    jobs: Sequence[JobNote] = (),
    retracted: bool = False,
) -> str:
    parts = [f'<p class="note">{escape(t(lang, "auth_note"))}</p>'] if viewer.name is None else []
    if jobs:
        parts.append(_job_notes(lang, jobs))
    if recorded is not None:
        action = t(lang, VERDICT_KEY[recorded.action.value])
        said = t(lang, "recorded", action=action, label=recorded_label, who=recorded.who)
        parts.append(f'<p class="ok" role="status" id="recorded">{escape(said)}</p>')
    if retracted:
        said = text(lang, "retraction.done")
        parts.append(f'<p class="ok" role="status" id="retracted">{escape(said)}</p>')
    for r in results:
        meta = (
            f'<dl><dt>{escape(t(lang, "model"))}</dt><dd class="model">{escape(r.model)}</dd>'
            f"<dt>{escape(t(lang, 'version'))}</dt><dd>{escape(r.version)}</dd>"
            f'<dt>SHA-256</dt><dd><code title="{escape(r.sha256)}">{escape(r.sha256[:12])}'
            f"</code></dd><dt>{escape(t(lang, 'pipeline'))}</dt><dd>{escape(r.pipeline)}</dd>"
            f"<dt>{escape(t(lang, 'made'))}</dt><dd>{escape(when(r.created_at))}</dd>"
            f"<dt>{escape(t(lang, 'result_uid'))}</dt><dd><code>{escape(r.sop_uid)}</code></dd>"
            f'<dt>{escape(text(lang, "retraction.state"))}</dt><dd class="result-state" '
            f'data-state="{escape(r.state)}">{escape(_state(lang, r.state))}</dd></dl>'
        )
        withdrawn = r.superseded or r.state == "retracted"
        note = f" <small>({escape(_state(lang, r.state))})</small>" if withdrawn else ""
        findings = "".join(
            _finding(lang, study_key, r, v, who=who, viewer=viewer) for v in r.findings
        )
        retract = _retract_form(lang, study_key, r, who, viewer) if r.state == "current" else ""
        parts.append(
            f'<article class="result{" superseded" if withdrawn else ""}" '
            f'data-result-uid="{escape(r.sop_uid)}"><h2>{escape(t(lang, "result"))}{_colon(lang)} '
            f"{escape(r.model)} {escape(r.version)}{note}</h2>{meta}{retract}{findings}</article>"
        )
    other: Lang = "fr" if lang == "en" else "en"
    return _page(
        lang,
        t(lang, "title_study", key=study_key),
        "".join(parts),
        url(f"/review/{quote(study_key, safe='')}", other),
        viewer,
    )


def _state(lang: Lang, state: str) -> str:
    if state == "superseded":
        return t(lang, "superseded")
    return text(lang, f"retraction.{'retracted' if state == 'retracted' else 'current'}")


def _retract_form(lang: Lang, study_key: str, r: ResultView, who: str, viewer: Viewer) -> str:
    """Withdraw the result everywhere (``cds.retraction``): a reason is required."""
    action = url(
        f"/review/{quote(study_key, safe='')}/results/{quote(r.sop_uid, safe='')}/retract", lang
    )
    name = (
        f'<label>{escape(t(lang, "who"))} <input name="who" value="{escape(who)}" '
        f'maxlength="64" autocomplete="username" required></label> '
        if viewer.name is None  # signed in: who is the signed-in user, not a field
        else ""
    )
    return (
        f'<form method="post" action="{escape(action)}" class="retract">{_csrf(viewer)}{name}'
        f'<label>{escape(text(lang, "retraction.reason"))}<br><textarea name="reason" rows="2" '
        f'maxlength="2000" required></textarea></label><p><button type="submit" '
        f'class="retract">{escape(text(lang, "retraction.button"))}</button></p></form>'
    )


def _job_notes(lang: Lang, jobs: Sequence[JobNote]) -> str:
    """What the study's jobs did not make, and why (in words, never a data value)."""
    items = "".join(
        f'<li class="job" data-job-state="{escape(j.state)}" data-job-kind="{escape(j.kind)}">'
        f"<strong>{escape(j.kind)}</strong> ({escape(t(lang, 'job_state_' + j.state))})"
        f"<ul>{''.join(f'<li>{escape(line)}</li>' for line in j.lines)}</ul></li>"
        for j in jobs
    )
    return (
        f'<section class="not-made" role="status" id="not-made"><h2>'
        f"{escape(t(lang, 'not_all_made'))}</h2><ul>{items}</ul></section>"
    )


def login_page(
    lang: Lang, next_url: str, viewer: Viewer, *, auth_off: bool, error: str | None = None
) -> str:
    """The sign-in form: paste a token, get a session cookie."""
    parts = []
    if error:
        parts.append(f'<p class="error" role="alert" id="message">{escape(error)}</p>')
    if auth_off:
        parts.append(f'<p class="note" id="auth-off">{escape(t(lang, "auth_off"))}</p>')
    else:
        parts.append(
            f'<form method="post" action="{escape(url("/login", lang))}" class="login">'
            f'{_csrf(viewer)}<input type="hidden" name="next" value="{escape(next_url)}">'
            f'<label>{escape(t(lang, "token_label"))}<br><input type="password" name="token" '
            f'autocomplete="current-password" size="48" required></label>'
            f'<p class="note">{escape(t(lang, "token_help"))}</p>'
            f'<p><button type="submit" class="sign-in">{escape(t(lang, "sign_in"))}</button></p>'
            "</form>"
        )
    other: Lang = "fr" if lang == "en" else "en"
    switch = url("/login", other, next=next_url)
    return _page(lang, t(lang, "login_title"), "".join(parts), switch, viewer)


def message_page(lang: Lang, title: str, message: str, back: str | None) -> str:
    link = f'<p><a href="{escape(back)}">{escape(t(lang, "back_to_study"))}</a></p>' if back else ""
    body = f'<p class="error" role="alert" id="message">{escape(message)}</p>{link}'
    return _page(lang, title, body)
