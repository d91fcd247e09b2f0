"""issue 17: every SR group is one OHIF 3 can draw and hydrate, and says it is an AI result;
issue 16 item 6: what each group states agrees with its score.

OHIF 3.13 crashes on an SR group without spatial coordinates (viewport left black), and
hydrates a group into an editable rectangle only when its tracking identifier names the
Cornerstone3D tool and its first NUM is INFERRED FROM the outline (see
../shared/viewer/README.md). Each test writes the SR, reads it back (dciodvfy: zero
errors) and checks, in source pixels, what the rectangle is for each kind of finding
(a box, a mask on its largest image, the whole image for an image-level result), and
the label OHIF shows (the group's first Comment) in English and French.

The qualitative evaluation of each group, read back from the SR, agrees with the
group's Probability and its label's threshold (``cds.results.sr_groups``): a finding
is Present exactly when its score reaches the threshold, a 'normal' class likewise
(never Absent with a high score), a multi-label (sigmoid) class by its own score
whatever the others', and an informational score states nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cds.feedback.findings import groups as feedback_groups
from cds.findings import Code, Finding, ImageRef, InferenceResult, Label, Text
from cds.i18n import LANGS
from cds.inference import manifest as mf
from cds.inference import readback as rb
from cds.inference.images import decode
from cds.inference.postprocess import Outputs, postprocess
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.results.common import result_uids
from cds.results.seg import build_seg
from cds.results.sr import build_sr
from cds.results.sr_groups import DEFAULT_THRESHOLD
from tests.results.test_sr import (
    LESION,
    MODELS,
    OHIF_RECTANGLE,
    child,
    comments,
    corners,
    detection_result,
    groups,
    manifest,
    model_boxes,
    name,
    outlines,
    slices,
    synthetic_result,
    write_and_read,
)

__all__ = ["manifest", "slices"]  # fixtures shared with test_sr

DX = MODELS.parent.parent / "shared" / "dicom" / "cr_dx" / "highdicom_dx_image_veterinary.dcm"


def classification_result(slices: Sequence[Dataset]) -> tuple[mf.Manifest, InferenceResult]:
    """cds-ref-cxr-triage's labels on three slices: 'low contrast' (threshold 0.5) highest on
    the second slice but below its threshold, 'adequate contrast' (the normal class)."""
    cxr = mf.load_manifest(MODELS / "cds-ref-cxr-triage")
    low, adequate = cxr.output.labels
    refs = [ImageRef(str(ds.SOPInstanceUID), 1) for ds in slices[:3]]
    findings = [
        Finding(low, 0.3, False, dict(zip(refs, [0.1, 0.3, 0.2], strict=True))),
        Finding(adequate, 0.9, False, dict(zip(refs, [0.9, 0.7, 0.8], strict=True))),
    ]
    rec = synthetic_result(slices, cxr).record
    return cxr, InferenceResult(rec, "classification", findings, {}, refs)


def measurement_result(
    slices: Sequence[Dataset], base: mf.Manifest
) -> tuple[mf.Manifest, InferenceResult]:
    """A measurement model (none is bundled): one value per image, the finding their mean."""
    unit = Code.model_construct(scheme="UCUM", value="mm", meaning="millimeter")
    output = base.output.model_copy(update={"kind": "measurement", "unit": unit})
    model = base.model_copy(update={"output": output})
    refs = [ImageRef(str(ds.SOPInstanceUID), 1) for ds in slices[:2]]
    values = {refs[0]: 11.0, refs[1]: 13.6}
    findings = [Finding(LESION, 12.3, True, values, 12.3)]
    rec = synthetic_result(slices, base).record
    return model, InferenceResult(rec, "measurement", findings, {}, refs)


def whole(ds: Dataset) -> list[list[float]]:
    return corners(0, 0, int(ds.Rows) - 1, int(ds.Columns) - 1)


def _all_kinds(
    slices: list[Dataset], manifest: mf.Manifest, lang: str = "en"
) -> dict[str, list[Dataset]]:
    result = synthetic_result(slices, manifest)
    seg = build_seg(slices, result, manifest, lang)
    cxr, classified = classification_result(slices)
    measuring, measured = measurement_result(slices, manifest)
    detected = detection_result(slices, manifest)
    return {
        "segmentation with its SEG": [build_sr(slices, result, manifest, lang, seg=seg)],
        "segmentation alone": [build_sr(slices, result, manifest, lang)],
        "detection": [build_sr(slices, detected, manifest, lang)],
        "classification": [build_sr(slices, classified, cxr, lang)],
        "measurement": [build_sr(slices, measured, measuring, lang)],
    }


@pytest.mark.parametrize(
    "kind",
    [
        "segmentation with its SEG",
        "segmentation alone",
        "detection",
        "classification",
        "measurement",
    ],
)
def test_every_group_of_every_kind_has_an_outline_ohif_hydrates_and_an_ai_label(
    kind: str, slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    """Absent findings included: a group without coordinates blacks out OHIF 3.13."""
    (sr,) = _all_kinds(slices, manifest)[kind]
    back = write_and_read(sr, tmp_path)
    sources = {str(ds.SOPInstanceUID): ds for ds in slices}
    found = groups(back)
    assert found
    for group in found:
        assert child(group, "DCM", "112039").TextValue == OHIF_RECTANGLE
        drawn = outlines(group)
        assert drawn, "the first NUM holds the outline"
        for sop, points in drawn:
            assert sop in sources
            assert points.shape == (5, 2)
            assert points[0].tolist() == points[-1].tolist()  # closed
            ds = sources[sop]
            assert points.min() >= 0  # on the image
            assert points[:, 0].max() <= int(ds.Columns)
            assert points[:, 1].max() <= int(ds.Rows)
        assert comments(group)[0].startswith("AI · ")


@pytest.mark.parametrize("lang", LANGS)
def test_a_mask_is_outlined_on_the_image_where_it_is_largest(
    lang: str, slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    result = synthetic_result(slices, manifest)
    seg = build_seg(slices, result, manifest, lang)
    found = groups(write_and_read(build_sr(slices, result, manifest, lang, seg=seg), tmp_path))
    # synthetic bone: 40 x 40 on slices 0, 1, 3, 4 (equal: the first wins); lesion on slice 3
    ((sop, points),) = outlines(found[0])
    assert sop == slices[0].SOPInstanceUID
    assert np.allclose(points, corners(20, 100, 59, 139))
    ((sop, points),) = outlines(found[1])
    assert sop == slices[3].SOPInstanceUID
    assert np.allclose(points, corners(200, 300, 219, 339))
    assert (
        comments(found[0])
        == {
            "en": [
                "AI · Bone structure · 0.90",
                "The box bounds the finding on the image where its area is largest; the finding "
                "may extend to other images. The finding itself is segment 1 of the SEG.",
            ],
            "fr": [
                "IA · Structure osseuse · 0,90",
                "Le cadre entoure le résultat sur l'image où sa surface est la plus grande ; le "
                "résultat peut s'étendre à d'autres images. Le résultat lui-même est le segment 1 "
                "du SEG.",
            ],
        }[lang]
    )


def test_the_largest_mask_wins_over_the_first(
    slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    result = synthetic_result(slices, manifest)
    bone = result.findings[0]
    refs = list(bone.per_image)
    bigger = np.zeros_like(bone.per_image[refs[4]])
    bigger[300:400, 10:60] = True
    bone.per_image[refs[4]] = bigger
    found = groups(write_and_read(build_sr(slices, result, manifest, "en"), tmp_path))
    ((sop, points),) = outlines(found[0])
    assert sop == slices[4].SOPInstanceUID
    assert np.allclose(points, corners(300, 10, 399, 59))
    assert comments(found[0])[1].endswith("may extend to other images.")  # no SEG given


@pytest.mark.parametrize("lang", LANGS)
def test_an_image_level_result_is_the_whole_image_where_its_score_is_highest(
    lang: str, slices: list[Dataset], tmp_path: Path
) -> None:
    """Not localised, and saying so; 'below threshold' for a finding the model does not
    report, never for the normal class."""
    cxr, result = classification_result(slices)
    found = groups(write_and_read(build_sr(slices, result, cxr, lang), tmp_path))
    low, adequate = found
    ((sop, points),) = outlines(low)
    assert sop == slices[1].SOPInstanceUID  # 0.3 on the second slice
    assert np.allclose(points, whole(slices[1]))
    ((sop, points),) = outlines(adequate)
    assert sop == slices[0].SOPInstanceUID  # 0.9 on the first slice
    assert np.allclose(points, whole(slices[0]))
    meaning = {
        "en": "The box is the whole image: this result is about the image as a whole, not "
        "about a place in it.",
        "fr": "Le cadre est l'image entière : ce résultat porte sur l'image dans son ensemble, "
        "pas sur un endroit de l'image.",
    }[lang]
    assert comments(low) == [
        {"en": "AI · Low-contrast image · 0.30 · below threshold",
         "fr": "IA · Image peu contrastée · 0,30 · sous le seuil"}[lang],
        meaning,
    ]  # fmt: skip
    assert comments(adequate) == [
        {"en": "AI · Adequate contrast · 0.90", "fr": "IA · Contraste suffisant · 0,90"}[lang],
        meaning,
    ]


def test_a_measurement_is_its_value_inferred_from_every_image(
    slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    model, result = measurement_result(slices, manifest)
    (group,) = groups(write_and_read(build_sr(slices, result, model, "fr"), tmp_path))
    nums = [c for c in group.ContentSequence if c.ValueType == "NUM"]
    assert [name(n) for n in nums] == [("SCT", "52988006")]  # no probability: the value
    value = nums[0].MeasuredValueSequence[0]
    assert float(value.NumericValue) == pytest.approx(12.3)
    assert value.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    drawn = outlines(group)
    assert [sop for sop, _ in drawn] == [str(ds.SOPInstanceUID) for ds in slices[:2]]
    for (_, points), ds in zip(drawn, slices[:2], strict=True):
        assert np.allclose(points, whole(ds))
    assert comments(group)[0] == "IA · Lésion · 12,30"


def test_tracking_uids_keep_their_derivation(slices: list[Dataset], manifest: mf.Manifest) -> None:
    """Feedback matches findings by their Tracking Unique Identifier: it is still the UID
    derived from the finding's position and label (and a box's image and rank)."""
    study, series = str(slices[0].StudyInstanceUID), (str(slices[0].SeriesInstanceUID),)

    def derived(kind: str) -> str:
        return result_uids(study, series, manifest.name, manifest.version, kind=kind)[1]

    sr = build_sr(slices, synthetic_result(slices, manifest), manifest, "en")
    uids = [str(child(g, "DCM", "112040").UID) for g in groups(sr)]
    assert uids == [
        derived("SR-tracking-0-0-SCT-272673000"),
        derived("SR-tracking-1-1-SCT-52988006"),
        derived("SR-tracking-2-2-SCT-52988006"),
    ]
    sr = build_sr(slices, detection_result(slices, manifest), manifest, "en")
    first_box = str(child(groups(sr)[0], "DCM", "112040").UID)
    assert first_box == derived(f"SR-tracking-0-1-SCT-52988006-box-{slices[1].SOPInstanceUID}-1-0")


def test_feedback_reads_one_finding_per_group(
    slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    """What cds.feedback indexes: one (tracking UID, finding code) per group, nothing more
    (the outlines and Comments add no tracking UID)."""
    back = write_and_read(
        build_sr(slices, detection_result(slices, manifest), manifest, "en"), tmp_path
    )
    assert feedback_groups(back) == [
        (str(child(g, "DCM", "112040").UID), ("SCT", "52988006")) for g in groups(back)
    ]
    assert len(feedback_groups(back)) == 4  # three boxes and the absent finding


def test_sr_of_the_bundled_chest_triage_model_on_a_radiograph(tmp_path: Path) -> None:
    """issue 17, end to end: cds-ref-cxr-triage on a real DX; each of its two labels is the
    whole radiograph, in source pixels, labelled with its score."""
    if not DX.exists():
        pytest.skip(f"test image not found: {DX}")
    (model,) = ModelRegistry([MODELS / "cds-ref-cxr-triage"], "cpu").load()
    assert model.status == "ready", model.errors
    assert model.manifest is not None
    dx = pydicom.dcmread(DX)
    result = ModelRunner(model, DeviceSlots(1, 1)).run(decode([DX]))
    back = write_and_read(build_sr([dx], result, model.manifest, "en"), tmp_path)
    found = groups(back)
    assert len(found) == len(result.findings) == 2
    for group, finding in zip(found, result.findings, strict=True):
        ((sop, points),) = outlines(group)
        assert sop == dx.SOPInstanceUID
        assert np.allclose(points, whole(dx))
        below = not finding.present and not finding.label.normal
        label = f"AI · {finding.label.display.en} · {finding.score:.2f}"
        assert comments(group)[0] == label + (" · below threshold" if below else "")


def test_sr_of_the_bundled_blob_detector_on_a_real_series(
    slices: list[Dataset], tmp_path: Path
) -> None:
    """issue 17, end to end: decode, run cds-ref-blob-detect, encode the SR, read it back:
    one hydratable group per box, whose rectangle is the model's box in source pixels and
    whose label says AI, the finding and the box's score."""
    (model,) = ModelRegistry([MODELS / "cds-ref-blob-detect"], "cpu").load()
    assert model.status == "ready", model.errors
    assert model.manifest is not None
    result = ModelRunner(model, DeviceSlots(1, 1)).run(decode(slices))
    boxes = model_boxes(result)
    assert boxes, "the blob detector boxes something on the test slices"
    back = write_and_read(build_sr(slices, result, model.manifest, "fr"), tmp_path)
    found = groups(back)
    assert len(found) == len(boxes)
    for group, (ref, box, score) in zip(found, boxes, strict=True):
        assert child(group, "DCM", "112039").TextValue == OHIF_RECTANGLE
        assert comments(group) == [f"IA · Hyperdensité focale · {score:.2f}".replace(".", ",")]
        ((sop, points),) = outlines(group)
        assert sop == ref.sop_uid
        assert np.allclose(points, corners(*box))


