"""issue 16 (follow-up): a class the manifest marks ``normal`` that reaches its threshold
is present, the normal state, not a finding, and never "absent": on the review page
(English and French), in ``cds model run``'s lines and in the golden cases' notes, as
the SR states it (``cds.results.text.statement``). An informational score (threshold
null) is a score with no decision, never "absent".
"""

from __future__ import annotations

import shutil
from html import unescape
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from cds.api.review import pages
from cds.api.routes.review import _finding_view
from cds.cli.model import finding_lines
from cds.domain import FindingRecord
from cds.findings import Code, Finding, InferenceResult, Label, Text
from cds.golden import run_golden
from cds.i18n import Lang
from cds.inference import manifest as mf
from cds.inference.validate import validate_package
from cds.results.text import label_statement, said, statement
from tests.results.test_seg import record

MODELS = Path(__file__).resolve().parents[1] / "models"
TRIAGE = "cds-ref-cxr-triage"  # label 0 Low-contrast image, label 1 Adequate contrast (normal)
PRESENT_NORMAL = {
    "en": "(present: the normal state, not a finding)",
    "fr": "(présent : l'état normal, pas un constat)",
}


@pytest.fixture(scope="module")
def manifest() -> mf.Manifest:
    return mf.load_manifest(MODELS / TRIAGE)


def _score_only(index: int) -> Label:
    """An informational classification score: threshold null, not normal."""
    return Label(
        index=index,
        code=Code(scheme="99CDS", value=f"T{index}", meaning="Pneumothorax"),
        display=Text(en="Pneumothorax", fr="Pneumothorax"),
        threshold=None,
    )


def _result(manifest: mf.Manifest, contrast: float) -> InferenceResult:
    low, adequate = manifest.output.labels
    findings = [
        Finding(low, 1 - contrast, 1 - contrast >= 0.5),
        Finding(adequate, contrast, False),  # a normal class is never reported present
        Finding(_score_only(7), 0.34, False),
    ]
    return InferenceResult(record(manifest, "1.2.3"), "classification", findings, {}, [])


def test_the_statement_of_a_normal_class_is_its_score_against_its_threshold(
    manifest: mf.Manifest,
) -> None:
    high, low = _result(manifest, 0.96), _result(manifest, 0.2)
    assert [statement(f, high.kind) for f in high.findings] == [False, True, None]
    assert [statement(f, low.kind) for f in low.findings] == [True, False, None]
    adequate = manifest.output.labels[1]
    assert label_statement(adequate, 0.5, present=False, kind="classification") is True
    assert said(True, normal=True) == "present (the normal state, not a finding)"
    assert said(False, normal=True) == "absent"
    assert said(None, normal=False) == "no decision"


# --- cds model run ---------------------------------------------------------------------
def test_model_run_lines_say_a_normal_class_with_a_high_score_is_present(
    manifest: mf.Manifest,
) -> None:
    lines = finding_lines(_result(manifest, 0.96))
    assert lines[0].startswith("  Low-contrast image [99CDS CDS-0001]: absent, score 0.040")
    assert lines[1].startswith(
        "  Adequate contrast [99CDS CDS-0002]: present (the normal state, not a finding), "
        "score 0.960"
    )
    assert lines[2].startswith("  Pneumothorax [99CDS T7]: no decision, score 0.340")
    assert not any("Adequate contrast" in line and "absent" in line for line in lines)
    low = finding_lines(_result(manifest, 0.2), "fr")
    assert low[1].startswith("  Contraste suffisant [99CDS CDS-0002]: absent, score 0.200")


# --- the review page -------------------------------------------------------------------
def _record(label: Label, score: float, present: bool = False) -> FindingRecord:
    return FindingRecord(
        tracking_uid=f"2.25.{label.index + 1}",
        result_sop_uid="2.25.100",
        study_key="study-1",
        job_kind="triage:1",
        model=TRIAGE,
        version="1.0.0",
        sha256="0" * 64,
        label_scheme=label.code.scheme,
        label_value=label.code.value,
        label_meaning=label.code.meaning,
        display_en=label.display.en,
        display_fr=label.display.fr,
        present=present,
        score=score,
        created_at=0.0,
    )


