"""Read tolerantly, write strictly: the source attributes a result copies (issue 16).

Every builder hands highdicom the source images, and highdicom copies the root attributes of
their Patient, Clinical Trial Subject, General Study, Patient Study and Clinical Trial Study
modules into the result (``COPIED``); the builders themselves read a few attributes of the
source image (``IMAGE``: geometry, Modality LUT, window, lossy compression). Real sources hold
values that are not valid for their VR (an anonymiser's 56-character hash as a birth date, an
over-long accession number, a lowercase sex), and text in any character set, ISO 2022 code
extensions included. ``copy_for_encoding`` gives the encoders a copy of each source in which:

- each of these attributes is checked against its VR with pydicom's validators
  (``pydicom.valuerep.validate_value``: length, characters, format of DA, TM, DT, AS,
  CS, UI, IS, DS, LO, SH, PN...), its VM (a single-valued attribute with several
  values), its enumerated values (``ENUMERATED``: PatientSex M/F/O, SmokingStatus...)
  and what pydicom does not check (control characters in text, more than five PN
  components, a negative SpacingBetweenSlices);
- a copied sequence (OtherPatientIDsSequence, ProcedureCodeSequence,
  ReferencedStudySequence...) is checked the same way in every item, at every depth,
  and its text decoded like the rest: one invalid value drops the whole sequence;
- an exact repair is made where there is one (leading/trailing spaces of DA, TM, DT, AS,
  CS, IS, DS, UI; an ACR-NEMA date ``YYYY.MM.DD`` as ``YYYYMMDD``); anything else that
  is invalid is dropped: a Type 2 attribute becomes empty (a Type 2C one too, of an
  animal: its species says so), any other absent. A text over its length (LO, SH, PN)
  is dropped, never truncated: a truncated accession number or patient ID may be
  someone else's;
- what a result may carry only together is kept together (``NEEDS``): a Clinical
  Trial Subject module without a valid sponsor, protocol ID and subject (or reading)
  ID is left out whole, an alternative-calendar date goes with its calendar, a
  responsible person's role with the person, a window centre with its width;
- text is decoded by pydicom with the source's Specific Character Set (inside sequences
  too) and the copy says ISO_IR 192, so results are written in UTF-8 whatever the
  source's encoding; a Specific Character Set that is not a defined term is said in a
  note (pydicom then reads the text in its default repertoire).

Each drop or repair gives a note naming the attribute and why, never the value
("PatientBirthDate not copied: not a valid DA"). The source datasets are not changed,
nor are the spooled files: each copy holds elements of its own (their values shared,
binary ones still raw), so an encoder that sets an attribute of the copy changes the
copy alone. The UIDs that
place a result (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) are not repaired:
the node refuses an instance whose UIDs are not valid when it receives it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from pydicom import config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName, validate_value

from cds.results.copied_attributes import (
    BINARY,
    COPIED,
    ENUMERATED,
    IMAGE,
    NEEDS,
    NOT_NEGATIVE,
    PADDED,
    SPECIES,
    STRING_VRS,
    SUBJECT_IDS,
    TAGS,
    TEXT,
    TRIAL_STUDY,
    TRIAL_SUBJECT,
)

__all__ = [
    "COPIED",
    "ENUMERATED",
    "IMAGE",
    "UNKNOWN_CHARACTER_SET",
    "Copied",
    "copy_ahead",
    "copy_for_encoding",
]

_PN_COMPONENTS = 5
_ACR_NEMA_DATE = 10  # "YYYY.MM.DD"
UTF8 = "ISO_IR 192"
#: the note on a source whose Specific Character Set pydicom does not know
UNKNOWN_CHARACTER_SET = (
    "not a defined term: text decoded as pydicom reads it (its default character "
    "repertoire where it cannot tell)"
)
_CHARSET = 0x00080005
#: the verdicts of ``_checked`` by (keyword, VR, value), for one call of copy_for_encoding
_Memo = dict[tuple[str, str, object], tuple[object | None, str | None]]


#: one source's copy and what was said of it (``copy_ahead``)
Copied = tuple[Dataset, dict[str, str]]


def copy_for_encoding(
    sources: Sequence[Dataset], ready: Sequence[Copied | None] | None = None
) -> tuple[list[Dataset], list[str]]:
    """A copy of each source for the encoders (see the module), and the notes of what was
    dropped or repaired, each attribute once ("PatientBirthDate not copied: not a valid
    DA"), never a value. ``ready``: per source, its ``copy_ahead`` (made while the study
    was quiet) or None; a copy is used once (the encoders may complete it)."""
    notes: dict[str, str] = {}
    copies = []
    memo: _Memo = {}
    for i, ds in enumerate(sources):
        done = ready[i] if ready is not None else None
        fixed, said = done if done is not None else _copy(ds, memo)
        copies.append(fixed)
        for kw, why in said.items():
            notes.setdefault(kw, why)
    return copies, [f"{kw} {why}" for kw, why in notes.items()]


def copy_ahead(ds: Dataset) -> Copied:
    """``copy_for_encoding`` of one source, made ahead (``cds.inference.preread``): the
    same copy and notes (the verdicts depend on the value only)."""
    return _copy(ds, {})


def _copy(ds: Dataset, memo: _Memo) -> Copied:
    said: dict[str, str] = {}
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    failed: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote the values
        if not _known_character_set(ds):
            said["SpecificCharacterSet"] = UNKNOWN_CHARACTER_SET
        for tag in list(ds.keys()):
            _copy_element(ds, tag, elements, failed, said)
        fixed = Dataset(elements)  # built at once: Dataset.__setitem__ per element is slow
        if hasattr(ds, "file_meta"):
            fixed.file_meta = ds.file_meta
        for kw, why in failed.items():
            _drop(fixed, kw, why, said)
        for kw in (*COPIED, *IMAGE):
            tag = TAGS[kw]
            if tag in elements and fixed[tag].VR != "SQ":
                _check(fixed, kw, said, memo)
    _keep_together(fixed, said)
    fixed[_CHARSET] = DataElement(_CHARSET, "CS", UTF8)
    return fixed, said


def _copy_element(
    ds: Dataset,
    tag: BaseTag,
    elements: dict[BaseTag, DataElement | RawDataElement],
    failed: dict[str, str],
    said: dict[str, str],
) -> None:
    """``ds[tag]`` into ``elements``, its text decoded (a copied sequence: in every item,
    exact repairs made and ``said``); an attribute of ``COPIED`` or ``IMAGE`` that
    cannot be read, or a copied sequence with an invalid value, into ``failed``."""
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement) and raw.VR in BINARY:
        elements[tag] = raw  # no text: read when used, whatever the character set
        return
    name = keyword_for_tag(tag)
    try:
        elem = ds[tag]  # decoded with the source's character set
        if name in COPIED and elem.VR == "SQ":
            elem, status = _plain_sequence(elem)
            if status == "invalid":
                failed[name] = "an item holds a value not valid for its VR"
                return
            if status == "repaired":
                said[name] = "repaired: padding or format of a value in an item corrected"
    except Exception:  # a value pydicom cannot convert at all (DS 'seventy')
        if name in COPIED or name in IMAGE:
            failed[name] = f"not a valid {dictionary_VR(tag)}"
        return
    if elem.VR == "PN" and elem.value not in (None, ""):
        elem = _plain_pn(elem)
    elif elem is ds.get_item(tag):
        # the copy's own element (its value shared): an encoder that sets the copy's
        # attribute (``complete``) changes the element in place, never the source's,
        # which the next object built from it and the caller still hold
        elem = _own(elem)
    elements[tag] = elem


def _own(elem: DataElement) -> DataElement:
    """A new element with the same attributes as ``elem`` (its value shared): what
    ``copy.copy`` makes, without its generic reconstruction (a fifth of the cost)."""
    new: DataElement = DataElement.__new__(DataElement)
    new.__dict__.update(elem.__dict__)
    return new


def _check(fixed: Dataset, kw: str, said: dict[str, str], memo: _Memo) -> None:
    """``fixed[kw]`` kept, repaired or dropped (``_checked``), and said; the verdicts on
    values already seen (the images of a series share most of them) from ``memo``."""
    elem = fixed[TAGS[kw]]
    value = elem.value
    key = (kw, elem.VR, tuple(value) if isinstance(value, MultiValue | list) else value)
    try:
        value, why = memo[key]
    except KeyError:
        value, why = memo[key] = _checked(kw, elem)
    except TypeError:  # a value that cannot be a key
        value, why = _checked(kw, elem)
    if why is None:
        return
    if value is not None:
        fixed[elem.tag] = DataElement(elem.tag, elem.VR, value)
        said[kw] = f"repaired: {why}"
    else:
        _drop(fixed, kw, why, said)


def _known_character_set(ds: Dataset) -> bool:
    """Whether every value of the source's Specific Character Set is a defined term."""
    value = ds.get("SpecificCharacterSet", "")
    values = list(value) if isinstance(value, MultiValue | list) else [value]
    return all(str(v).strip() in python_encoding for v in values)


