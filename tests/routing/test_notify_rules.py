"""issue 5: urgent-finding notification in the routing file, every error by its path.

Off by default: the example routing file loads with no notification target, and its
commented-out example validates once uncommented.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds.destinations import FhirTarget, Hl7v2Target
from cds.routing.rules import RoutingFileError, load_routing, parse_routing

SRC = "routing.yaml"
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "routing.example.yaml"


def errors_of(data: Any) -> list[str]:
    with pytest.raises(RoutingFileError) as info:
        parse_routing(data, SRC)
    return info.value.errors


def routing(target: dict[str, Any] | None = None, notify: Any = None) -> dict[str, Any]:
    pipe: dict[str, Any] = {"model": "m", "results": ["SR"]}
    if notify is not None:
        pipe["notify"] = notify
    return {
        "notifications": {"worklist": target or {"url": "https://ris.local/fhir"}},
        "pipelines": {"p": pipe},
    }


def test_a_valid_notification_and_its_defaults() -> None:
    rf = parse_routing(
        routing(
            {"url": "https://ris.local/fhir/DiagnosticReport", "headers": {"X-Api-Key": "k"}},
            {"target": "worklist", "findings": ["1386000", "125605004"], "min_score": 0.8},
        ),
        SRC,
    )
    t = rf.notifications["worklist"]
    assert (t.format, t.timeout_s, t.verify_tls, t.ca_file) == ("fhir-r4", 10.0, True, None)
    spec = rf.pipelines["p"].notify
    assert spec is not None
    assert (spec.target, spec.findings, spec.min_score) == (
        "worklist",
        ["1386000", "125605004"],
        0.8,
    )


def test_notification_is_off_unless_configured() -> None:
    rf = parse_routing({"pipelines": {"p": {"model": "m", "results": ["SR"]}}}, SRC)
    assert rf.notifications == {}
    assert rf.pipelines["p"].notify is None


def test_unknown_target_is_reported_by_path() -> None:
    assert errors_of(routing(notify={"target": "ris", "findings": ["any"]})) == [
        f"{SRC}: pipelines.p.notify.target: unknown notification target 'ris' "
        "(defined: ['worklist'])"
    ]


def test_unknown_target_is_reported_with_schema_errors() -> None:
    """Every error at once, even when the schema fails too."""
    data = routing(notify={"target": "ris", "findings": ["any"]})
    data["pipelines"]["p"]["results"] = []
    assert errors_of(data) == [
        f"{SRC}: pipelines.p.results: List should have at least 1 item after validation, not 0",
        f"{SRC}: pipelines.p.notify.target: unknown notification target 'ris' "
        "(defined: ['worklist'])",
    ]


@pytest.mark.parametrize(
    ("target", "error"),
    [
        (
            {"url": "ftp://ris.local/x"},
            "notifications.worklist.url: must be an http:// or https:// URL with a host, "
            "not 'ftp://ris.local/x'",
        ),
        (
            {"url": "file:///etc/passwd"},
            "notifications.worklist.url: must be an http:// or https:// URL with a host, "
            "not 'file:///etc/passwd'",
        ),
        (
            {"url": "https://user:pw@ris.local/x"},
            "notifications.worklist.url: credentials do not belong in the URL: put them in headers",
        ),
        (
            {"url": "https://ris.local:http/x"},
            "notifications.worklist.url: not a valid URL: Port could not be cast to integer "
            "value as 'http'",
        ),
        (
            {"url": "https://ris.local/x", "format": "hl7v3"},
            "notifications.worklist: format must be one of fhir-r4, hl7v2",
        ),
        (
            {"url": "https://ris.local/x", "timeout_s": 0},
            "notifications.worklist.timeout_s: Input should be greater than 0",
        ),
        (
            {"url": "https://ris.local/x", "headers": {"Bad Name": "v"}},
            "notifications.worklist.headers: 'Bad Name' is not a valid HTTP header name",
        ),
        (
            {"url": "https://ris.local/x", "headers": {"X-Token": "a\r\nHost: evil"}},
            "notifications.worklist.headers: the value of X-Token holds a line break or NUL",
        ),
        (
            {"url": "https://ris.local/x", "headers": {"Content-Type": "text/plain"}},
            "notifications.worklist.headers: Content-Type is set by cds, not by the routing file",
        ),
        (
            {"url": "https://ris.local/x", "method": "PUT"},
            "notifications.worklist.method: unknown field",
        ),
    ],
)
def test_target_errors_by_path(target: dict[str, Any], error: str) -> None:
    assert errors_of(routing(target)) == [f"{SRC}: {error}"]


@pytest.mark.parametrize(
    ("notify", "error"),
    [
        (
            {"target": "worklist", "findings": []},
            "pipelines.p.notify.findings: List should have at least 1 item after validation, not 0",
        ),
        (
            {"target": "worklist", "findings": ["any", "1386000"]},
            'pipelines.p.notify.findings: "any" already matches every finding: list it alone',
        ),
        (
            {"target": "worklist", "findings": ["any"], "min_score": 1.5},
            "pipelines.p.notify.min_score: Input should be less than or equal to 1",
        ),
        (
            {"target": "worklist", "findings": ["any"], "urgent": True},
            "pipelines.p.notify.urgent: unknown field",
        ),
        ({"findings": ["any"]}, "pipelines.p.notify.target: Field required"),
    ],
)
def test_notify_errors_by_path(notify: dict[str, Any], error: str) -> None:
    assert errors_of(routing(notify=notify)) == [f"{SRC}: {error}"]


def test_header_values_are_secret() -> None:
    rf = parse_routing(routing({"url": "https://r/x", "headers": {"Authorization": "tok3n"}}), SRC)
    t = rf.notifications["worklist"]
    assert "tok3n" not in repr(rf)
    assert "tok3n" not in str(t.model_dump(mode="json"))
    assert t.headers["Authorization"].get_secret_value() == "tok3n"


def _uncomment(text: str) -> str:
    """The example's commented-out notification blocks, uncommented."""
    out, block = [], None
    for line in text.splitlines():
        m = re.match(r"^(\s*)# ?(.*)$", line)
        if m and re.match(r"(notifications|notify):", m.group(2)):
            block = len(m.group(1))
        elif not (m and block is not None and len(m.group(1)) == block and m.group(2)[:1] == " "):
            block = None
        out.append(m.group(1) + m.group(2) if m and block is not None else line)
    return "\n".join(out)


def test_example_is_off_by_default_and_its_commented_example_validates() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    rf = load_routing(EXAMPLE)
    assert rf.notifications == {}
    assert all(p.notify is None for p in rf.pipelines.values())
    enabled = parse_routing(yaml.safe_load(_uncomment(text)), "example, uncommented")
    assert list(enabled.notifications) == ["worklist", "ris"]
    worklist, ris = enabled.notifications["worklist"], enabled.notifications["ris"]
    assert isinstance(worklist, FhirTarget)
    assert worklist.url.startswith("https://")
    assert isinstance(ris, Hl7v2Target)  # issue 25: HL7 v2 over MLLP
    assert (ris.host, ris.port, ris.priority) == ("ris.local", 2575, "stat")
    notifying = {k: p.notify for k, p in enabled.pipelines.items() if p.notify is not None}
    assert list(notifying) == ["cxr-triage"]
    assert notifying["cxr-triage"].target == "worklist"
    # nothing else changed
    assert enabled.model_dump(exclude={"notifications", "pipelines"}) == rf.model_dump(
        exclude={"notifications", "pipelines"}
    )
