"""issue 16: read tolerantly, write strictly (``cds.results.copied``).

Dirty source attributes (an anonymiser's hash as a birth date, an over-long accession
number, any invalid value of its VR) and any source character set (ISO 2022 code
extensions included) no longer cost the radiologist a result: every object is made
through the node's per-series step (``process_series`` + ``write_results``), valid
(dciodvfy: no error), in UTF-8, and what was not copied is said by attribute name in the
job's record, never by value. Here: the policy's rules, one at a time; the corpus-wide
mutation test (tests/results/test_mutation_corpus.py) puts every copied attribute through
the routed series.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from cds.inference.registry import LoadedModel, ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.pipeline import SeriesOutcome, process_series
from cds.results.common import complete
from cds.results.copied import COPIED, UNKNOWN_CHARACTER_SET, copy_ahead, copy_for_encoding
from cds.results.encode import write_results

REPO = Path(__file__).resolve().parents[2]
DICOM = REPO.parent / "shared" / "dicom"
DX = DICOM / "cr_dx" / "NIH_chestxray_DX_sample.dcm"
CT = DICOM / "ct" / "CT_small.dcm"
CT_IMAGE, MR_IMAGE = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE, DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
JAPANESE = DICOM / "charset" / "chrH31.dcm"
DCIODVFY = "/usr/bin/dciodvfy"
#: a 56-character hash, as an anonymiser leaves it in PatientBirthDate
HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15"
LONG_ACCESSION = "ACCCANARY12345678901"  # 20 characters: SH holds 16
CANARIES = (HASH, "CANARY", "9f86d0")
#: per model: the objects asked for, as a routing pipeline asks for them
CHEST = ("cds-ref-cxr-triage", ["SR", "GSPS", "SC"])
CT_MODELS = (
    ("cds-ref-ct-bone", ["SEG", "SR", "SC"]),
    ("cds-ref-blob-detect", ["GSPS", "SR", "SC"]),
)


@pytest.fixture(scope="module")
def models() -> dict[str, LoadedModel]:
    if not (DX.exists() and CT.exists()):
        pytest.skip("shared DICOM corpus missing")
    registry = ModelRegistry([REPO / "models"], "cpu", DeviceSlots(1, 1), warm=False)
    registry.load()
    out = {}
    for name in ("cds-ref-cxr-triage", "cds-ref-ct-bone", "cds-ref-blob-detect"):
        model = registry.get(name)
        assert model is not None
        assert model.status == "ready"
        out[name] = model
    return out


def dciodvfy_errors(path: Path) -> list[str]:
    if not Path(DCIODVFY).exists():
        pytest.skip(f"{DCIODVFY} is not installed")
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    return [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("Error")]


def save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a scanner would, invalid values included."""
    before = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        ds.save_as(path)
    finally:
        config.settings.writing_validation_mode = before
    return path


def set_raw(ds: Dataset, keyword: str, text: str) -> None:
    """Put ``text`` in ``ds`` as the bytes a scanner wrote, unchecked (even DS 'seventy')."""
    tag = Tag(tag_for_keyword(keyword))
    value = text.encode("ascii")
    value += b" " * (len(value) % 2)
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)


def chest_dx() -> Dataset:
    """The corpus DX with a low-contrast image (the chest model then reports a finding,
    so an SC is made) and a PatientOrientation (which the SC needs)."""
    ds = pydicom.dcmread(DX)
    pixels = np.full_like(ds.pixel_array, 100)
    pixels[:60, :60] = 200
    ds.PixelData = pixels.tobytes()
    ds.PatientOrientation = ["P", "F"]
    return ds


def run(model: LoadedModel, kinds: list[str], files: Sequence[Path]) -> SeriesOutcome:
    return process_series(ModelRunner(model, DeviceSlots(1, 1)), files, kinds, "en")