def _drop(fixed: Dataset, kw: str, why: str, said: dict[str, str]) -> None:
    """A Type 2 or 2C attribute left empty, any other absent, and the note saying so."""
    tag = Tag(kw)
    if COPIED.get(kw, IMAGE.get(kw)) in ("2", "2C"):
        vr = dictionary_VR(tag)
        fixed[tag] = DataElement(tag, vr, [] if vr == "SQ" else None)
        said[kw] = f"not copied (left empty): {why}"
    else:
        if tag in fixed:
            del fixed[tag]
        said[kw] = f"not copied: {why}"


def _has(fixed: Dataset, kw: str) -> bool:
    return TAGS[kw] in fixed


def _present(fixed: Dataset, kw: str) -> bool:
    tag = TAGS[kw]
    return tag in fixed and fixed[tag].value not in (None, "", [])


def _keep_together(fixed: Dataset, said: dict[str, str]) -> None:
    """What PS3.3 asks to be present together (``NEEDS``, whole modules), after the
    drops: a copy never holds half of it."""
    for kw, needs in NEEDS:
        if not _has(fixed, kw) or not (_present(fixed, kw) or COPIED.get(kw) != "2C"):
            continue  # absent, or an empty 2C attribute (it needs nothing)
        if not any(_present(fixed, n) for n in needs):
            _drop(fixed, kw, f"without a valid {' or '.join(needs)}", said)
    for kw, kind in (*COPIED.items(), *IMAGE.items()):
        if kind in ("1", "1C") and _has(fixed, kw) and not _present(fixed, kw):
            # present means with a value: an empty one is invalid whether its condition
            # holds or not. Left out without a note: no value is lost (a de-identified
            # source's empty DeidentificationMethod: ``complete`` says it is not stated)
            del fixed[TAGS[kw]]
    _whole_module(fixed, TRIAL_SUBJECT, "Clinical Trial Subject", said)
    _whole_module(fixed, TRIAL_STUDY, "Clinical Trial Study", said)
    if not any(_present(fixed, k) for k in SPECIES):
        # the Type 2C attributes of the Patient module are an animal's (which its species
        # says): of anyone else an empty one is left out (dciodvfy takes an empty breed
        # for an animal's, and then asks for its species)
        for kw, kind in COPIED.items():
            if kind == "2C" and _has(fixed, kw) and not _present(fixed, kw):
                _left_out(fixed, kw, "empty, and the source names no species", said)


