"""issue 16: read tolerantly, write strictly (``cds.results.copied``).

Dirty source attributes (an anonymiser's hash as a birth date, an over-long accession
number, any invalid value of its VR) and any source character set (ISO 2022 code
extensions included) no longer cost the radiologist a result: every object is made
through the node's per-series step (``process_series`` + ``write_results``), valid
(dciodvfy: no error), in UTF-8, and what was not copied is said by attribute name in the
job's record, never by value.
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
from cds.results.copied import COPIED, copy_for_encoding
from cds.results.encode import write_results

REPO = Path(__file__).resolve().parents[2]
DICOM = REPO.parent / "shared" / "dicom"
DX = DICOM / "cr_dx" / "NIH_chestxray_DX_sample.dcm"
CT = DICOM / "ct" / "CT_small.dcm"
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


def test_the_mutation_table_covers_every_copied_attribute() -> None:
    assert set(BAD) == set(COPIED)


@pytest.fixture(scope="module")
def counts() -> Iterator[dict[str, int]]:
    tally = {"runs": 0, "objects": 0}  # each object: dciodvfy asserted without error
    yield tally
    print(f"mutation test: {tally}")  # shown with -s


@pytest.mark.parametrize("source", ["CT", "DX"])
@pytest.mark.parametrize("keyword", sorted(BAD))
def test_each_invalid_copied_attribute_still_makes_every_object(
    models: dict[str, LoadedModel],
    tmp_path: Path,
    keyword: str,
    source: str,
    counts: dict[str, int],
) -> None:
    ds = pydicom.dcmread(CT) if source == "CT" else chest_dx()
    set_raw(ds, keyword, BAD[keyword])
    src = save(ds, tmp_path / "src.dcm")
    plan = list(CT_MODELS) if source == "CT" else [CHEST]
    for name, kinds in plan:
        out = run(models[name], kinds, [src])
        objects = made_and_valid(out, kinds, tmp_path / name)
        counts["runs"] += 1
        counts["objects"] += len(objects)
        assert any(n.startswith(f"{keyword} ") for n in out.copied), out.copied
        assert all(o.made and keyword in o.reason for o in out.outcomes)
        text = " ".join(out.copied)
        assert str(BAD[keyword]) not in text