# --- what each group states agrees with its score (issue 16 item 6) -----------------


def statements(sr: Dataset, labels: Sequence[Label], kind: str) -> list[bool | None]:
    """Each group's qualitative evaluation read back (True Present, False Absent, None
    none), after checking that it agrees with the group's Probability and the label's
    threshold: a finding and a normal class are Present exactly when the probability
    reaches the threshold (0.5 when none), an informational score states nothing."""
    by_code = {(lb.code.scheme, lb.code.value): lb for lb in labels}
    said = []
    for g in rb.sr_groups(sr):
        assert g.code is not None
        lb = by_code[g.code]
        if kind == "measurement":  # a value, no probability: it was measured
            assert g.present is True
        elif kind == "classification" and lb.threshold is None and not lb.normal:
            assert g.present is None, f"{lb.code.meaning}: an informational score"
        else:
            assert g.probability is not None
            threshold = lb.threshold if lb.threshold is not None else DEFAULT_THRESHOLD
            assert g.present == (g.probability >= threshold), (
                f"{lb.code.meaning}: {'Present' if g.present else 'Absent'} with probability "
                f"{g.probability} and threshold {threshold}"
            )
        said.append(g.present)
    return said


def _label(index: int, en: str, fr: str, threshold: float | None, *, normal: bool = False) -> Label:
    return Label(
        index=index,
        code=Code(scheme="99CDS", value=f"CDS-90{index:02d}", meaning=en),
        display=Text(en=en, fr=fr),
        threshold=threshold,
        normal=normal,
    )


