"""Match studies against the routing rules, and explain every decision.

A rule is evaluated on each series of a study: the series matches when every
``match`` condition holds and no ``exclude`` condition does. The rule matches
the study when at least one series matches; ``select`` then picks the series
that feed its pipelines. Rules run by priority (higher first, then file
order); the first that matches ends routing unless it says ``continue: true``.
The explanation names, for every rule and series, the attribute and value that
decided — it is shown to admins (CLI, API), never written to logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from cds.routing.headers import SeriesHeader, header_attrs, read_headers
from cds.routing.rules import ATTRIBUTES, Condition, Range, RoutingFile, Rule
from cds.routing.viewers import pipeline_kinds

__all__ = [  # the headers live in cds.routing.headers; these stay importable from here
    "PipelinePlan",
    "RuleVerdict",
    "SeriesHeader",
    "SeriesVerdict",
    "StudyPlan",
    "evaluate",
    "explain_text",
    "header_attrs",
    "read_headers",
    "route",
    "value_of",
]

_AGE_RE = re.compile(r"^(\d{1,3})([DWMY]?)$")  # a bare number is taken as years
_AGE_UNIT = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}


def _age_years(attrs: dict[str, Any]) -> float | None:
    m = _AGE_RE.match(str(attrs.get("PatientAge", "")).strip())
    if m:
        return int(m.group(1)) * _AGE_UNIT[m.group(2)]
    birth, study = attrs.get("PatientBirthDate"), attrs.get("StudyDate")
    try:
        b = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))  # type: ignore[index]
        s = date(int(study[:4]), int(study[4:6]), int(study[6:8]))  # type: ignore[index]
    except (TypeError, ValueError):
        return None
    return (s - b).days / 365.25


def value_of(attribute: str, series: SeriesHeader, now: datetime) -> Any:
    a = series.attrs
    if attribute == "NumberOfInstances":
        return series.instance_count
    if attribute == "CallingAETitle":
        return series.calling_ae or None
    if attribute == "TimeOfDay":
        return now.strftime("%H:%M")
    if attribute == "PatientAge":
        return _age_years(a)
    if attribute == "PixelSpacing":
        ps = a.get("PixelSpacing")
        return min(ps) if ps else None
    return a.get(attribute)


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:5])


def _in_range(v: Any, r: Range, kind: str) -> bool:
    if kind == "time":
        t = _minutes(str(v))
        lo = _minutes(str(r.min)) if r.min is not None else 0
        hi = _minutes(str(r.max)) if r.max is not None else 24 * 60 - 1
        return lo <= t <= hi if lo <= hi else (t >= lo or t <= hi)  # wraps midnight
    x = float(v)
    return (r.min is None or x >= float(r.min)) and (r.max is None or x <= float(r.max))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v)


def evaluate(  # noqa: PLR0911 - one return per operator reads best
    cond: Condition, series: SeriesHeader, now: datetime
) -> tuple[bool, str]:
    """(holds, why) for one condition on one series."""
    name, kind = cond.attribute, ATTRIBUTES[cond.attribute]
    v = value_of(name, series, now)
    present = v not in (None, "", [])
    if cond.exists is not None:
        ok = present == cond.exists
        state = f"present ({_fmt(v)})" if present else "missing"
        return ok, f"{name} {state}, expected {'present' if cond.exists else 'missing'}"
    if not present:
        return False, f"{name} missing"
    values = v if isinstance(v, list) else [v]
    shown = "\\".join(str(x) for x in values) if isinstance(v, list) else _fmt(v)
    if cond.equals is not None:
        want = cond.equals
        ok = any(_same(x, want, kind) for x in values)
        return ok, f"{name} is {shown}, {'equals' if ok else 'not equal to'} {_fmt(want)}"
    if cond.in_ is not None:
        ok = any(_same(x, w, kind) for x in values for w in cond.in_)
        return ok, f"{name} is {shown}, {'in' if ok else 'not in'} {cond.in_}"
    if cond.regex is not None:
        rx = re.compile(cond.regex)
        ok = any(rx.search(str(x)) for x in values)
        return ok, f"{name} is {shown}, {'matches' if ok else 'does not match'} /{cond.regex}/"
    assert cond.range is not None
    try:
        ok = _in_range(v, cond.range, kind)
    except (TypeError, ValueError):
        return False, f"{name} is {shown}, not a {kind}"
    lo = "-" if cond.range.min is None else _fmt(cond.range.min)
    hi = "-" if cond.range.max is None else _fmt(cond.range.max)
    return ok, f"{name} is {shown}, {'within' if ok else 'outside'} [{lo}, {hi}]"


def _same(x: Any, want: Any, kind: str) -> bool:
    if kind == "number":
        try:
            return float(x) == float(want)
        except (TypeError, ValueError):
            return False
    return str(x).strip() == str(want).strip()


# --- routing -----------------------------------------------------------------------
@dataclass
class SeriesVerdict:
    series_uid: str
    label: str
    matched: bool
    reasons: list[str]  # the conditions that decided (failures, or all passes when matched)


@dataclass
class PipelinePlan:
    pipeline: str
    model: str
    results: list[str]
    destinations: list[str]  # "NAME (AE@host:port)"
    status: str  # "run" | "skipped: model disabled" | "skipped: model not loaded" | ...
    notify: str | None = None  # "TARGET on CODES (score >= X)" when urgent findings notify
    #: selected series outside the model's declared use (series UID -> the constraints
    #: broken): the model does not run on them; all of them outside: status "skipped: ..."
    outside: dict[str, str] = field(default_factory=dict)
    #: kind the pipeline's viewer does not show -> the kind made in its place
    #: (``results`` already has it); kind -> the kind made when it cannot be made
    replaced: dict[str, str] = field(default_factory=dict)
    fallback: dict[str, str] = field(default_factory=dict)
    viewer: str | None = None


@dataclass
class RuleVerdict:
    rule: str
    priority: int
    matched: bool
    evaluated: bool
    series: list[SeriesVerdict]
    selected: list[str]  # series UIDs
    plans: list[PipelinePlan]
    waits_for: str = ""


@dataclass
class StudyPlan:
    study_uid: str
    rules: list[RuleVerdict]

    @property
    def runs(self) -> list[tuple[RuleVerdict, PipelinePlan]]:
        return [(r, p) for r in self.rules if r.matched for p in r.plans]


def _select(rule: Rule, matching: list[SeriesHeader]) -> list[SeriesHeader]:
    if rule.select == "all" or not matching:
        return matching
    if rule.select == "first":
        return matching[:1]
    if rule.select == "most_instances":
        return [max(matching, key=lambda s: s.instance_count)]

    # thinnest: smallest slice thickness, ties broken by more instances
    def key(s: SeriesHeader) -> tuple[float, int]:
        t = s.attrs.get("SliceThickness")
        return (float(t) if t is not None else float("inf"), -s.instance_count)

    return [min(matching, key=key)]


#: model name -> the constraints of its declared use a series header breaks (from
#: ``cds.inference.constraints``: header attributes, instance count -> reasons)
DeclaredUse = Mapping[str, Callable[[Mapping[str, Any], int], list[str]]]


def _declared_use(plan: PipelinePlan, chosen: Sequence[SeriesHeader], uses: DeclaredUse) -> None:
    """Mark the chosen series outside the plan's model's declared use; skip the plan when
    none is inside (the model never runs outside its declared use)."""
    check = uses.get(plan.model)
    if plan.status != "run" or check is None:
        return
    for s in chosen:
        reasons = check(s.attrs, s.instance_count)
        if reasons:
            plan.outside[s.series_uid] = "; ".join(reasons)
    if plan.outside and len(plan.outside) == len(chosen):
        first = plan.outside[chosen[0].series_uid]
        plan.status = f"skipped: outside the declared use of {plan.model} ({first})"


def route(
    series: Sequence[SeriesHeader],
    rf: RoutingFile,
    now: datetime | None = None,
    disabled_models: Iterable[str] = (),
    loaded_models: Iterable[str] | None = None,
    *,
    declared_use: DeclaredUse | None = None,
) -> StudyPlan:
    """``declared_use``: each model's check of a series against its manifest (modality,
    body part, photometric, slice count, spacing); a selected series outside it is not
    given to the model, and a pipeline with none inside is skipped, naming the constraint."""
    now = now or datetime.now()
    disabled = set(disabled_models) | set(rf.disabled_models)
    loaded = set(loaded_models) if loaded_models is not None else None
    order = sorted(enumerate(rf.rules), key=lambda ir: (-ir[1].priority, ir[0]))
    verdicts: list[RuleVerdict] = []
    stopped_by = ""
    for _, rule in order:
        if stopped_by:
            verdicts.append(
                RuleVerdict(
                    rule.name,
                    rule.priority,
                    False,
                    False,
                    [],
                    [],
                    [],
                    f"not evaluated: rule {stopped_by!r} matched first",
                )
            )
            continue
        per: list[SeriesVerdict] = []
        matching: list[SeriesHeader] = []
        for s in series:
            fails: list[str] = []
            passes: list[str] = []
            for c in rule.match:
                ok, why = evaluate(c, s, now)
                (passes if ok else fails).append(why)
            excluded = [why for c in rule.exclude for ok, why in [evaluate(c, s, now)] if ok]
            reasons = fails or [f"excluded: {w}" for w in excluded] or passes
            ok = not fails and not excluded
            per.append(SeriesVerdict(s.series_uid, s.label, ok, reasons))
            if ok:
                matching.append(s)
        chosen = _select(rule, matching)
        plans = [_plan(rf, name, disabled, loaded) for name in rule.pipelines] if chosen else []
        for plan in plans:
            _declared_use(plan, chosen, declared_use or {})
        waits = ""
        if chosen and rule.completeness is not None:
            waits = _completeness(rule, series, now)
        verdicts.append(
            RuleVerdict(
                rule.name,
                rule.priority,
                bool(chosen),
                True,
                per,
                [s.series_uid for s in chosen],
                plans,
                waits,
            )
        )
        if chosen and not rule.continue_:
            stopped_by = rule.name
    study_uid = series[0].study_uid if series else ""
    return StudyPlan(study_uid, verdicts)


def _plan(rf: RoutingFile, name: str, disabled: set[str], loaded: set[str] | None) -> PipelinePlan:
    p = rf.pipelines[name]
    dests = [f"{d} ({rf.destinations[d].target})" for d in p.destinations]
    status = "run"
    if p.model in disabled:
        status = "skipped: model disabled"
    elif loaded is not None and p.model not in loaded:
        status = "skipped: model not loaded"
    notify = None
    if p.notify is not None:
        floor = f" (score >= {p.notify.min_score:g})" if p.notify.min_score is not None else ""
        notify = f"{p.notify.target} on {', '.join(p.notify.findings)}{floor}"
    kinds = pipeline_kinds(p.results, p.fallback, p.viewer)
    return PipelinePlan(
        name,
        p.model,
        kinds.make,
        dests,
        status,
        notify,
        replaced=kinds.replaced,
        fallback=kinds.fallback,
        viewer=p.viewer,
    )


def _completeness(rule: Rule, series: Sequence[SeriesHeader], now: datetime) -> str:
    c = rule.completeness
    assert c is not None
    parts = []
    if c.quiet_time_s is not None:
        parts.append(f"quiet time {c.quiet_time_s:g} s")
    for i, conds in enumerate(c.required_series):
        found = any(all(evaluate(x, s, now)[0] for x in conds) for s in series)
        parts.append(f"required series {i + 1}: {'present' if found else 'missing'}")
    return "; ".join(parts)


def explain_text(plan: StudyPlan) -> list[str]:
    """The explanation as lines, for the CLI."""
    lines = [f"study {plan.study_uid}"]
    for r in plan.rules:
        if not r.evaluated:
            lines.append(f"  rule {r.rule!r} (priority {r.priority}): {r.waits_for}")
            continue
        head = "MATCHED" if r.matched else "no match"
        lines.append(f"  rule {r.rule!r} (priority {r.priority}): {head}")
        for s in r.series:
            mark = "+" if s.matched else "-"
            sel = "  [selected]" if s.series_uid in r.selected else ""
            lines.append(f"    {mark} series {s.label}{sel}: {'; '.join(s.reasons)}")
        if r.waits_for:
            lines.append(f"    waits for: {r.waits_for}")
        for p in r.plans:
            to = ", ".join(p.destinations) or "no destination"
            lines.append(
                f"    -> pipeline {p.pipeline}: model {p.model}, results "
                f"{'/'.join(p.results)}, to {to}: {p.status}"
            )
            if p.status == "run":
                labels = {s.series_uid: s.label for s in r.series}
                lines.extend(
                    f"       not on series {labels.get(uid, uid)}: outside the declared use "
                    f"of {p.model} ({why})"
                    for uid, why in p.outside.items()
                )
            lines.extend(
                f"       {kind} replaced by {instead}: viewer {p.viewer} does not show {kind}"
                for kind, instead in p.replaced.items()
            )
            lines.extend(
                f"       {instead} in place of {kind} if {kind} cannot be made (fallback)"
                for kind, instead in p.fallback.items()
            )
            if p.notify:
                lines.append(f"       notifies {p.notify} (urgent findings)")
    if not any(r.matched for r in plan.rules):
        lines.append("  no rule matched: nothing would run")
    return lines
