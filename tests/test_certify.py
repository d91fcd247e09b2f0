"""issue 24, items 2 and 4: the parts of ``cds certify model`` that need no model run
(the determinism comparison, the validators' verdicts, the report in both languages,
bad arguments), and docs/air.md names only tests that exist. The whole command runs on
every bundled package in integration_tests/test_certify_model.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from typer.testing import CliRunner

from cds.certify import report
from cds.certify.checks import Check, ToolResult, tool_check
from cds.certify.model import RUNS, _determinism, differing_attributes
from cds.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _object(time: str, comment: str = "advisory") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    ds.SOPInstanceUID = "2.25.1"
    ds.ContentTime = time
    item = Dataset()
    item.ContributionDateTime = "20260101" + time
    item.ContributionDescription = comment
    ds.ContributingEquipmentSequence = [item]
    return ds


def _runs(tmp_path: Path, first: Dataset, second: Dataset) -> Path:
    for n, ds in (("1", first), ("2", second)):
        folder = tmp_path / RUNS / n / "0" / "SR"
        folder.mkdir(parents=True)
        ds.save_as(folder / "2.25.1.dcm", enforce_file_format=True)
    return tmp_path


def test_differing_attributes_are_named_at_any_depth() -> None:
    assert differing_attributes(_object("101010"), _object("101010")) == set()
    assert differing_attributes(_object("101010"), _object("111111", "other")) == {
        "ContentTime",
        "ContributionDateTime",
        "ContributionDescription",
    }


def test_determinism_passes_identical_runs_and_says_byte_for_byte(tmp_path: Path) -> None:
    out = _runs(tmp_path, _object("101010"), _object("101010"))
    check = _determinism(out, [])
    assert check.status == "pass"
    assert "1 byte for byte identical, 0 identical except the time" in check.evidence[-1]


def test_determinism_tells_the_time_of_creation_apart_from_content(tmp_path: Path) -> None:
    stamped = _determinism(_runs(tmp_path / "a", _object("101010"), _object("111111")), [])
    assert stamped.status == "pass"
    assert "0 byte for byte identical, 1 identical except the time" in stamped.evidence[-1]
    changed = _determinism(_runs(tmp_path / "b", _object("101010"), _object("101010", "other")), [])
    assert changed.status == "fail"
    assert "0/SR/2.25.1.dcm: differs between runs/1 and runs/2 in ContributionDescription" in (
        changed.evidence
    )


def test_determinism_fails_when_a_run_made_nothing_or_had_a_problem(tmp_path: Path) -> None:
    assert _determinism(tmp_path, []).status == "fail"
    out = _runs(tmp_path / "c", _object("101010"), _object("101010"))
    assert _determinism(out, ["run 2, golden/x: SR not produced"]).status == "fail"


def test_a_missing_validator_is_not_run_never_a_pass(tmp_path: Path) -> None:
    assert tool_check("dcmpschk", "dcmpschk", None, tmp_path, "GSPS").evidence == [
        "not run: tool missing (dcmpschk)"
    ]
    assert tool_check("dcmpschk", "dcmpschk", None, tmp_path, "GSPS").status == "not_run"
    none = tool_check("dcmpschk", "dcmpschk", [], tmp_path, "presentation state")
    assert (none.status, none.evidence) == (
        "not_applicable",
        ["not applicable: no presentation state emitted"],
    )
    bad = ToolResult(tmp_path / "x.dcm", ["Error - Missing attribute Type 1"], [])
    verdict = tool_check("dciodvfy", "dciodvfy", [bad], tmp_path, "object")
    assert verdict.status == "fail"
    assert verdict.evidence == ["x.dcm: Error - Missing attribute Type 1"]


def test_report_in_json_and_html_in_both_languages(tmp_path: Path) -> None:
    results = [
        Check("validate", "pass", ["golden[0]: OK"]),
        Check("cpu_gpu", "not_applicable", ["not applicable: no GPU"]),
        Check("dciodvfy", "fail", ["SR/1.dcm: Error - <bad>"]),
    ]
    titles = {"en": "Model package m 1", "fr": "Paquet de modèle m 1"}
    report.write(tmp_path, {"kind": "model", "name": "m"}, titles, results)  # type: ignore[arg-type]
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["passed"] is False
    assert [c["status"] for c in data["checks"]] == ["pass", "not_applicable", "fail"]
    assert data["checks"][2]["requirement"]["en"].startswith("DICOM PS3.3 IODs")
    assert data["checks"][2]["title"]["fr"] == "Chaque objet conforme à son IOD"
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "FAILED: 1 check(s) failed" in page
    assert "ÉCHEC : 1 vérification(s) en échec" in page
    assert "sans objet" in page
    assert "not applicable" in page
    assert "&lt;bad&gt;" in page
    assert "<bad>" not in page


def test_certify_model_refuses_a_folder_that_is_not_a_package(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["certify", "model", str(tmp_path), "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert f"PKG: {tmp_path}: no manifest.yaml (not a model package)" in res.output


def test_every_test_named_in_air_md_exists() -> None:
    text = (ROOT / "docs" / "air.md").read_text(encoding="utf-8")
    named = re.findall(r"`([\w/]+\.py)::(\w+)`", text)
    assert len(named) >= 15
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (ROOT / path).is_file()
        or not re.search(rf"^def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.M)
    ]
    assert missing == []