#: a finding (threshold 0.5), a finding with a high threshold (0.8), the normal class
#: (no threshold: 0.5) and an informational score (no threshold, not normal)
SCORED = [
    _label(0, "Nodule", "Nodule", 0.5),
    _label(1, "Effusion", "Épanchement", 0.8),
    _label(2, "No finding", "Aucune anomalie", None, normal=True),
    _label(3, "Image quality", "Qualité d'image", None),
]


def scored_result(
    slices: Sequence[Dataset], activation: str, probabilities: list[list[float]]
) -> tuple[mf.Manifest, InferenceResult]:
    """cds-ref-cxr-triage with the ``SCORED`` labels and ``activation``, scoring one image
    per row of ``probabilities``: the findings as cds.inference.postprocess makes them."""
    cxr = mf.load_manifest(MODELS / "cds-ref-cxr-triage")
    tensor = cxr.output.tensors[0].model_copy(update={"activation": activation})
    output = cxr.output.model_copy(update={"tensors": [tensor], "labels": SCORED})
    model = cxr.model_copy(update={"output": output})
    p = np.asarray(probabilities, dtype=np.float64)
    logits = np.log(p) if activation == "softmax" else np.log(p / (1 - p))
    refs = [ImageRef(str(ds.SOPInstanceUID), 1) for ds in slices[: len(p)]]
    # a classification reads no geometry nor pixels
    findings = postprocess(output, Outputs({"scores": logits}), refs, [], cast(Any, None))
    rec = synthetic_result(slices, cxr).record
    return model, InferenceResult(rec, "classification", findings, {}, refs)