def made_and_valid(out: SeriesOutcome, kinds: list[str], tmp: Path) -> list[Dataset]:
    """Every kind asked for made, each object without a dciodvfy error; read back."""
    assert [o for o in out.outcomes if not o.made] == []
    assert {_kind(ds) for ds in out.objects} == set(kinds)
    back = []
    for path in write_results(tmp, "study", out.objects):
        assert dciodvfy_errors(path) == [], path.parent.name
        back.append(pydicom.dcmread(path))
    return back


def _kind(ds: Dataset) -> str:
    return {"PR": "GSPS", "OT": "SC"}.get(str(ds.Modality), str(ds.Modality))


def _no_canary(out: SeriesOutcome) -> None:
    text = " ".join([*out.copied, *out.skipped, *(o.text for o in out.outcomes)])
    for canary in CANARIES:
        assert canary not in text


def test_hashed_birth_date_and_long_accession_dx_makes_every_object(
    models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    ds = chest_dx()
    ds.PatientBirthDate = HASH
    ds.AccessionNumber = LONG_ACCESSION
    src = save(ds, tmp_path / "dx.dcm")
    out = run(models[CHEST[0]], CHEST[1], [src])
    objects = made_and_valid(out, CHEST[1], tmp_path / "out")
    for obj in objects:
        assert obj.PatientBirthDate == ""  # Type 2: empty
        assert obj.AccessionNumber == ""
        assert obj.PatientID == ds.PatientID  # the valid ones are copied
    assert "PatientBirthDate not copied (left empty): not a valid DA" in out.copied
    assert "AccessionNumber not copied (left empty): not a valid SH" in out.copied
    # the job's record: each object made, with the notes, and the job not partial
    for o in out.outcomes:
        assert o.made
        assert not o.failed
        assert "PatientBirthDate" in o.reason
        assert "AccessionNumber" in o.reason
        assert o.text.startswith(f"{o.kind} made (")
    _no_canary(out)
    # the spooled file is not changed
    assert pydicom.dcmread(src).PatientBirthDate == HASH


def test_hashed_birth_date_and_long_accession_ct_makes_every_object(
    models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    ds = pydicom.dcmread(CT)
    ds.PatientBirthDate = HASH
    ds.AccessionNumber = LONG_ACCESSION
    src = save(ds, tmp_path / "ct.dcm")
    for name, kinds in CT_MODELS:
        out = run(models[name], kinds, [src])
        made_and_valid(out, kinds, tmp_path / name)
        assert all(o.made and "PatientBirthDate" in o.reason for o in out.outcomes)
        _no_canary(out)


def test_exact_repairs_are_made_and_said(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CT)
    ds.StudyDate = "2020.01.31"  # ACR-NEMA: the same date
    ds.PatientSex = "F "
    (fixed,), notes = copy_for_encoding([pydicom.dcmread(save(ds, tmp_path / "a.dcm"))])
    assert fixed.StudyDate == "20200131"
    assert fixed.PatientSex == "F"
    assert "StudyDate repaired: DA padding or format corrected" in notes


def _with_name(ds: Dataset, charset: str | list[str], name: str, path: Path) -> Path:
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    return save(ds, path)


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO 2022 IR 100", "Buc^Jérôme"),
        (["", "ISO 2022 IR 87"], "name from chrH31"),
    ],
)
def test_iso_2022_source_makes_its_gsps_in_utf8(
    models: dict[str, LoadedModel], tmp_path: Path, charset: str | list[str], name: str
) -> None:
    if name == "name from chrH31":
        if not JAPANESE.exists():
            pytest.skip("no ISO 2022 IR 87 file in the corpus")
        name = str(pydicom.dcmread(JAPANESE).PatientName)
        assert "山田" in name
    src = _with_name(pydicom.dcmread(CT), charset, name, tmp_path / "ct.dcm")
    raw = src.read_bytes()
    assert b"\x1b" in raw or "ISO 2022 IR 100" in str(charset)  # code extensions in the file
    out = run(models["cds-ref-blob-detect"], ["GSPS", "SR", "SC"], [src])
    objects = made_and_valid(out, ["GSPS", "SR", "SC"], tmp_path / "out")
    for obj in objects:
        assert obj.SpecificCharacterSet == "ISO_IR 192"
        assert str(obj.PatientName) == name
    assert out.copied == []  # nothing dropped: only re-encoded


