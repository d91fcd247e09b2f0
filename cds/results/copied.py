"""Read tolerantly, write strictly: the source attributes a result copies (issue 16).

Every builder hands highdicom the source images, and highdicom copies their Patient,
General Study and Patient Study attributes into the result. Real sources hold values
that are not valid for their VR (an anonymiser's 56-character hash as a birth date, an
over-long accession number, a lowercase sex), and in any character set, ISO 2022 code
extensions included. ``copy_for_encoding`` gives the encoders a copy of each source in
which:

- each copied attribute (``COPIED``) is checked against its VR with pydicom's
  validators (``pydicom.valuerep.validate_value``: length, characters, format of DA, TM,
  DT, AS, CS, UI, IS, DS, LO, SH, PN), its VM (a single-valued attribute with several
  values) and what pydicom does not check (control characters in text, more than five
  PN components, PatientSex outside M/F/O);
- an exact repair is made where there is one (leading/trailing spaces of DA, TM, DT, AS,
  CS, IS, DS, UI; an ACR-NEMA date ``YYYY.MM.DD`` as ``YYYYMMDD``); anything else that
  is invalid is dropped: a Type 2 attribute becomes empty, a Type 3 one absent. A text
  over its length (LO, SH, PN) is dropped, never truncated: a truncated accession
  number or patient ID may be someone else's;
- text is decoded by pydicom with the source's Specific Character Set and the copy
  says ISO_IR 192, so results are written in UTF-8 whatever the source's encoding.

Each drop or repair gives a note naming the attribute and why, never the value
("PatientBirthDate not copied: not a valid DA"). The source datasets are not changed
(their elements are shared, never modified), nor are the spooled files.
Type 1 attributes (StudyInstanceUID) are not repaired: without them no result is made.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from pydicom import config
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import PersonName, validate_value

#: the attributes highdicom copies from a source into every result, with their Type in
#: the Patient, General Study and Patient Study modules (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2)
COPIED: dict[str, int] = {
    "PatientName": 2,
    "PatientID": 2,
    "IssuerOfPatientID": 3,
    "PatientBirthDate": 2,
    "PatientBirthTime": 3,
    "PatientSex": 2,
    "OtherPatientNames": 3,
    "EthnicGroup": 3,
    "PatientComments": 3,
    "StudyDate": 2,
    "StudyTime": 2,
    "ReferringPhysicianName": 2,
    "StudyID": 2,
    "AccessionNumber": 2,
    "StudyDescription": 3,
    "PhysiciansOfRecord": 3,
    "NameOfPhysiciansReadingStudy": 3,
    "AdmittingDiagnosesDescription": 3,
    "PatientAge": 3,
    "PatientSize": 3,
    "PatientWeight": 3,
    "Occupation": 3,
    "AdditionalPatientHistory": 3,
}
#: VRs whose leading and trailing spaces are not significant (removing them is exact)
_PADDED = frozenset(("DA", "TM", "DT", "AS", "CS", "IS", "DS", "UI"))
_TEXT = frozenset(("LO", "SH", "PN", "CS", "LT", "ST", "UT", "UC"))
_SEXES = frozenset(("M", "F", "O"))
_PN_COMPONENTS = 5
_ACR_NEMA_DATE = 10  # "YYYY.MM.DD"
UTF8 = "ISO_IR 192"
_CHARSET = 0x00080005


def copy_for_encoding(sources: Sequence[Dataset]) -> tuple[list[Dataset], list[str]]:
    """A copy of each source for the encoders (see the module), and the notes of what was
    dropped or repaired, each attribute once ("PatientBirthDate not copied: not a valid
    DA"), never a value."""
    notes: dict[str, str] = {}
    copies = []
    for ds in sources:
        fixed, said = _copy(ds)
        copies.append(fixed)
        for kw, why in said.items():
            notes.setdefault(kw, why)
    return copies, [f"{kw} {why}" for kw, why in notes.items()]


def _copy(ds: Dataset) -> tuple[Dataset, dict[str, str]]:
    said: dict[str, str] = {}
    fixed = Dataset()
    if hasattr(ds, "file_meta"):
        fixed.file_meta = ds.file_meta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote the values
        for tag in list(ds.keys()):
            try:
                elem = ds[tag]  # decoded with the source's character set
            except Exception:  # a value pydicom cannot convert at all (DS 'seventy')
                if (name := keyword_for_tag(tag)) in COPIED:
                    _drop(fixed, name, f"not a valid {dictionary_VR(tag)}", said)
                continue
            if elem.VR == "PN" and elem.value not in (None, ""):
                elem = _plain_pn(elem)
            fixed[tag] = elem
        for kw in COPIED:
            if kw not in fixed:
                continue
            elem = fixed[kw]
            value, why = _checked(kw, elem)
            if why is None:
                continue
            if value is not None:
                fixed[elem.tag] = DataElement(elem.tag, elem.VR, value)
                said[kw] = f"repaired: {why}"
            else:
                _drop(fixed, kw, why, said)
    # a new element: the source's is shared, never changed
    fixed[_CHARSET] = DataElement(_CHARSET, "CS", UTF8)
    return fixed, said


def _drop(fixed: Dataset, kw: str, why: str, said: dict[str, str]) -> None:
    """A Type 2 attribute left empty, a Type 3 one absent, and the note saying so."""
    tag = Tag(kw)
    if COPIED[kw] == 2:
        fixed[tag] = DataElement(tag, dictionary_VR(tag), None)
        said[kw] = f"not copied (left empty): {why}"
    else:
        if tag in fixed:
            del fixed[tag]
        said[kw] = f"not copied: {why}"


def _plain_pn(elem: DataElement) -> DataElement:
    """``elem`` as decoded text (PersonName objects keep their source encodings)."""
    if isinstance(elem.value, MultiValue | list):
        value: object = [PersonName(str(v)) for v in elem.value]
    else:
        value = PersonName(str(elem.value))
    return DataElement(elem.tag, elem.VR, value)


def _checked(kw: str, elem: DataElement) -> tuple[object | None, str | None]:
    """(repaired value or None, why) when ``elem`` is not valid; (None, None) when it is.

    A repaired value comes with why it was repaired; None with a reason means drop.
    """
    vr = dictionary_VR(kw)
    raw = elem.value
    if raw is None or raw == "":
        return None, None
    if vr != elem.VR:
        return None, f"not of its VR {vr}"
    values = list(raw) if isinstance(raw, MultiValue | list) else [raw]
    if dictionary_VM(kw) == "1" and len(values) > 1:
        return None, "more than one value"
    texts = [str(v) for v in values]
    repaired = [t.strip(" \x00") if vr in _PADDED else t for t in texts]
    if vr == "DA":
        repaired = [_acr_nema_date(t) for t in repaired]
    for t in repaired:
        if not _valid(kw, vr, t):
            return None, f"not a valid {vr}"
    if repaired == texts:
        return None, None
    value = repaired[0] if len(repaired) == 1 else repaired
    return value, f"{vr} padding or format corrected"


def _valid(kw: str, vr: str, text: str) -> bool:
    if text == "":
        return True
    try:
        validate_value(vr, text, config.RAISE)
    except (ValueError, TypeError):
        return False
    if vr in _TEXT and any(ord(c) < 0x20 and c not in "\r\n\t\f" for c in text):
        return False  # control characters (ESC of an undecoded code extension)
    if vr in ("LO", "SH", "PN", "CS") and any(c in "\r\n\f" for c in text):
        return False  # a single-line VR
    if vr == "PN" and any(g.count("^") >= _PN_COMPONENTS for g in text.split("=")):
        return False
    return not (kw == "PatientSex" and text not in _SEXES)


def _acr_nema_date(text: str) -> str:
    """``YYYY.MM.DD`` (ACR-NEMA) as ``YYYYMMDD``: the same date, exactly."""
    if len(text) == _ACR_NEMA_DATE and text[4] == "." and text[7] == ".":
        return text.replace(".", "")
    return text