#: (activation, per image the probability of each SCORED label, the statements expected)
CLASSIFIED = {
    # one class per image (softmax): the nodule on image 2, no finding on image 1
    "softmax": ([[0.1, 0.05, 0.8, 0.05], [0.6, 0.3, 0.05, 0.05]], [True, False, True, None]),
    # multi-label (sigmoid): each class by its own score, whatever the others say
    "sigmoid": ([[0.2, 0.85, 0.3, 0.6], [0.4, 0.1, 0.2, 0.9]], [False, True, False, None]),
}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("activation", CLASSIFIED)
def test_each_class_states_what_its_score_says(
    lang: str, activation: str, slices: list[Dataset], tmp_path: Path
) -> None:
    probabilities, expected = CLASSIFIED[activation]
    model, result = scored_result(slices, activation, probabilities)
    back = write_and_read(build_sr(slices, result, model, lang), tmp_path)
    assert statements(back, SCORED, "classification") == expected
    best = np.asarray(probabilities).max(axis=0)
    for g, score in zip(rb.sr_groups(back), best, strict=True):
        assert g.probability == pytest.approx(score)
    # 'below threshold' only for a finding the model did not report
    below = {"en": " · below threshold", "fr": " · sous le seuil"}[lang]
    said = [comments(g)[0].endswith(below) for g in groups(back)]
    assert said == [e is False and not lb.normal for e, lb in zip(expected, SCORED, strict=True)]


