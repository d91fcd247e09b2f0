"""The synthetic test studies ``cds certify pacs`` sends: no patient data.

Built with ``cds.demo_study`` (a head-like CT phantom that the reference CT models
analyse), then marked as a certification test: the patient is ``CDS^CERTIFY``, the
study description says it is a test, fresh UIDs each run. Three kinds: the routed
study (goes through the PACS to cds), the character-set study (UTF-8, French accents
in the descriptions) and the large study (``--large`` slices of 512 x 512).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from cds.demo_study import synthetic_ct

PATIENT_NAME = "CDS^CERTIFY"
PATIENT_ID = "CDS-CERTIFY-TEST"
MARK = "CDS CERTIFY TEST - synthetic, no patient"
#: the character-set check's texts (ISO_IR 192; LO: at most 64 characters): French
#: accents, a ligature and a dash that Latin-1 (ISO_IR 100) cannot hold
FRENCH_STUDY = "CDS CERTIFY \u2013 contrôle : été, garçon, naïve, œuvre, à côté"
FRENCH_SERIES = "Scanner tête (synthétique) \u2013 épaisseur 2,5 mm"


@dataclass(frozen=True)
class TestStudy:
    study_uid: str
    series_uid: str
    files: list[Path]

    @property
    def megabytes(self) -> float:
        return sum(f.stat().st_size for f in self.files) / 1e6


def _mark(files: list[Path], charset: str, study: str, series: str) -> None:
    for f in files:
        ds = dcmread(f)
        ds.SpecificCharacterSet = charset
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = ""
        ds.AccessionNumber = ""
        ds.StudyDescription = study
        ds.SeriesDescription = series
        ds.Manufacturer = "cds certify (synthetic test)"
        ds.PatientComments = MARK
        ds.save_as(f, enforce_file_format=True)


def routed_study(folder: Path, slices: int = 12) -> TestStudy:
    """The study that goes through the PACS to cds (routable by an adult-CT rule)."""
    s = synthetic_ct(folder, slices=slices, size=128)
    _mark(s.files, "ISO_IR 100", MARK, "Synthetic head CT 2.5 mm")
    return TestStudy(s.study_uid, s.series_uid, s.files)


def charset_study(folder: Path) -> TestStudy:
    """One slice in UTF-8 (ISO_IR 192) with French accents in its descriptions."""
    s = synthetic_ct(folder, slices=1, size=64)
    _mark(s.files, "ISO_IR 192", FRENCH_STUDY, FRENCH_SERIES)
    return TestStudy(s.study_uid, s.series_uid, s.files)


def large_study(folder: Path, slices: int) -> TestStudy:
    """``slices`` CT slices of 512 x 512 (16-bit: 0.5 MB each)."""
    s = synthetic_ct(folder, slices=slices, size=512)
    _mark(s.files, "ISO_IR 100", MARK, f"Synthetic head CT, {slices} slices 512x512")
    return TestStudy(s.study_uid, s.series_uid, s.files)