def _whole_module(fixed: Dataset, module: dict[str, str], name: str, said: dict[str, str]) -> None:
    """``module`` complete in ``fixed`` (its Type 1 attributes valid, one of its subject
    IDs, its Type 2 ones present, empty if need be), or left out whole."""
    present = [kw for kw in module if _has(fixed, kw)]
    if not present:
        return
    complete = all(_present(fixed, kw) for kw, t in module.items() if t == "1")
    complete = complete and any(_present(fixed, kw) for kw in present)  # not all emptied
    if module is TRIAL_SUBJECT:
        complete = complete and any(_present(fixed, kw) for kw in SUBJECT_IDS)
    if complete:
        for kw, t in module.items():
            if t == "2" and not _has(fixed, kw):
                fixed[Tag(kw)] = DataElement(Tag(kw), dictionary_VR(kw), None)
        return
    for kw in present:
        _left_out(fixed, kw, f"the {name} module is incomplete", said)


def _left_out(fixed: Dataset, kw: str, why: str, said: dict[str, str]) -> None:
    """``kw`` taken out of ``fixed`` (even an empty one), its note saying so."""
    del fixed[Tag(kw)]
    said[kw] = said[kw].replace(" (left empty)", "") if kw in said else f"not copied: {why}"


def _plain_pn(elem: DataElement) -> DataElement:
    """``elem`` as decoded text (PersonName objects keep their source encodings)."""
    if isinstance(elem.value, MultiValue | list):
        value: object = [PersonName(str(v)) for v in elem.value]
    else:
        value = PersonName(str(elem.value))
    return DataElement(elem.tag, elem.VR, value)