#: a value invalid for each copied attribute's VR (or its enumerated values)
BAD: dict[str, Any] = {
    "PatientName": "A" * 70,
    "PatientID": "P" * 70,
    "IssuerOfPatientID": "I" * 70,
    "PatientBirthDate": HASH,
    "PatientBirthTime": "99:99",
    "PatientSex": "X",
    "OtherPatientNames": "B" * 70,
    "EthnicGroup": "E" * 20,
    "PatientComments": "line\x01break",
    "StudyDate": "31/01/2020",
    "StudyTime": "25h61",
    "ReferringPhysicianName": "A^B^C^D^E^F",
    "StudyID": "S" * 20,
    "AccessionNumber": LONG_ACCESSION,
    "StudyDescription": "D" * 70,
    "PhysiciansOfRecord": "R" * 70,
    "NameOfPhysiciansReadingStudy": "N" * 70,
    "AdmittingDiagnosesDescription": "A" * 70,
    "PatientAge": "45 years",
    "PatientSize": "1,75",
    "PatientWeight": "seventy",
    "Occupation": "O" * 20,
    "AdditionalPatientHistory": "history\x02",  # LT: no control character but CR LF FF TAB
}


def test_the_mutation_table_covers_the_patient_and_study_attributes_of_every_image() -> None:
    """The 23 attributes of the Patient, General Study and Patient Study modules that
    image headers carry; every other one highdicom copies is mutated on the corpus
    (tests/results/test_mutation_corpus.py)."""
    assert set(BAD) <= set(COPIED)
    assert len(BAD) == 23


def test_copied_is_every_attribute_highdicom_copies() -> None:
    """``COPIED`` is what highdicom copies from a CT, MR, CR, DX or SC source (the root
    attributes of their Patient and Study modules): none escapes the policy."""
    from highdicom._standard_utils import (
        get_iod_module_map,
        get_module_attribute_map,
        get_sop_class_iod_map,
    )

    modules, attributes, iods = (
        get_iod_module_map(),
        get_module_attribute_map(),
        get_sop_class_iod_map(),
    )
    for sop_class in (CT_IMAGE, MR_IMAGE, CR_IMAGE, DX_IMAGE, SC_IMAGE):
        copied = {
            a["keyword"]
            for m in modules[iods[sop_class]]
            if m["ie"] in ("Patient", "Study")
            for a in attributes[m["key"]]
            if not a["path"]
        }
        # EthnicGroup (0010,2160), no longer in the tables highdicom copies by, stays
        # checked: image headers still carry it (the first table)
        assert copied | {"EthnicGroup"} == {*COPIED, "StudyInstanceUID"}, sop_class


@pytest.fixture(scope="module")
def counts() -> Iterator[dict[str, int]]:
    tally = {"runs": 0, "objects": 0}  # each object: dciodvfy asserted without error
    yield tally
    print(f"mutation test: {tally}")  # shown with -s


@pytest.mark.parametrize("keyword", sorted(BAD))
def test_each_invalid_copied_attribute_still_makes_every_object_of_a_dx(
    models: dict[str, LoadedModel],
    tmp_path: Path,
    keyword: str,
    counts: dict[str, int],
) -> None:
    """The SR, GSPS and SC of a DX with a finding (the corpus test puts these mutations
    through every routed series, none of which has a finding for the chest model: the SC
    is made here)."""
    ds = chest_dx()
    set_raw(ds, keyword, BAD[keyword])
    src = save(ds, tmp_path / "src.dcm")
    for name, kinds in [CHEST]:
        out = run(models[name], kinds, [src])
        objects = made_and_valid(out, kinds, tmp_path / name)
        counts["runs"] += 1
        counts["objects"] += len(objects)
        assert any(n.startswith(f"{keyword} ") for n in out.copied), out.copied
        assert all(o.made and keyword in o.reason for o in out.outcomes)
        text = " ".join(out.copied)
        assert str(BAD[keyword]) not in text


