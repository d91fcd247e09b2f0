"""The routing file: destinations, pipelines and ordered rules, as typed data.

Conditions use explicit operators — ``equals``, ``in``, ``regex``, ``range``,
``exists`` — never meaning that depends on a value's shape. Every error is
reported by its path (``rules.2.match.0.regex: does not compile: ...``).

    destinations:
      pacs: {ae_title: ORTHANC, host: 10.0.0.5, port: 4242}
      archive: {kind: dicomweb, url: "https://archive.local/dicom-web"}  # STOW-RS
    pipelines:
      ct-bone: {model: cds-ref-ct-bone, results: [SEG, SR], destinations: [pacs]}
    rules:
      - name: adult head CT
        match:
          - {attribute: Modality, equals: CT}
          - {attribute: SliceThickness, range: {max: 5}}
        exclude:
          - {attribute: PatientAge, range: {max: 17.99}}      # paediatric
          - {attribute: ImageType, in: [LOCALIZER, DERIVED]}
        select: thinnest
        pipelines: [ct-bone]
        priority: 10
    disabled_models: []

A pipeline may name the kind made in place of one that cannot be made, or that the site's
viewer does not show (``cds.routing.viewers``, docs/viewers.md):

    pipelines:
      ct-hyperdensity: {model: ..., results: [GSPS, SR], fallback: {GSPS: SC}, viewer: ohif}

Optionally (off unless configured), a pipeline may notify a worklist of an urgent
finding (``cds.delivery.notify``):

    notifications:
      worklist: {url: "https://ris.local/fhir/DiagnosticReport", format: fhir-r4}
    pipelines:
      ct-head: {model: ..., results: [SR], notify: {target: worklist, findings: [any]}}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cds.destinations import (
    KINDS,
    NOTIFY_FORMATS,
    AnyArchive,
    AnyDestination,
    NotificationTarget,
    Notify,
)
from cds.errors import RoutingError
from cds.routing.viewers import ResultKind, ViewerName, fallback_errors

#: attributes a condition may test, and their type
ATTRIBUTES: dict[str, str] = {
    "Modality": "text",
    "BodyPartExamined": "text",
    "SeriesDescription": "text",
    "StudyDescription": "text",
    "ProtocolName": "text",
    "ViewPosition": "text",  # radiographs: PA, AP, LL, RL, LATERAL...
    "SOPClassUID": "text",
    "Manufacturer": "text",
    "ManufacturerModelName": "text",
    "ImageType": "text",  # multi-valued: a condition holds if any value satisfies it
    "PatientSex": "text",
    "CallingAETitle": "text",
    "SliceThickness": "number",  # mm
    "PixelSpacing": "number",  # mm, the smaller of row and column spacing
    "NumberOfInstances": "number",  # in the series
    "PatientAge": "number",  # years (from PatientAge, or birth date and study date)
    "TimeOfDay": "time",  # local time the study is routed, HH:MM
}

_OPERATORS = ("equals", "in_", "regex", "range", "exists")
_FIELD_NAMES = {"in_": "in", "continue_": "continue"}  # python names of YAML keys
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Range(_Strict):
    """Inclusive bounds; either may be left out. TimeOfDay bounds are "HH:MM" and may wrap
    around midnight (min 22:00, max 06:00)."""

    min: float | str | None = None
    max: float | str | None = None


class Condition(_Strict):
    attribute: str
    equals: str | float | None = None
    in_: list[str | float] | None = Field(None, alias="in")
    regex: str | None = None
    range: Range | None = None
    exists: bool | None = Field(None, description="true: present and not empty; false: missing")

    @field_validator("attribute")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {v!r} (known: {', '.join(ATTRIBUTES)})")
        return v

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"does not compile: {exc}") from None
        return v

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        ops = [
            k for k in ("equals", "in_", "regex", "range", "exists") if getattr(self, k) is not None
        ]
        if len(ops) != 1:
            names = [o.rstrip("_") for o in ops]
            raise ValueError(
                "needs exactly one operator of equals, in, regex, range, exists"
                + (f" (found {', '.join(names)})" if names else "")
            )
        kind = ATTRIBUTES[self.attribute]
        if kind == "number":
            for v in [self.equals, *(self.in_ or [])]:
                if isinstance(v, str):
                    raise ValueError(f"{self.attribute} is a number, not {v!r}")
        if self.range is not None:
            if self.range.min is None and self.range.max is None:
                raise ValueError("range needs min or max")
            lo, hi = self.range.min, self.range.max
            if (
                kind == "number"
                and isinstance(lo, int | float)
                and isinstance(hi, int | float)
                and lo > hi
            ):
                raise ValueError(f"range min {lo:g} is above max {hi:g}")
            if kind == "text":
                raise ValueError(f"range does not apply to text attribute {self.attribute}")
            for bound in (self.range.min, self.range.max):
                if bound is None:
                    continue
                if kind == "time" and not (isinstance(bound, str) and _TIME_RE.match(bound)):
                    raise ValueError(
                        f'TimeOfDay range bounds are "HH:MM" (quoted in YAML), not {bound!r}'
                    )
                if kind == "number" and not isinstance(bound, int | float):
                    raise ValueError(f"{self.attribute} range bounds are numbers, not {bound!r}")
        return self

    @property
    def operator(self) -> str:
        for k in _OPERATORS:
            if getattr(self, k) is not None:
                return k.rstrip("_")
        return "?"


class Pipeline(_Strict):
    model: str = Field(min_length=1, description="model package name (manifest name)")
    results: list[ResultKind] = Field(min_length=1)
    fallback: dict[ResultKind, ResultKind] = Field(
        default_factory=dict,
        description="kind -> the kind made in its place when it cannot be made, or when "
        "`viewer` does not show it (docs/viewers.md)",
    )
    viewer: ViewerName | None = Field(
        None, description="the site's viewer: a kind it does not show is not made, its fallback is"
    )
    destinations: list[str] = Field(default_factory=list)
    notify: Notify | None = Field(None, description="announce urgent findings (off if absent)")


class Completeness(_Strict):
    """When a routed study may run: after a quiet time, or once required series are present."""

    quiet_time_s: float | None = Field(None, gt=0)
    required_series: list[list[Condition]] = Field(
        default_factory=list, description="each item: conditions one series must meet"
    )


class Rule(_Strict):
    name: str = Field(min_length=1)
    match: list[Condition] = Field(min_length=1, description="all must hold for a series")
    exclude: list[Condition] = Field(
        default_factory=list, description="a series meeting any of these is left out"
    )
    select: Literal["all", "thinnest", "most_instances", "first"] = Field(
        "all", description="which matching series feed the model"
    )
    pipelines: list[str] = Field(min_length=1)
    priority: int = Field(
        0,
        description="higher runs first when several rules match; its results also go out "
        "first when deliveries wait (e.g. after the PACS was down)",
    )
    completeness: Completeness | None = None
    continue_: bool = Field(
        False, alias="continue", description="evaluate later rules after this one matched"
    )


class RoutingFile(_Strict):
    destinations: dict[str, AnyDestination] = Field(default_factory=dict)
    notifications: dict[str, NotificationTarget] = Field(
        default_factory=dict, description="urgent-finding notification targets (none: off)"
    )
    pipelines: dict[str, Pipeline] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    archives: dict[str, AnyArchive] = Field(
        default_factory=dict, description="archives cds backfill fetches studies from"
    )
    disabled_models: list[str] = Field(
        default_factory=list, description="kill switch: routed studies are recorded as skipped"
    )


def _format(exc: ValidationError, source: str) -> list[str]:
    out = []
    for err in exc.errors():
        parts = list(err["loc"])
        tags = NOTIFY_FORMATS if parts[:1] == ["notifications"] else KINDS
        if (
            len(parts) > 2
            and parts[0] in ("destinations", "archives", "notifications")
            and (parts[2] in tags)
        ):
            del parts[2]  # the kind pydantic chose the model by: not a key of the file
        loc = ".".join(_FIELD_NAMES.get(str(p), str(p)) for p in parts)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "union_tag_invalid" and tags is NOTIFY_FORMATS:
            msg = f"format must be one of {', '.join(NOTIFY_FORMATS)}"
        elif err["type"] == "union_tag_invalid":
            msg = f"kind must be one of {', '.join(KINDS)}"
        out.append(f"{source}: {loc}: {msg}")
    return out


def _references(rf: RoutingFile, source: str) -> list[str]:
    errors = []
    for name, p in rf.pipelines.items():
        for j, d in enumerate(p.destinations):
            if d not in rf.destinations:
                errors.append(
                    f"{source}: pipelines.{name}.destinations.{j}: unknown destination "
                    f"{d!r} (defined: {sorted(rf.destinations)})"
                )
        if p.notify is not None and p.notify.target not in rf.notifications:
            errors.append(_unknown_target(source, name, p.notify.target, rf.notifications))
        errors.extend(
            f"{source}: pipelines.{name}.{where}: {why}"
            for where, why in fallback_errors(p.results, p.fallback, p.viewer)
        )
    for i, r in enumerate(rf.rules):
        for j, pname in enumerate(r.pipelines):
            if pname not in rf.pipelines:
                errors.append(
                    f"{source}: rules.{i}.pipelines.{j}: unknown pipeline {pname!r} "
                    f"(defined: {sorted(rf.pipelines)})"
                )
    names = [r.name for r in rf.rules]
    for i, n in enumerate(names):
        if names.index(n) != i:
            errors.append(f"{source}: rules.{i}.name: duplicate rule name {n!r}")
    return errors


def parse_routing(data: Any, source: str = "routing.yaml") -> RoutingFile:
    """Validate routing data; RoutingFileError lists every problem by path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RoutingFileError([f"{source}: top level must be a mapping"])
    try:
        rf = RoutingFile.model_validate(data)
    except ValidationError as exc:
        raise RoutingFileError(_format(exc, source) + _raw_references(data, source)) from exc
    errors = _references(rf, source)
    if errors:
        raise RoutingFileError(errors)
    return rf