@pytest.mark.parametrize("lang", LANGS)
def test_a_normal_class_with_a_high_score_is_present_never_absent(
    lang: str, slices: list[Dataset], tmp_path: Path
) -> None:
    """The chest-triage model's 'Adequate contrast' (normal) at 0.9 is Present: coding it
    Absent beside its probability would contradict it. It stays no finding: no 'below
    threshold', and the model does not report it."""
    cxr, result = classification_result(slices)
    adequate = result.findings[1]
    assert adequate.label.normal
    assert not adequate.present  # never reported as a finding
    back = write_and_read(build_sr(slices, result, cxr, lang), tmp_path)
    assert statements(back, cxr.output.labels, "classification") == [False, True]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(
    "kind",
    ["segmentation with its SEG", "segmentation alone", "detection", "classification",
     "measurement"],
)  # fmt: skip
def test_every_group_of_every_kind_states_what_its_score_says(
    lang: str, kind: str, slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    """Boxes (Present: each box reached the threshold), masks, an absent finding of each
    kind (Absent, its best score under the threshold), image-level scores."""
    (sr,) = _all_kinds(slices, manifest, lang)[kind]
    result = {
        "segmentation with its SEG": synthetic_result(slices, manifest),
        "segmentation alone": synthetic_result(slices, manifest),
        "detection": detection_result(slices, manifest),
        "classification": classification_result(slices)[1],
        "measurement": measurement_result(slices, manifest)[1],
    }[kind]
    labels = [f.label for f in result.findings]
    said = statements(write_and_read(sr, tmp_path), labels, result.kind)
    assert (
        said
        == {
            "segmentation with its SEG": [True, True, False],
            "segmentation alone": [True, True, False],
            "detection": [True, True, True, False],  # three boxes, an absent label
            "classification": [False, True],
            "measurement": [True],
        }[kind]
    )


def test_the_bundled_chest_triage_model_states_adequate_contrast_present(tmp_path: Path) -> None:
    """End to end on a real DX: the normal class's high score is Present, in both
    languages, and the low-contrast finding Absent under its threshold."""
    if not DX.exists():
        pytest.skip(f"test image not found: {DX}")
    (model,) = ModelRegistry([MODELS / "cds-ref-cxr-triage"], "cpu").load()
    assert model.manifest is not None
    dx = pydicom.dcmread(DX)
    result = ModelRunner(model, DeviceSlots(1, 1)).run(decode([DX]))
    low, adequate = result.findings
    assert adequate.score >= DEFAULT_THRESHOLD > low.score  # what this image gives
    for lang in LANGS:
        back = write_and_read(build_sr([dx], result, model.manifest, lang), tmp_path)
        assert statements(back, model.manifest.output.labels, "classification") == [False, True]
