"""issue 7, privacy: the Basic Profile (PS3.15 E.1.1) applied with keyed pseudonyms and UIDs;
refusal where burned-in text is possible; the key kept on site."""

from __future__ import annotations

import copy
import shutil
import stat
import subprocess
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from cds.privacy.deid import (
    Deidentifier,
    DeidRefused,
    check_burned_in,
    key_id,
    load_key,
)
from cds.privacy.profile import SAFE_TEXT

CANARY = "CANARYX"


def canary_dataset(ds: Dataset) -> Dataset:
    """Every PN/LO/SH/DA/TM/DT/ST/LT and a private tag of ``ds`` set to canaries."""
    ds.PatientName = f"{CANARY}NAME^JEANNE"
    ds.PatientID = f"{CANARY}PID"
    ds.PatientBirthDate = "19010203"
    ds.AccessionNumber = f"{CANARY}ACC"
    ds.InstitutionName = f"{CANARY} HOSPITAL"
    ds.ReferringPhysicianName = f"{CANARY}DOC^PAUL"
    ds.StudyDescription = f"{CANARY} STUDY"
    ds.SeriesDescription = f"{CANARY} SERIES"
    ds.StudyDate = "19010204"
    ds.StudyTime = "010203"
    ds.OperatorsName = f"{CANARY}OPERATOR"
    ds.ImageComments = f"{CANARY} COMMENT"
    ds.add_new(0x00091010, "LO", f"{CANARY} PRIVATE")
    ds.add_new(0x00090010, "LO", f"{CANARY} CREATOR")
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7"
    item.add_new(0x00091001, "SH", f"{CANARY}INSEQ")
    ds.ReferencedImageSequence = Sequence([item])
    for elem in list(ds.iterall()):
        if elem.keyword in SAFE_TEXT:  # device descriptors and codes, kept on purpose
            continue
        if elem.VR in ("PN", "LO", "SH") and CANARY not in str(elem.value):
            elem.value = f"{CANARY}{elem.VR}"
        elif elem.VR == "DA":
            elem.value = "19010205"
        elif elem.VR == "TM":
            elem.value = "235959"
    return ds


def written(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def ct(corpus: Path) -> Dataset:
    return canary_dataset(dcmread(corpus / "ct" / "CT_small.dcm"))


def test_no_identifying_value_survives(ct: Dataset) -> None:
    before = written(ct)
    assert CANARY.encode() in before
    ds = Deidentifier(b"k" * 32).apply(copy.deepcopy(ct))
    raw = written(ds)
    assert CANARY.encode() not in raw
    for value in (b"19010203", b"19010204", b"19010205", b"235959", b"010203"):
        assert value not in raw, value
    assert raw[:128] == b"\0" * 128
    assert not any(e.tag.is_private for e in ds.iterall())
    assert ds.PatientIdentityRemoved == "YES"
    (code,) = ds.DeidentificationMethodCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert ds.DeidentificationMethod
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.PatientName.family_name == "ANON"
    assert ds.SOPClassUID == ct.SOPClassUID  # classes are kept
    assert ds.Rows == ct.Rows
    assert ds.PixelData == ct.PixelData  # pixels untouched


def test_uids_and_pseudonyms_are_consistent_under_one_key(ct: Dataset) -> None:
    a = Deidentifier(b"k" * 32).apply(copy.deepcopy(ct))
    b = Deidentifier(b"k" * 32).apply(copy.deepcopy(ct))
    other = Deidentifier(b"o" * 32).apply(copy.deepcopy(ct))
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert a[kw].value == b[kw].value, kw
        assert a[kw].value != ct[kw].value, kw
        assert a[kw].value != other[kw].value, kw
        assert a[kw].value.startswith("2.25."), kw
        assert len(a[kw].value) <= 64
    assert a.PatientID == b.PatientID != other.PatientID
    ref = a.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == Deidentifier(b"k" * 32).uid("1.2.3.4.5.6.7")
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID


def test_key_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "deid.key"
    key = load_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == key
    assert key_id(key) == key_id(load_key(path))
    assert key.hex() not in key_id(key)


@pytest.mark.parametrize(
    ("attrs", "field"),
    [
        ({"Modality": "US"}, "(0028,0301) BurnedInAnnotation absent"),
        ({"Modality": "OT"}, "(0028,0301) BurnedInAnnotation absent"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "(0028,0301) BurnedInAnnotation absent"),
        ({"BurnedInAnnotation": "YES"}, "(0028,0301) BurnedInAnnotation is YES"),
        ({"RecognizableVisualFeatures": "YES"}, "(0028,0302) RecognizableVisualFeatures"),
    ],
)
def test_burned_in_possible_is_refused(ct: Dataset, attrs: dict[str, str], field: str) -> None:
    for k, v in attrs.items():
        setattr(ct, k, v)
    with pytest.raises(DeidRefused) as err:
        check_burned_in(ct, "img042.dcm")
    assert str(err.value).startswith("img042.dcm: ")
    assert field in str(err.value)
    assert CANARY not in str(err.value)


def test_burned_in_cleared_or_unusual_is_exported(ct: Dataset, corpus: Path) -> None:
    check_burned_in(ct, "ct.dcm")  # CT, absent: not prone
    us = dcmread(corpus / "us" / "US1_UNCR_GE_LOGIQ700_rgb.dcm")
    with pytest.raises(DeidRefused):
        check_burned_in(us, "us.dcm")
    us.BurnedInAnnotation = "NO"
    check_burned_in(us, "us.dcm")


def test_output_passes_dciodvfy(ct: Dataset, tmp_path: Path) -> None:
    """What the profile leaves is still a valid object (no error from dciodvfy that the
    source did not already have)."""
    tool = shutil.which("dciodvfy", path="/usr/bin")
    if tool is None:
        pytest.skip("dciodvfy not installed")
    src = tmp_path / "src.dcm"
    ct.save_as(src, enforce_file_format=True)
    out = tmp_path / "out.dcm"
    Deidentifier(b"k" * 32).apply(copy.deepcopy(ct)).save_as(out, enforce_file_format=True)

    def errors(path: Path) -> set[str]:
        r = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
        return {
            line.split(" - ", 1)[-1]
            for line in (r.stdout + r.stderr).splitlines()
            if line.startswith("Error")
        }

    new = errors(out) - errors(src)
    assert not new, new


def test_modified_dates_option_keeps_intervals(ct: Dataset) -> None:
    """Retain Longitudinal Temporal Information with Modified Dates (113107): one keyed shift
    per patient, so two studies of a patient keep their interval; declared in the object."""
    deid = Deidentifier(b"k" * 32, modified_dates=True)
    first, later = copy.deepcopy(ct), copy.deepcopy(ct)
    first.StudyDate, later.StudyDate = "20240110", "20240305"  # 55 days apart
    later.AcquisitionDateTime = "20240305101500"
    a, b = deid.apply(first), deid.apply(later)
    shift = deid.date_shift_days(f"{CANARY}PID")
    assert 1 <= shift <= 3650
    from datetime import date

    da, db = (date.fromisoformat(x.StudyDate) for x in (a, b))
    assert (db - da).days == 55
    assert a.StudyDate != "20240110"
    assert b.AcquisitionDateTime.endswith("101500")
    assert b.AcquisitionDateTime[:8] == b.StudyDate
    assert a.PatientBirthDate == ""  # other dates as without the option
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [c.CodeValue for c in a.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107"]
    assert deid.options == ("Retain Longitudinal Temporal Information with Modified Dates",)
