"""issue 3: the node loads every package in its model folders, reports the provider it
really uses, and lists a broken package as broken without stopping."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import CdsNode

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
REFERENCE = ["cds-ref-blob-detect", "cds-ref-ct-bone", "cds-ref-cxr-triage"]


@pytest.mark.integration
def test_i3_node_lists_models_with_real_provider_and_skips_broken(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """issue 3: /health lists each model's version, SHA-256, status and provider in use."""
    folder = tmp_path / "models"
    for name in REFERENCE:
        shutil.copytree(MODELS / name, folder / name)
    broken = folder / "broken-one"
    shutil.copytree(MODELS / "cds-ref-ct-bone", broken)
    (broken / "model.onnx").write_bytes(b"\x08\x01garbage")
    manifest = (broken / "manifest.yaml").read_text()
    (broken / "manifest.yaml").write_text(
        manifest.replace("name: cds-ref-ct-bone", "name: broken-one")
    )
    node = node_factory({"inference": {"model_dirs": [str(folder)], "providers": "auto"}})
    body = node.health().json()
    models = {m["name"]: m for m in body["models"]}
    for name in REFERENCE:
        assert models[name]["status"] == "ready", models[name]
        assert models[name]["provider"] in ("CPU", "CUDA", "TensorRT")
        assert len(models[name]["sha256"]) == 64
    assert models["broken-one"]["status"] == "broken"
    assert len(body["models"]) == 4
    assert node.running
    events = [e for e in node.events() if e.get("event") == "inference.model_broken"]
    assert len(events) == 1
    assert "onnxruntime cannot load the model" in str(events[0]["errors"])