# --- the policy beyond the first table: sequences, conditions, modules, enumerations ----
def _copied(ds: Dataset, tmp_path: Path) -> tuple[Dataset, list[str]]:
    """``ds`` as a scanner wrote it, read back, through ``copy_for_encoding``; the copy
    made ahead (``copy_ahead``, during a study's quiet time) is the same copy, said alike."""
    path = save(ds, tmp_path / "src.dcm")
    (fixed,), notes = copy_for_encoding([pydicom.dcmread(path)])
    again = pydicom.dcmread(path)
    (ahead,), notes_ahead = copy_for_encoding([again], [copy_ahead(again)])
    assert notes_ahead == notes
    assert ahead == fixed
    return fixed, notes


def _valid_objects(models: dict[str, LoadedModel], ds: Dataset, tmp_path: Path) -> None:
    """The bone model's SEG and SR of ``ds``, made, each without a dciodvfy error (they
    copy every patient and study attribute)."""
    src = save(ds, tmp_path / "src.dcm")
    name, kinds = CT_MODELS[0]
    made_and_valid(run(models[name], kinds, [src]), kinds, tmp_path / "out")


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for kw, value in attributes.items():
        setattr(item, kw, value)
    return item


@pytest.mark.parametrize(
    ("charset", "issuer"),
    [("ISO_IR 100", "Hôpital Jérôme"), (["", "ISO 2022 IR 87"], "山田病院")],
)
def test_text_inside_a_copied_sequence_is_decoded(
    tmp_path: Path, charset: str | list[str], issuer: str
) -> None:
    """Items are rebuilt with decoded values: written in UTF-8 like the rest, not as the
    source's bytes (which an ISO_IR 192 object would misread)."""
    ds = pydicom.dcmread(CT)
    ds.SpecificCharacterSet = charset
    ds.OtherPatientIDsSequence = [_item(PatientID="X1", IssuerOfPatientID=issuer)]
    fixed, notes = _copied(ds, tmp_path)
    assert notes == []
    fixed.save_as(tmp_path / "copy.dcm", enforce_file_format=False)
    back = pydicom.dcmread(tmp_path / "copy.dcm", force=True)
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert back.OtherPatientIDsSequence[0].IssuerOfPatientID == issuer


def test_a_sequence_with_an_invalid_value_is_dropped_whole(
    models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    ds = pydicom.dcmread(CT)
    ds.ProcedureCodeSequence = [
        _item(CodeValue="1", CodingSchemeDesignator="99X", CodeMeaning="CANARY" + "M" * 64)
    ]
    ds.ReferencedStudySequence = [
        _item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID="1.2.3")
    ]
    fixed, notes = _copied(ds, tmp_path)
    assert "ProcedureCodeSequence" not in fixed
    assert "ReferencedStudySequence" in fixed  # valid: kept
    assert notes == ["ProcedureCodeSequence not copied: an item holds a value not valid for its VR"]
    _valid_objects(models, ds, tmp_path)