def _plain_sequence(elem: DataElement) -> tuple[DataElement, str | None]:
    """A copy of the sequence ``elem`` whose items hold decoded values (written in the
    result's character set, not as the source's bytes), exact repairs made (as
    ``_checked`` makes them), and what was found: None (all valid), "repaired" or
    "invalid" (a value not valid for its VR, and no exact repair)."""
    items = []
    found: str | None = None
    for item in elem.value:
        out = Dataset()
        for tag in list(item.keys()):
            inner = item[tag]  # decoded with the character set of the source
            if inner.VR == "SQ":
                inner, status = _plain_sequence(inner)
            else:
                if inner.VR == "PN" and inner.value not in (None, ""):
                    inner = _plain_pn(inner)
                value, why = _checked(inner.keyword, inner)
                status = None if why is None else "invalid" if value is None else "repaired"
                if status == "repaired":
                    inner = DataElement(inner.tag, inner.VR, value)
            if status == "invalid":
                return elem, status
            found = found or status
            out[tag] = inner
        items.append(out)
    return DataElement(elem.tag, "SQ", items), found


def _checked(kw: str, elem: DataElement) -> tuple[object | None, str | None]:
    """(repaired value or None, why) when ``elem`` is not valid; (None, None) when it is.

    A repaired value comes with why it was repaired; None with a reason means drop.
    """
    raw = elem.value
    if raw is None or raw == "":
        return None, None
    vr = dictionary_VR(kw) if kw else elem.VR
    if elem.VR not in vr.split(" or "):
        return None, f"not of its VR {vr}"
    values = list(raw) if isinstance(raw, MultiValue | list) else [raw]
    if kw and dictionary_VM(kw) == "1" and len(values) > 1:
        return None, "more than one value"
    texts = [str(v) for v in values]
    if elem.VR not in STRING_VRS:  # binary (US, FD): only its enumerated values
        return None, _enumerated(kw, texts)
    repaired = [t.strip(" \x00") if elem.VR in PADDED else t for t in texts]
    if elem.VR == "DA":
        repaired = [_acr_nema_date(t) for t in repaired]
    why = _invalid(kw, elem.VR, repaired)
    if why is not None or repaired == texts:
        return None, why
    value = repaired[0] if len(repaired) == 1 else repaired
    return value, f"{elem.VR} padding or format corrected"


def _invalid(kw: str, vr: str, texts: list[str]) -> str | None:
    """Why the values ``texts`` of ``kw`` are not valid, or None."""
    if not all(_valid(vr, t) for t in texts):
        return f"not a valid {vr}"
    if kw in NOT_NEGATIVE and any(t.startswith("-") for t in texts):
        return "negative"
    return _enumerated(kw, texts)


def _enumerated(kw: str, texts: list[str]) -> str | None:
    allowed = ENUMERATED.get(kw)
    if allowed is None or all(t in allowed for t in texts if t != ""):
        return None
    return "not one of its enumerated values"


def _valid(vr: str, text: str) -> bool:
    if text == "":
        return True
    try:
        validate_value(vr, text, config.RAISE)
    except (ValueError, TypeError):
        return False
    if vr in TEXT and any(ord(c) < 0x20 and c not in "\r\n\t\f" for c in text):
        return False  # control characters (ESC of an undecoded code extension)
    if vr in ("LO", "SH", "PN", "CS") and any(c in "\r\n\f" for c in text):
        return False  # a single-line VR
    return not (vr == "PN" and any(g.count("^") >= _PN_COMPONENTS for g in text.split("=")))


def _acr_nema_date(text: str) -> str:
    """``YYYY.MM.DD`` (ACR-NEMA) as ``YYYYMMDD``: the same date, exactly."""
    if len(text) == _ACR_NEMA_DATE and text[4] == "." and text[7] == ".":
        return text.replace(".", "")
    return text
