"""issue 23 (item 1): a node with no usable model says so. ``inference.model_dirs`` that
name folders holding no ready model make ``GET /health`` ``degraded`` (HTTP 200, the node
still receives) with a reason naming the folders, and log ``inference.no_usable_model``
as a warning at start. By default the folders are the reference models shipped inside
the package, found from any working directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from cds.api.app import create_app
from cds.config import Settings
from cds.config.bundled import BUNDLED_MODELS
from cds.inference.registry import find_packages

from ..conftest import REPO, make_settings

REFERENCE = ["cds-ref-blob-detect", "cds-ref-ct-bone", "cds-ref-cxr-triage", "cds-ref-perf-unet"]


def _health(settings: Settings) -> tuple[dict[str, object], list[dict[str, object]]]:
    with capture_logs() as logs, TestClient(create_app(settings)) as c:
        r = c.get("/health")
    assert r.status_code == 200
    return r.json(), [e for e in logs if e["event"] == "inference.no_usable_model"]


def test_default_model_dirs_are_the_bundled_models_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dirs = Settings(home=tmp_path / "home").inference.model_dirs
    assert dirs == [BUNDLED_MODELS]
    assert BUNDLED_MODELS.is_absolute()
    assert [p.name for p in find_packages(dirs)] == REFERENCE
    # the bundled packages are the repository's own, not copies that could drift
    for name in REFERENCE:
        assert (BUNDLED_MODELS / name).resolve() == (REPO / "models" / name).resolve()


def test_an_empty_model_folder_is_degraded_and_warned(tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    settings = make_settings(tmp_path / "home", inference={"model_dirs": [str(empty)]})
    body, warnings = _health(settings)
    assert body["status"] == "degraded"
    assert body["problems"] == [
        {
            "model": None,
            "status": "no_usable_model",
            "pipelines": [],
            "reason": f"no model package found in inference.model_dirs ({empty})",
        }
    ]
    assert [(w["log_level"], w["reason"]) for w in warnings] == [
        ("warning", f"no model package found in inference.model_dirs ({empty})")
    ]


def test_only_broken_packages_is_degraded(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    broken = shutil.copytree(REPO / "models" / "cds-ref-ct-bone", folder / "cds-ref-ct-bone")
    (broken / "model.onnx").write_bytes(b"not an ONNX graph")
    settings = make_settings(
        tmp_path / "home", inference={"model_dirs": [str(folder)], "providers": "cpu"}
    )
    body, warnings = _health(settings)
    assert body["status"] == "degraded"
    (problem,) = body["problems"]
    assert problem["status"] == "no_usable_model"
    assert problem["reason"] == f"1 package(s), none ready in inference.model_dirs ({folder})"
    assert len(warnings) == 1


def test_a_ready_model_is_ok_and_no_folder_at_all_is_a_choice(tmp_path: Path) -> None:
    """One ready package: ok, no warning. ``model_dirs: []`` is a node the admin wants
    without models (receive and route only): ok too."""
    ready = make_settings(
        tmp_path / "a",
        inference={
            "model_dirs": [str(REPO / "models" / "cds-ref-ct-bone")],
            "providers": "cpu",
            "warm_up": False,
            "golden_at_load": False,
        },
    )
    body, warnings = _health(ready)
    assert (body["status"], body["problems"], warnings) == ("ok", [], [])
    body, warnings = _health(make_settings(tmp_path / "b"))
    assert (body["status"], body["problems"], warnings) == ("ok", [], [])
