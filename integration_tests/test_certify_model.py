"""issue 24, item 2: ``cds certify model PKG --out DIR`` on every bundled package passes;
a package whose golden case disagrees fails, naming the finding. The command runs as a
subprocess, as a vendor runs it, with the validators installed (dciodvfy, dcmpschk,
pixelmed) or reported not run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
BUNDLED = sorted(p.name for p in MODELS.glob("cds-ref-*") if (p / "manifest.yaml").is_file())


def _certify(package: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds", "certify", "model", str(package), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
    )


@pytest.mark.integration
@pytest.mark.parametrize("name", BUNDLED)
def test_i24_certify_model_passes_on_every_bundled_package(name: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = _certify(MODELS / name, out)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["passed"] is True
    assert statuses["validate"] == statuses["determinism"] == statuses["throughput"] == "pass"
    assert statuses["cpu_gpu"] in {"pass", "not_applicable"}
    for tool in ("dciodvfy", "dcmpschk", "pixelmed_sr"):
        assert statuses[tool] in {"pass", "not_applicable", "not_run"}
    rate = next(c for c in report["checks"] if c["id"] == "throughput")["figures"]
    assert rate["images_per_second"] > 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Rapport de certification cds" in page
    assert "cds certification report" in page


@pytest.mark.integration
def test_i24_certify_model_fails_naming_the_finding_a_golden_case_disagrees_on(
    tmp_path: Path,
) -> None:
    package = tmp_path / "cds-ref-blob-detect"
    shutil.copytree(MODELS / "cds-ref-blob-detect", package)
    expected = package / "golden" / "one-blob" / "expected.yaml"
    text = expected.read_text(encoding="utf-8")
    assert "    - 93.0\n" in text
    # the expected box moves away from the blob the model finds
    expected.write_text(text.replace("    - 93.0\n", "    - 20.0\n").replace(
        "    - 108.0\n", "    - 35.0\n"), encoding="utf-8")  # fmt: skip
    out = tmp_path / "report"
    proc = _certify(package, out)
    assert proc.returncode == 1
    assert "validate: " in proc.stderr
    assert "label 0 (Focal hyperdensity): box 0 in the SR: IoU 0.000" in proc.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["passed"] is False
    validate = next(c for c in report["checks"] if c["id"] == "validate")
    assert validate["status"] == "fail"
    assert any("label 0 (Focal hyperdensity)" in line for line in validate["evidence"])
