"""issue 15: the bundled packages prove their geometry end to end with golden cases, and
a golden case catches a box drawn in the wrong place."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cds.cli import app
from cds.golden import run_golden, run_golden_once
from cds.inference.manifest import load_manifest
from cds.inference.registry import ModelRegistry
from cds.inference.validate import validate_package
from cds.orchestrator import Node

from ..conftest import make_settings

MODELS = Path(__file__).resolve().parents[2] / "models"
PACKAGES = ("cds-ref-ct-bone", "cds-ref-cxr-triage", "cds-ref-blob-detect")


@pytest.mark.parametrize("name", PACKAGES)
def test_every_golden_case_of_the_bundled_packages_passes(name: str) -> None:
    report = validate_package(MODELS / name, "cpu", golden=run_golden)
    assert report.ok, report.errors
    assert report.warnings == []
    assert len(report.golden) == len(load_manifest(MODELS / name).golden) > 0
    assert all(": OK: " in line for line in report.golden), report.golden


def _copy(name: str, tmp: Path) -> Path:
    dest = tmp / name
    shutil.copytree(MODELS / name, dest)
    return dest


def test_a_transposed_box_format_fails_its_golden_case(tmp_path: Path) -> None:
    """The vendor's bug: boxes read as (x, y) when the model writes (row, column)."""
    pkg = _copy("cds-ref-blob-detect", tmp_path)
    text = (pkg / "manifest.yaml").read_text()
    (pkg / "manifest.yaml").write_text(text.replace("format: yxyx", "format: xyxy"))
    report = validate_package(pkg, "cpu", golden=run_golden)
    assert any("box 0 in the SR: IoU" in e and "below min_iou 0.9" in e for e in report.errors)
    assert any("box 0 in the GSPS: IoU" in e for e in report.errors)


def test_a_mask_in_the_wrong_place_fails_its_golden_case(tmp_path: Path) -> None:
    pkg = _copy("cds-ref-ct-bone", tmp_path)
    path = pkg / "golden" / "bone-block" / "mask.npz"
    with np.load(path) as z:
        moved = {k: np.roll(z[k], 6, axis=1) for k in z.files}
    np.savez(path, **moved)
    (err, *_) = validate_package(pkg, "cpu", golden=run_golden).errors
    assert "golden[0] (golden/bone-block): label 0 (Bone structure): Dice" in err
    assert "below min_dice 0.95" in err


def test_cli_validate_shows_each_golden_case_and_run_shows_locations(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app, ["model", "validate", str(MODELS / "cds-ref-blob-detect"), "--providers", "cpu"]
    )
    assert res.exit_code == 0, res.output
    assert "golden[0] (golden/one-blob): OK: 1 file(s) -> OT/PR/SR" in res.output
    assert "1 box(es), IoU min 0.936 (SR)" in res.output
    case = MODELS / "cds-ref-blob-detect" / "golden" / "one-blob" / "input"
    res = runner.invoke(
        app,
        [
            "model",
            "run",
            str(MODELS / "cds-ref-blob-detect"),
            str(case),
            "--providers",
            "cpu",
            "--preview",
            str(tmp_path / "png"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Focal hyperdensity [99CDS CDS-0003]: present, score 0.995, on 1 image(s)" in res.output
    assert "box x 93.0-108.0, y 61.0-68.5, score 0.995" in res.output
    (png,) = (tmp_path / "png").iterdir()
    assert png.suffix == ".png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_without_golden_cases_warns(tmp_path: Path) -> None:
    pkg = _copy("cds-ref-ct-bone", tmp_path)
    text = (pkg / "manifest.yaml").read_text()
    (pkg / "manifest.yaml").write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("golden:"))
    )
    res = CliRunner().invoke(app, ["model", "validate", str(pkg), "--providers", "cpu"])
    assert res.exit_code == 0
    assert "warning: " in res.output
    assert "no golden cases: geometry not verified" in res.output


def test_the_node_runs_golden_cases_at_load_and_a_failing_package_never_runs(
    tmp_path: Path,
) -> None:
    """A package edited on the node after its validation (here its box format, the
    vendor's transposed boxes) no longer passes its golden case: the node loads it as
    broken, so no study reaches it, and /health names it; with golden_at_load off the
    same package would load as ready."""
    models = tmp_path / "models"
    good = _copy("cds-ref-ct-bone", models)
    bad = _copy("cds-ref-blob-detect", models)
    text = (bad / "manifest.yaml").read_text()
    (bad / "manifest.yaml").write_text(text.replace("format: yxyx", "format: xyxy"))

    def loaded(golden_at_load: bool) -> dict[str, tuple[str, list[str]]]:
        settings = make_settings(
            tmp_path / f"home-{golden_at_load}",
            inference={
                "model_dirs": [str(models)],
                "providers": "cpu",
                "warm_up": False,
                "golden_at_load": golden_at_load,
            },
        )
        return {m.name: (m.status, m.errors) for m in Node(settings).models.load()}

    checked = loaded(True)
    assert checked[good.name][0] == "ready"
    status, errors = checked["cds-ref-blob-detect"]
    assert status == "broken"
    assert any("golden[0]" in e and "IoU" in e for e in errors), errors
    assert loaded(False)["cds-ref-blob-detect"][0] == "ready"


def test_a_reload_runs_the_golden_cases_again_when_a_golden_file_changed(
    tmp_path: Path,
) -> None:
    """The verdicts are remembered by content: an unchanged package is not run again on a
    reload, an edited golden case is."""
    pkg = _copy("cds-ref-ct-bone", tmp_path)
    registry = ModelRegistry([pkg], "cpu", warm=False, golden=run_golden_once)
    (first,) = registry.load()
    assert first.status == "ready", first.errors
    path = pkg / "golden" / "bone-block" / "mask.npz"
    with np.load(path) as z:
        moved = {k: np.roll(z[k], 6, axis=1) for k in z.files}
    np.savez(path, **moved)
    (again,) = registry.load()
    assert again.status == "broken"
    assert any("Dice" in e for e in again.errors), again.errors
