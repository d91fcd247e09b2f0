"""issue 14 ("first contact"): /health says ``degraded`` (HTTP 200: the node still takes
studies) and names the model when a model the routing rules send studies to is broken
or missing; a healthy set-up says ``ok``."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CdsNode

pytestmark = pytest.mark.integration

MODELS = Path(__file__).resolve().parent.parent / "models"


def _routing(path: Path, pipelines: dict[str, str], routed: list[str], **extra: Any) -> Path:
    """A routing file: ``pipelines`` (name -> model), one rule per name in ``routed``."""
    doc = {
        "pipelines": {p: {"model": m, "results": ["SR"]} for p, m in pipelines.items()},
        "rules": [
            {"name": f"rule {p}", "match": [{"attribute": "Modality", "equals": "CT"}],
             "pipelines": [p]}
            for p in routed
        ],
        **extra,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_i14_broken_or_missing_routed_model_makes_health_degraded(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """A routed package whose model.onnx is corrupt, and a routed model with no package:
    200 degraded, each named with its pipelines and a brief reason. A broken model no
    rule routes to, and a missing one the kill switch disables, are no problem."""
    folder = tmp_path / "models"
    shutil.copytree(MODELS / "cds-ref-ct-bone", folder / "cds-ref-ct-bone")
    broken = shutil.copytree(MODELS / "cds-ref-cxr-triage", folder / "cds-ref-cxr-triage")
    (broken / "model.onnx").write_bytes(b"\x08\x01 not an ONNX graph")
    unrouted = shutil.copytree(MODELS / "cds-ref-blob-detect", folder / "cds-ref-blob-detect")
    (unrouted / "model.onnx").write_bytes(b"corrupt too")
    routing = _routing(
        tmp_path / "routing.yaml",
        {
            "bone": "cds-ref-ct-bone",
            "cxr": "cds-ref-cxr-triage",
            "cxr-again": "cds-ref-cxr-triage",
            "vendor": "not-installed",
            "blobs": "cds-ref-blob-detect",
            "off": "switched-off",
        },
        routed=["bone", "cxr", "cxr-again", "vendor", "off"],
        disabled_models=["switched-off"],
    )
    node = node_factory(
        {
            "inference": {"model_dirs": [str(folder)], "providers": "cpu"},
            "routing": {"file": str(routing)},
        }
    )
    r = node.health()
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"
    broken_entry, missing_entry = body["problems"]
    reason = broken_entry.pop("reason")
    assert broken_entry == {
        "model": "cds-ref-cxr-triage",
        "status": "broken",
        "pipelines": ["cxr", "cxr-again"],
    }
    assert reason.startswith("cds-ref-cxr-triage/model.onnx: onnxruntime cannot load the model")
    assert str(tmp_path) not in reason  # brief: the package's folder name, not its path
    assert missing_entry == {
        "model": "not-installed",
        "status": "missing",
        "pipelines": ["vendor"],
        "reason": "no package of this name in inference.model_dirs",
    }
    # the other parts are up: this is not a 503
    assert body["dicom"]["listening"] is True
    assert body["store"]["reachable"] is True
    statuses = {m["name"]: m["status"] for m in body["models"]}
    assert statuses == {
        "cds-ref-ct-bone": "ready",
        "cds-ref-cxr-triage": "broken",
        "cds-ref-blob-detect": "broken",
    }
    assert node.log_problems() == []


def test_i14_no_usable_model_while_rules_route_is_degraded(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """No model folder at all, and the rules name a pipeline: degraded, not ok."""
    routing = _routing(tmp_path / "routing.yaml", {"bone": "cds-ref-ct-bone"}, routed=["bone"])
    node = node_factory({"routing": {"file": str(routing)}})
    r = node.health()
    assert (r.status_code, r.json()["status"]) == (200, "degraded")
    assert [(p["model"], p["status"]) for p in r.json()["problems"]] == [
        ("cds-ref-ct-bone", "missing")
    ]


def test_i14_healthy_routed_models_say_ok(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    routing = _routing(tmp_path / "routing.yaml", {"bone": "cds-ref-ct-bone"}, routed=["bone"])
    node = node_factory(
        {
            "inference": {"model_dirs": [str(MODELS / "cds-ref-ct-bone")], "providers": "cpu"},
            "routing": {"file": str(routing)},
        }
    )
    r = node.health()
    assert (r.status_code, r.json()["status"], r.json()["problems"]) == (200, "ok", [])
