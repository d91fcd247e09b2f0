"""issue 23 (item 5): the Prometheus alert rules (deploy/prometheus/cds-rules.yml) pass
``promtool check rules`` and their unit tests (``promtool test rules``), and the rules
and the Grafana dashboard (deploy/grafana/cds.json) read only metrics that a running
node really exports on ``GET /metrics``: a renamed metric fails here, not in a
hospital's silent dashboard.

The one exception is named: the spool disk rule reads node_exporter, because cds
exports no disk figure (yet)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import CdsNode

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "cds-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "cds.json"
PROMTOOL = shutil.which("promtool")
#: series Prometheus makes itself, and the one rule's node_exporter figure
NOT_CDS = {"up", "node_filesystem_avail_bytes"}

# PromQL words that look like metric names: functions, aggregations, keywords
_PROMQL = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left",
    "rate", "irate", "increase", "delta", "deriv", "histogram_quantile", "absent",
    "label_values", "and", "or", "unless", "offset", "bool", "topk", "bottomk",
}  # fmt: skip
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers, less label matchers
    (``{...}``), grouping labels (``by (...)``), ranges, strings and PromQL's own words."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    words = {w for w in _IDENT.findall(text) if not re.fullmatch(r"\d.*", w)}
    # the second argument of label_values(metric, label) is a label
    text_lv = re.findall(r"label_values\(\s*[a-zA-Z_:][\w:]*\s*,\s*(\w+)\s*\)", expr)
    return words - _PROMQL - set(text_lv)


def exported(node: CdsNode) -> set[str]:
    """Every sample name the node's /metrics can carry (an empty histogram or counter
    still declares its family: its samples' names follow from its type)."""
    r = node.http.get("/metrics")
    assert r.status_code == 200
    names: set[str] = set()
    for family in text_string_to_metric_families(r.text):
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "summary": ["_sum", "_count", ""],
        }.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (Debian: apt install prometheus)")
def test_i23_rules_pass_promtool_check_and_their_unit_tests() -> None:
    assert PROMTOOL is not None
    for args in (["check", "rules", RULES.name], ["test", "rules", "cds-rules.test.yml"]):
        done = subprocess.run(
            [PROMTOOL, *args],
            cwd=RULES.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout
    alerts = {r["alert"] for r in _rules()}
    # what the issue asks to watch: queue age, dead deliveries, disk, model broken, drift
    needed = {"CdsJobQueueStuck", "CdsDeadDeliveries", "CdsSpoolDiskLow", "CdsModelNotRunning"}
    assert needed | {"CdsDriftAlert"} <= alerts
    tested = (RULES.parent / "cds-rules.test.yml").read_text(encoding="utf-8")
    assert len({a for a in alerts if f"alertname: {a}" in tested}) >= 2


def test_i23_rules_and_dashboard_read_only_exported_metrics(node: CdsNode) -> None:
    names = exported(node)
    assert "cds_queue_oldest_age_seconds" in names  # the scrape parsed
    for rule in _rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        allowed = NOT_CDS if rule["alert"] in {"CdsNodeDown", "CdsSpoolDiskLow"} else set()
        unknown = used - names - allowed
        assert unknown == set(), f"{rule['alert']} reads {unknown}, which cds does not export"
    dashboard = _dashboard_exprs()
    assert len(dashboard) > 20
    for expr in dashboard:
        used = metric_names(expr)
        assert used, expr
        assert used <= names, f"dashboard: {expr} reads {used - names}, not exported"


def test_i23_metric_names_reads_promql() -> None:
    """The checker itself: it finds the metrics and only them."""
    expr = (
        "histogram_quantile(0.95, sum by (le, model) (rate(cds_inference_seconds_bucket"
        '{instance=~"$instance", model="a b"}[15m]))) > 2 * cds_drift_psi_threshold'
    )
    assert metric_names(expr) == {"cds_inference_seconds_bucket", "cds_drift_psi_threshold"}
    assert metric_names("label_values(cds_info, instance)") == {"cds_info"}


def test_i23_dashboard_is_importable_grafana_json() -> None:
    """Ids unique, panels within Grafana's 24-column grid, one Prometheus data source
    chosen at import (``DS_PROMETHEUS``), a node selector."""
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] == "cds-node"
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs, p["title"]
        assert len(refs) == len(set(refs)), p["title"]
    assert [v["name"] for v in dash["templating"]["list"]] == ["instance"]
