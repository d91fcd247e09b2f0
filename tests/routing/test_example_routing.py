"""issue 14 ("first contact"): deploy/routing.example.yaml, the file admins copy, routes
the real corpus as a radiologist would expect.

Every series of ``shared/dicom`` is routed on its own by the example file, folder by
folder; the expectations below are written from the corpus README (what each file
is), not from the rules: chest radiographs reach the chest model even without
BodyPartExamined, no abdominal or other non-brain MR reaches the brain model, and no
non-image object (Raw Data, SR, SEG, presentation state, waveform, RT...) is ever
selected.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from datetime import datetime
from functools import cache
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cds.routing.router import SeriesHeader, evaluate, read_headers, route
from cds.routing.rules import Condition, RoutingFile, load_routing

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "routing.example.yaml"
DICOM = REPO.parent / "shared" / "dicom"
NOON = datetime(2024, 5, 1, 12, 0)

CT = "adult CT"
CHEST = "chest radiograph"
BRAIN = "brain MR (vendor model, office hours)"
CHEST_RULES = {
    CHEST,
    "chest radiograph (no body part, study description)",
    "chest radiograph (no body part, protocol name)",
    "chest radiograph (no body part, series description)",
}
BRAIN_RULES = {
    BRAIN,
    "brain MR (no body part, study description)",
    "brain MR (no body part, protocol name)",
}

#: image storage SOP classes (PS3.4 B.5) a model may be given; nothing else is selected
IMAGE_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray, For Presentation
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
}
RAW_DATA = "1.2.840.10008.5.1.4.1.1.66"

# Per corpus folder: every series a rule selects, by a file of the series (or its folder),
# and the rule. Every other series of the folder must match no rule. From the README:
EXPECTED: dict[str, dict[str, str]] = {
    "ct": {
        "ct/dcm_qa_ct_GE_HiSpeedDual_series/": CT,  # adult head CT, 4 mm
        "ct/GE_OptimaCT520_GH1308.dcm": CT,  # lumbar spine, 2.5 mm, 25 y
        "ct/dcmqi_ct-3slice/": CT,  # colonography, 1.25 mm, 60 y
        # CT_small: 000Y; eCT_Supplemental: no SliceThickness; GH342: localizer
    },
    "cr_dx": {
        "cr_dx/RG1_UNCR_Philips_CR_chest.dcm": CHEST,  # PA chest, BodyPartExamined CHEST
        "cr_dx/CR-MONO1-10-chest": CHEST,  # PA chest, no file meta
        "cr_dx/headers_only/Carestream_DRX_no_pixels.dcm": CHEST,  # AP chest
        "cr_dx/highdicom_dx_image_veterinary.dcm": CHEST,  # lateral thorax (animal)
        # NIH ChestX-ray14 PA chest: DX as Secondary Capture, no body part, no view, no
        # description naming a region: nothing in its header says chest, so no model runs
        # (the example's opt-in "assumed chest" rule is commented out)
        # RG3: lower leg (EXTREMITY); GE XR220: abdomen, For Processing
    },
    "compressed": {
        "compressed/RG1_J2KI.dcm": CHEST,  # the PA chest, JPEG 2000
        "compressed/Philips_IngeniaCT_JPEGLosslessSV1.dcm": CT,  # c-spine CT, 2 mm
        # every MR here: shoulder, survey, localizer, no description: not the brain model
    },
    "charset": {
        "charset/chrJapMultiExplicitIR6.dcm": CHEST,  # chest PA CR
        "charset/chrKoreanMulti.dcm": CHEST,  # chest PA CR
    },
    "mr": {
        "mr/GE_SignaPioneer_3D_T1_MPRAGE_series/": BRAIN,  # brain 3D T1 MP-RAGE
        # not T1 brain: abdominal MPR (Siemens, t1 VIBE protocol), prostate ADC, knee,
        # shoulder, resting-state fMRI (REST1), B0 map, no description, Bruker preclinical
    },
    "malformed": {
        "malformed/J2K_pixelrep_mismatch.dcm": CT,  # head CT, 5 mm, 76 y
        "malformed/bad_sequence.dcm": CT,  # neck CT, 1 mm, 22 y
    },
    "other": {
        "other/dicomdir_study/77654033/CT2/": CT,  # routine brain CT, 1.25 mm
        "other/dicomdir_study/98892001/CT5N/": CT,  # gated cardiac CT, 2.5 mm
        # its CR are cervical spine views; its MR are localizers and an angio projection
    },
    "mg": {},
    "us": {},
    "sr_seg_reference": {},  # SR, SEG, PR, RWVM, annotations; the tiny CT sources: 0 y
}


@pytest.fixture(scope="module")
def rf() -> RoutingFile:
    return load_routing(EXAMPLE)


@cache
def _folder(name: str) -> list[SeriesHeader]:
    """Every series of one corpus folder (read once; tests copy before changing one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the corpus's invalid UIs / VRs
        studies, _ = read_headers([DICOM / name])
    return [s for series in studies.values() for s in series]


def _key(series: SeriesHeader, keys: dict[str, str]) -> str | None:
    rels = [f.relative_to(DICOM).as_posix() for f in series.files]
    found = {k for k in keys for r in rels if r == k or (k.endswith("/") and r.startswith(k))}
    assert len(found) <= 1, found
    return found.pop() if found else None


def _rule_of(series: SeriesHeader, rf: RoutingFile) -> str | None:
    plan = route([series], rf, now=NOON)
    (rule, *_) = [r.rule for r in plan.rules if r.matched] or [None]
    return rule


@pytest.mark.skipif(not DICOM.is_dir(), reason=f"shared DICOM corpus not found at {DICOM}")
@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_example_rules_route_each_corpus_series_as_expected(rf: RoutingFile, folder: str) -> None:
    expected = EXPECTED[folder]
    got: dict[str, str] = {}
    for series in _folder(folder):
        rule = _rule_of(series, rf)
        key = _key(series, expected)
        if key is None:
            assert rule is None, f"{series.files[0]} ({series.label}) matched {rule!r}"
        else:
            got[key] = str(rule)
        if rule is not None:
            assert series.attrs.get("SOPClassUID") in IMAGE_STORAGE, series.files[0]
    assert got == expected


@pytest.mark.skipif(not DICOM.is_dir(), reason=f"shared DICOM corpus not found at {DICOM}")
def test_every_folder_of_the_corpus_is_in_the_table() -> None:
    assert {p.name for p in DICOM.iterdir() if p.is_dir()} == set(EXPECTED)


@pytest.mark.skipif(not DICOM.is_dir(), reason=f"shared DICOM corpus not found at {DICOM}")
def test_whole_studies_never_select_a_non_image_object(rf: RoutingFile) -> None:
    """Routed as the node does (a study at a time, first match wins): every selected
    series, in every study of the corpus, is an image storage SOP class."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        studies, _ = read_headers([DICOM])
    selected = 0
    for series in studies.values():
        by_uid = {s.series_uid: s for s in series}
        for r in route(series, rf, now=NOON).rules:
            for uid in r.selected:
                selected += 1
                assert by_uid[uid].attrs.get("SOPClassUID") in IMAGE_STORAGE, r.rule
    assert selected >= 15  # the CT, chest and brain series of the table


# --- what the corpus lacks: made from its real headers --------------------------------


def _real(rel: str) -> SeriesHeader:
    (series,) = [s for s in _folder(rel.split("/", 1)[0]) if _key(s, {rel: ""})]
    return series


def _variant(
    series: SeriesHeader, uid: str, drop: tuple[str, ...] = (), **attrs: str
) -> SeriesHeader:
    kept = {k: v for k, v in series.attrs.items() if k not in drop}
    return replace(series, series_uid=uid, attrs={**kept, **attrs})


@pytest.mark.skipif(not DICOM.is_dir(), reason=f"shared DICOM corpus not found at {DICOM}")
def test_abdominal_t1_mr_does_not_reach_the_brain_model(rf: RoutingFile) -> None:
    """The report: an abdominal T1 MR matched the brain rule (its description says T1)."""
    abdomen = _real("mr/MR-SIEMENS-DICOM-WithOverlays.dcm")  # BodyPartExamined ABDOMEN
    assert abdomen.attrs["BodyPartExamined"] == "ABDOMEN"
    t1 = _variant(abdomen, "1.2.3.1", SeriesDescription="t1_vibe_fs_tra_bh", ImageType="ORIGINAL")
    assert _rule_of(t1, rf) is None
    # the same without BodyPartExamined: its study description (abdomen^liver) decides
    bare = _variant(t1, "1.2.3.2", drop=("BodyPartExamined",))
    assert bare.attrs["StudyDescription"] == "abdomen^liver"
    assert _rule_of(bare, rf) is None
    # and a brain T1 without body part is found by its study description
    brain = _variant(bare, "1.2.3.3", StudyDescription="IRM cérébrale")
    assert _rule_of(brain, rf) == "brain MR (no body part, study description)"


@pytest.mark.skipif(not DICOM.is_dir(), reason=f"shared DICOM corpus not found at {DICOM}")
def test_raw_data_in_a_brain_t1_study_is_never_selected(rf: RoutingFile) -> None:
    """The report: the brain rule selected a Raw Data Storage object (same description)."""
    mprage = _real("mr/GE_SignaPioneer_3D_T1_MPRAGE_series/")
    raw = _variant(mprage, "1.2.3.4", SOPClassUID=RAW_DATA)
    raw = replace(raw, instance_count=500)  # would win select: most_instances
    assert _rule_of(raw, rf) is None
    plan = route([raw, mprage], rf, now=NOON)
    assert [(r.rule, r.selected) for r in plan.rules if r.matched] == [(BRAIN, [mprage.series_uid])]
    brain = next(r for r in plan.rules if r.rule == BRAIN)
    reasons = next(s.reasons for s in brain.series if s.series_uid == "1.2.3.4")
    assert reasons[0].startswith(f"SOPClassUID is '{RAW_DATA}', not in [")


@pytest.mark.skipif(not DICOM.is_dir(), reason=f"shared DICOM corpus not found at {DICOM}")
@pytest.mark.parametrize(
    ("attrs", "rule"),
    [
        ({"StudyDescription": "RX THORAX"}, "chest radiograph (no body part, study description)"),
        (
            {"StudyDescription": "Radio pulmonaire"},
            "chest radiograph (no body part, study description)",
        ),
        ({"ProtocolName": "Poumons face"}, "chest radiograph (no body part, protocol name)"),
        ({"SeriesDescription": "CXR PA"}, "chest radiograph (no body part, series description)"),
        (
            {"StudyDescription": "Chest 2 views", "SeriesDescription": "LAT"},
            "chest radiograph (no body part, study description)",
        ),
        ({}, None),  # nothing names a region: no model's stated use is known
        ({"ViewPosition": "PA"}, None),  # a view alone: hands and knees have PA views too
        ({"SeriesDescription": "Face"}, None),  # "face": the frontal view, in French
        ({"StudyDescription": "Rachis dorsal face"}, None),  # thoracic spine
        ({"StudyDescription": "XR thoracic spine"}, None),
        ({"StudyDescription": "Thorax", "SeriesDescription": "Grill costal G"}, None),  # ribs
        ({"StudyDescription": "Main gauche"}, None),  # a hand
        ({"ProtocolName": "KNEE AP"}, None),
        ({"SeriesDescription": "Abdomen sans préparation"}, None),
    ],
)
def test_radiograph_without_body_part_is_routed_by_its_descriptions(
    rf: RoutingFile, attrs: dict[str, str], rule: str | None
) -> None:
    """CR/DX without BodyPartExamined (two of three real chest films a user tried): the
    descriptions decide, in English and French; spine, ribs and other regions do not go
    to the chest model."""
    film = _real("cr_dx/RG1_UNCR_Philips_CR_chest.dcm")
    bare = _variant(
        film,
        "1.2.3.5",
        drop=("BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName"),
        **attrs,
    )
    assert _rule_of(bare, rf) == rule


@pytest.mark.parametrize("stored", ["", None])
def test_exists_false_holds_for_an_empty_or_absent_body_part(
    tmp_path: Path, stored: str | None
) -> None:
    """`exists: false` is "empty or absent": a scanner writing BodyPartExamined empty
    (type 2) is treated as one leaving it out, so the rules need no other operator."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CR"
    ds.StudyDescription = "Thorax"
    if stored is not None:
        ds.BodyPartExamined = stored
    ds.save_as(tmp_path / "cr.dcm", enforce_file_format=True)
    ((series,),) = read_headers([tmp_path])[0].values()
    absent = Condition(attribute="BodyPartExamined", exists=False)
    assert evaluate(absent, series, NOON) == (True, "BodyPartExamined missing, expected missing")
    assert _rule_of(series, load_routing(EXAMPLE)) == (
        "chest radiograph (no body part, study description)"
    )


def test_rule_names_of_the_example(rf: RoutingFile) -> None:
    """The names this test relies on; every rule is in one of the three groups."""
    assert {r.name for r in rf.rules} == {CT} | CHEST_RULES | BRAIN_RULES
    for r in rf.rules:
        (sop,) = [c.in_ for c in r.match if c.attribute == "SOPClassUID"]
        assert sop is not None, r.name
        assert set(map(str, sop)) <= IMAGE_STORAGE, r.name