def _unknown_target(source: str, pipeline: str, target: str, defined: Any) -> str:
    return (
        f"{source}: pipelines.{pipeline}.notify.target: unknown notification target "
        f"{target!r} (defined: {sorted(defined)})"
    )


def _raw_references(data: dict[str, Any], source: str) -> list[str]:
    """Unknown pipelines, destinations and notification targets, found in data that
    failed the schema."""
    pipes = data.get("pipelines") if isinstance(data.get("pipelines"), dict) else {}
    dests = data.get("destinations") if isinstance(data.get("destinations"), dict) else {}
    targets = data.get("notifications") if isinstance(data.get("notifications"), dict) else {}
    errors = []
    for name, p in (pipes or {}).items():
        for j, d in enumerate((p.get("destinations") or []) if isinstance(p, dict) else []):
            if isinstance(d, str) and d not in (dests or {}):
                errors.append(
                    f"{source}: pipelines.{name}.destinations.{j}: unknown "
                    f"destination {d!r} (defined: {sorted(dests or {})})"
                )
        notify = p.get("notify") if isinstance(p, dict) else None
        target = notify.get("target") if isinstance(notify, dict) else None
        if isinstance(target, str) and target and target not in (targets or {}):
            errors.append(_unknown_target(source, name, target, targets or {}))
    rules = data.get("rules") if isinstance(data.get("rules"), list) else []
    for i, r in enumerate(rules or []):
        names = r.get("pipelines") if isinstance(r, dict) else None
        for j, pname in enumerate(names if isinstance(names, list) else []):
            if isinstance(pname, str) and pname not in (pipes or {}):
                errors.append(
                    f"{source}: rules.{i}.pipelines.{j}: unknown pipeline "
                    f"{pname!r} (defined: {sorted(pipes or {})})"
                )
    return errors


def load_routing(path: Path) -> RoutingFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RoutingFileError([f"{path}: cannot read ({exc.strerror})"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        raise RoutingFileError([f"{path}:{where} not valid YAML"]) from exc
    return parse_routing(data, str(path))


class RoutingFileError(RoutingError):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))