def _page(node: Any, findings: list[FindingRecord], lang: Lang) -> str:
    views = [_finding_view(node, f, [], None, lang) for f in findings]
    result = pages.ResultView(
        sop_uid="2.25.100",
        model=TRIAGE,
        version="1.0.0",
        sha256="0" * 64,
        pipeline="triage",
        created_at=0.0,
        superseded=False,
        source_series_uid="1.2.3",
        findings=views,
    )
    viewer = pages.Viewer(name="dr.martin", role="radiologist", csrf="token")
    return pages.study_page(
        lang, "study-1", [result], who="", recorded=None, recorded_label="", viewer=viewer
    )


def _presence(page: str, display: str) -> str:
    head = page.split(f'<h3 class="label">{display} ', 1)[1]
    return unescape(head.split('<small class="presence">', 1)[1].split("</small>", 1)[0])


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_the_review_page_shows_a_normal_class_with_a_high_score_as_present(
    manifest: mf.Manifest, lang: Lang
) -> None:
    low, adequate = manifest.output.labels
    node = SimpleNamespace(models={TRIAGE: SimpleNamespace(manifest=manifest)})
    page = _page(node, [_record(low, 0.04), _record(adequate, 0.96)], lang)
    name = adequate.display.en if lang == "en" else adequate.display.fr
    assert _presence(page, name) == PRESENT_NORMAL[lang]
    assert _presence(page, low.display.en if lang == "en" else low.display.fr) == "(absent)"


def test_the_review_page_a_normal_class_below_its_threshold_is_absent(
    manifest: mf.Manifest,
) -> None:
    adequate = manifest.output.labels[1]
    node = SimpleNamespace(models={TRIAGE: SimpleNamespace(manifest=manifest)})
    assert _presence(_page(node, [_record(adequate, 0.2)], "en"), "Adequate contrast") == (
        "(absent)"
    )


def test_the_review_page_an_informational_score_is_no_decision(manifest: mf.Manifest) -> None:
    score_only = _score_only(7)
    labelled = manifest.model_copy(
        update={
            "output": manifest.output.model_copy(
                update={"labels": [*manifest.output.labels, score_only]}
            )
        }
    )
    node = SimpleNamespace(models={TRIAGE: SimpleNamespace(manifest=labelled)})
    page = _page(node, [_record(score_only, 0.34)], "en")
    assert _presence(page, "Pneumothorax") == "(a score, no decision)"
    page = _page(node, [_record(score_only, 0.34)], "fr")
    assert _presence(page, "Pneumothorax") == "(un score, sans décision)"


def test_the_review_page_without_the_model_loaded_says_what_was_recorded(
    manifest: mf.Manifest,
) -> None:
    low = manifest.output.labels[0]
    page = _page(SimpleNamespace(models={}), [_record(low, 0.9, present=True)], "en")
    assert _presence(page, "Low-contrast image") == "(present)"


# --- golden cases ----------------------------------------------------------------------
def _triage_expecting(tmp: Path, present: bool) -> Path:
    """The triage package, its 'contrasted' case also expecting the normal class."""
    pkg = tmp / TRIAGE
    shutil.copytree(MODELS / TRIAGE, pkg)
    path = pkg / "golden" / "contrasted" / "expected.yaml"
    case = yaml.safe_load(path.read_text())
    case["findings"].append({"label": 1, "present": present})
    path.write_text(yaml.safe_dump(case))
    return pkg


def test_a_golden_case_notes_a_normal_class_with_a_high_score_as_present(tmp_path: Path) -> None:
    report = validate_package(_triage_expecting(tmp_path / "a", True), "cpu", golden=run_golden)
    assert report.ok, report.errors
    (contrasted,) = [line for line in report.golden if "(golden/contrasted)" in line]
    assert "label 1 (Adequate contrast), present (the normal state, not a finding)" in contrasted
    report = validate_package(_triage_expecting(tmp_path / "b", False), "cpu", golden=run_golden)
    assert any(
        "label 1 (Adequate contrast): expected absent, the SR says present "
        "(the normal state, not a finding)" in e
        for e in report.errors
    ), report.errors