def test_a_clinical_trial_module_is_copied_whole_or_not_at_all(
    models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    ds = pydicom.dcmread(CT)
    ds.ClinicalTrialSponsorName = "Sponsor"
    ds.ClinicalTrialProtocolID = "P" * 70  # Type 1, not a valid LO
    ds.ClinicalTrialSubjectID = "S1"
    ds.ClinicalTrialSiteID = "Site"
    fixed, notes = _copied(ds, tmp_path)
    assert not any(kw.startswith("ClinicalTrial") for kw in fixed.dir())
    assert "ClinicalTrialProtocolID not copied: not a valid LO" in notes
    assert (
        "ClinicalTrialSponsorName not copied: the Clinical Trial Subject module is incomplete"
        in notes
    )
    _valid_objects(models, ds, tmp_path)
    # a complete one is copied, its missing Type 2 attributes added empty
    ds.ClinicalTrialProtocolID = "P1"
    fixed, notes = _copied(ds, tmp_path)
    assert (fixed.ClinicalTrialProtocolID, fixed.ClinicalTrialSiteName) == ("P1", None)
    assert notes == []
    _valid_objects(models, ds, tmp_path)


@pytest.mark.parametrize(
    ("attributes", "dropped"),
    [
        ({"PatientAlternativeCalendar": "JAPANESE"}, "PatientAlternativeCalendar"),
        ({"PatientBirthDateInAlternativeCalendar": "H31"}, "PatientBirthDateInAlternativeCalendar"),
        ({"ResponsiblePersonRole": "OWNER"}, "ResponsiblePersonRole"),
        ({"WindowCenter": "40", "WindowWidth": "wide"}, "WindowCenter"),
        ({"SmokingStatus": "MAYBE"}, "SmokingStatus"),
        ({"PatientIdentityRemoved": "Y"}, "PatientIdentityRemoved"),
        ({"PatientBreedDescription": "B" * 70}, "PatientBreedDescription"),
        ({"SpacingBetweenSlices": "-2.5"}, "SpacingBetweenSlices"),
        ({"LossyImageCompression": "1"}, "LossyImageCompression"),
    ],
)
def test_what_cannot_stand_alone_or_is_not_an_allowed_value_is_dropped(
    models: dict[str, LoadedModel], tmp_path: Path, attributes: dict[str, str], dropped: str
) -> None:
    """Type 1C conditions, the VOI LUT pair, enumerated values, a negative spacing, an
    animal's attribute on a patient of no species: dropped, said, valid."""
    ds = pydicom.dcmread(CT)
    for kw, value in attributes.items():
        set_raw(ds, kw, value)
    fixed, notes = _copied(ds, tmp_path)
    assert dropped not in fixed
    assert any(n.startswith(f"{dropped} not copied: ") for n in notes), notes
    _valid_objects(models, ds, tmp_path)


def test_an_unknown_character_set_is_said(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CT)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Buc^Jérôme"
    src = save(ds, tmp_path / "src.dcm")
    read = pydicom.dcmread(src)
    set_raw(read, "SpecificCharacterSet", "ISO_IR 999")
    (fixed,), notes = copy_for_encoding([read])
    assert notes == [f"SpecificCharacterSet {UNKNOWN_CHARACTER_SET}"]
    assert str(fixed.PatientName) == "Buc^Jérôme"  # pydicom's default repertoire: Latin-1
    assert fixed.SpecificCharacterSet == "ISO_IR 192"


def test_a_value_in_an_item_is_repaired_as_any_other(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CT)
    ds.OtherPatientIDsSequence = [_item(PatientID="X1", TypeOfPatientID=" TEXT")]
    fixed, notes = _copied(ds, tmp_path)
    assert fixed.OtherPatientIDsSequence[0].TypeOfPatientID == "TEXT"
    assert notes == [
        "OtherPatientIDsSequence repaired: padding or format of a value in an item corrected"
    ]


def test_setting_an_attribute_of_the_copy_leaves_the_source_unchanged(tmp_path: Path) -> None:
    """An encoder that repairs its copy (``complete``: a de-identified source that does
    not name the method) changes the copy alone: the source, which the next object of
    the series is built from, keeps what it said (the mutation corpus test's workers once
    saw one object's repair in the next job's sources)."""
    ds = pydicom.dcmread(CT)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = ""
    source = pydicom.dcmread(save(ds, tmp_path / "a.dcm"))
    source.PatientSex  # noqa: B018 (read: its element is converted in the source)
    (fixed,), _ = copy_for_encoding([source])
    complete(fixed)
    fixed.PatientSex = "F" if source.PatientSex != "F" else "M"
    assert fixed.DeidentificationMethod == "not stated in the source images"
    assert source.DeidentificationMethod == ""
    assert source.PatientSex == ds.PatientSex
    (again,), notes = copy_for_encoding([source])
    assert "DeidentificationMethod" not in again  # present (Type 1C) only with a value
    assert notes == []  # an empty value: nothing lost, nothing to say
