"""issue 5: the texts of every result object pass DCMTK's checks and keep French accents.

DCMTK's dcmpschk reads text values byte by byte as Latin-1: a UTF-8 character
holding a byte in 0x80..0x9F (the em dash E2 80 94, 'É' C3 89) is taken for a
C1 control character and refused. The advisory texts use ASCII punctuation;
lower-case accented letters (C3 A0..BF) pass and stay.
"""

from __future__ import annotations

import subprocess
from dataclasses import astuple
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from cds.domain import ResultRef
from cds.i18n import LANGS, advisory
from cds.inference import manifest as mf
from cds.results.gsps import build_gsps
from cds.results.kos import build_rejection_kos
from cds.results.sc import build_sc
from cds.results.seg import build_seg
from cds.results.sr import build_sr
from tests.results.test_sr import dciodvfy, manifest, slices, synthetic_result

__all__ = ["manifest", "slices"]  # fixtures shared with test_sr

DCMPSCHK = "/usr/bin/dcmpschk"


def c1_bytes(text: str) -> set[str]:
    """The characters of ``text`` whose UTF-8 holds a byte DCMTK takes for C1 control."""
    return {c for c in text if any(0x80 <= b <= 0x9F for b in c.encode("utf-8"))}


@pytest.mark.parametrize("lang", LANGS)
def test_advisory_texts_hold_no_byte_dcmtk_takes_for_a_control_character(lang: str) -> None:
    for value in astuple(advisory(lang)):
        assert c1_bytes(str(value)) == set(), value
    assert c1_bytes("IA — indicatif") == {"—"}  # what the check is for


def objects(slices: list[Dataset], manifest: mf.Manifest, lang: str) -> dict[str, Dataset]:
    result = synthetic_result(slices, manifest)
    seg = build_seg(slices, result, manifest, lang)
    sr = build_sr(slices, result, manifest, lang, seg=seg)
    gsps = build_gsps(slices, result, manifest, lang)
    sc = build_sc(slices[3], next(iter(result.findings[1].per_image)), result, manifest, lang)
    refs = [
        ResultRef(
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
            str(ds.SOPClassUID),
        )
        for ds in (seg, sr, gsps, sc)
    ]
    kos = build_rejection_kos(
        slices[0], refs, lang, model=manifest.name, version="2.0.0", sha256="ab" * 32
    )
    return {"SEG": seg, "SR": sr, "GSPS": gsps, "SC": sc, "KOS": kos}


@pytest.mark.parametrize("lang", LANGS)
def test_every_object_passes_dcmpschk_and_dciodvfy(
    lang: str, slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    if not Path(DCMPSCHK).exists():
        pytest.skip(f"{DCMPSCHK} is not installed (DCMTK)")
    for kind, ds in objects(slices, manifest, lang).items():
        path = tmp_path / f"{kind}.dcm"
        ds.save_as(path)
        proc = subprocess.run([DCMPSCHK, str(path)], capture_output=True, text=True, check=False)
        errors = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("E:")]
        assert errors == [], kind
        assert dciodvfy(path)[0] == [], kind


def test_french_keeps_its_accents(
    slices: list[Dataset], manifest: mf.Manifest, tmp_path: Path
) -> None:
    made = objects(slices, manifest, "fr")
    path = tmp_path / "seg.dcm"
    made["SEG"].save_as(path)
    seg = pydicom.dcmread(path)
    assert seg.SpecificCharacterSet == "ISO_IR 192"
    assert seg.ContentDescription == advisory("fr").banner[:64]
    assert "à faire valider" in seg.ContentDescription
    path = tmp_path / "kos.dcm"
    made["KOS"].save_as(path)
    kos = pydicom.dcmread(path)
    assert "retiré, remplacé" in kos.SeriesDescription
    assert "résultats" in kos.ContentSequence[0].TextValue
