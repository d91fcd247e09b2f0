"""issue 5: the IHE IOCM rejection note (Key Object Selection Document) that withdraws
result objects superseded by a newer run.

The note is built for real SEG, SR and GSPS objects of the bundled bone model's
label set on a real CT series, written, read back and run through dciodvfy
(zero errors): every rejected object is referenced in the content tree and in
the evidence, nothing else is, the study is the source's, and the same
rejection gives the same UIDs. A source with any copied attribute that is not valid
(issue 16) still gives a valid note, through the same policy as every other result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from structlog.testing import capture_logs

from cds.domain import ResultRef
from cds.errors import EncodingError
from cds.i18n import LANGS, advisory
from cds.inference import manifest as mf
from cds.logging import get_logger
from cds.results import kos
from cds.results.common import result_uids
from cds.results.gsps import build_gsps
from cds.results.kos import build_rejection_kos
from cds.results.seg import build_seg
from cds.results.sr import build_sr
from tests.results.test_mutation_corpus import CANARY, EVERY_SERIES, SAMPLED, Mutation
from tests.results.test_sr import dciodvfy, manifest, slices, synthetic_result

__all__ = ["manifest", "slices"]  # fixtures shared with test_sr

KOS = "1.2.840.10008.5.1.4.1.1.88.59"
NEW_MODEL, NEW_VERSION, NEW_SHA = "cds-ref-ct-bone", "2.0.0", "fedcba9876543210" * 4


def ref(ds: Dataset) -> ResultRef:
    return ResultRef(
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        str(ds.SOPClassUID),
    )


@pytest.fixture(scope="module")
def earlier(slices: list[Dataset], manifest: mf.Manifest) -> list[Dataset]:
    """The result objects of an earlier run: a SEG, its SR and a GSPS."""
    result = synthetic_result(slices, manifest)
    seg = build_seg(slices, result, manifest, "en")
    return [
        seg,
        build_sr(slices, result, manifest, "en", seg=seg),
        build_gsps(slices, result, manifest, "en"),
    ]


def kos_of(source: Dataset, rejected: list[ResultRef], lang: str, **kw: Any) -> Dataset:
    return build_rejection_kos(
        source, rejected, lang, model=NEW_MODEL, version=NEW_VERSION, sha256=NEW_SHA, **kw
    )


def write_valid(ds: Dataset, path: Path) -> Dataset:
    ds.save_as(path)
    errors, _ = dciodvfy(path)
    assert errors == []
    return pydicom.dcmread(path)


def code(item: Dataset) -> tuple[str, str]:
    c = item.ConceptNameCodeSequence[0]
    return str(c.CodingSchemeDesignator), str(c.CodeValue)


@pytest.mark.parametrize("lang", LANGS)
def test_rejection_note_withdraws_every_object_in_the_source_study(
    lang: str, slices: list[Dataset], earlier: list[Dataset], tmp_path: Path
) -> None:
    rejected = [ref(ds) for ds in earlier]
    back = write_valid(kos_of(slices[2], rejected, lang), tmp_path / "kos.dcm")
    t = advisory(lang)
    assert (back.SOPClassUID, back.Modality) == (KOS, "KO")
    assert code(back) == ("DCM", "113001")  # Rejected for Quality Reasons (IOCM)
    assert back.ConceptNameCodeSequence[0].CodeMeaning == "Rejected for Quality Reasons"
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "2010"
    assert back.StudyInstanceUID == slices[0].StudyInstanceUID
    assert back.PatientID == slices[0].PatientID
    assert back.SeriesDescription.startswith(t.series_prefix)
    assert NEW_VERSION in back.SeriesDescription
    assert len(back.SeriesDescription) <= 64
    assert (back.SeriesNumber, back.Manufacturer) == (990, "cds")

    items = list(back.ContentSequence)
    (description,) = [i for i in items if code(i) == ("DCM", "113012")]
    text = description.TextValue
    assert text.startswith(t.banner)
    for part in (NEW_MODEL, NEW_VERSION, NEW_SHA):
        assert part in text
    other = advisory("fr" if lang == "en" else "en")
    assert other.banner not in text

    # content tree: the SEG as an IMAGE, the SR and the GSPS as COMPOSITE items
    value_types = {
        str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID): i.ValueType
        for i in items
        if i.ValueType in ("IMAGE", "COMPOSITE")
    }
    assert value_types == {
        str(earlier[0].SOPInstanceUID): "IMAGE",
        str(earlier[1].SOPInstanceUID): "COMPOSITE",
        str(earlier[2].SOPInstanceUID): "COMPOSITE",
    }
    for i in items:
        if i.ValueType in ("IMAGE", "COMPOSITE"):
            sop = i.ReferencedSOPSequence[0]
            assert ref_of(sop, rejected).sop_class_uid == sop.ReferencedSOPClassUID

    # evidence: exactly the rejected objects, by study and series; not the source image
    (study,) = back.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == slices[0].StudyInstanceUID
    evidence = {
        ResultRef(
            str(study.StudyInstanceUID),
            str(series.SeriesInstanceUID),
            str(sop.ReferencedSOPInstanceUID),
            str(sop.ReferencedSOPClassUID),
        )
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert evidence == set(rejected)


def ref_of(sop: Dataset, refs: list[ResultRef]) -> ResultRef:
    (found,) = [r for r in refs if r.sop_uid == sop.ReferencedSOPInstanceUID]
    return found


def test_same_rejection_same_uids_whatever_the_order_or_language(
    slices: list[Dataset], earlier: list[Dataset]
) -> None:
    rejected = [ref(ds) for ds in earlier]
    a = kos_of(slices[0], rejected, "en")
    b = kos_of(slices[3], rejected[::-1], "fr")
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    expected = result_uids(
        str(slices[0].StudyInstanceUID),
        [r.sop_uid for r in rejected],
        NEW_MODEL,
        NEW_VERSION,
        kind="KOS",
    )
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == expected
    fewer = kos_of(slices[0], rejected[:2], "en")
    assert fewer.SOPInstanceUID != a.SOPInstanceUID
    seeded = kos_of(slices[0], rejected, "en", seed="node-b")
    assert seeded.SOPInstanceUID != a.SOPInstanceUID
    assert a.SOPInstanceUID not in {str(ds.SOPInstanceUID) for ds in earlier}


def test_source_without_type2_patient_and_study_attributes(
    slices: list[Dataset], earlier: list[Dataset], tmp_path: Path
) -> None:
    source = Dataset()
    source.update(slices[0])
    missing = ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate")
    for kw in missing:
        if kw in source:
            delattr(source, kw)
    back = write_valid(kos_of(source, [ref(earlier[1])], "fr"), tmp_path / "kos.dcm")
    for kw in missing:
        assert kw in back  # Type 2: present, empty
        assert not back[kw].value
    assert back.StudyInstanceUID == source.StudyInstanceUID


def test_refusals_name_the_problem(slices: list[Dataset], earlier: list[Dataset]) -> None:
    rejected = [ref(ds) for ds in earlier]
    with pytest.raises(ValueError, match="unknown language 'de'"):
        kos_of(slices[0], rejected, "de")
    with pytest.raises(ValueError, match="rejected is empty"):
        kos_of(slices[0], [], "en")
    elsewhere = ResultRef("1.2.3", "1.2.3.4", "1.2.3.4.5", rejected[0].sop_class_uid)
    with pytest.raises(ValueError, match=r"study 1\.2\.3 are not in the source's study"):
        kos_of(slices[0], [*rejected, elsewhere], "en")
    with pytest.raises(ValueError, match="more than once"):
        kos_of(slices[0], [rejected[0], rejected[0]], "en")
    with pytest.raises(EncodingError, match="no model SHA-256"):
        build_rejection_kos(slices[0], rejected, "en", model=NEW_MODEL, version="2", sha256="")


#: every mutation of the corpus test (tests/results/test_mutation_corpus.py)
MUTATIONS = [*EVERY_SERIES, *SAMPLED]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_source_with_an_invalid_attribute_gives_a_valid_note(
    mutation: Mutation, slices: list[Dataset], earlier: list[Dataset], tmp_path: Path
) -> None:
    """issue 16: the note copies the patient and study attributes through the checked
    copy (``copy_for_encoding``): each invalid one is dropped and said by name, text in
    any character set is written in UTF-8, and dciodvfy finds no error."""
    notes: list[str] = []
    source = mutation.apply(slices[2])
    kos = kos_of(source, [ref(ds) for ds in earlier], "fr", notes=notes)
    back = write_valid(kos, tmp_path / "kos.dcm")
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert back.StudyInstanceUID == slices[2].StudyInstanceUID
    if mutation.noted is not None:
        assert any(n.startswith(f"{mutation.noted} ") for n in notes), notes
    assert CANARY.lower() not in " ".join(notes).lower()
    for kw, text in mutation.texts.items():
        if kw in back:
            assert str(back[kw].value) == text, kw


def test_without_notes_what_was_dropped_is_logged_by_name(
    slices: list[Dataset], earlier: list[Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    (mutation,) = [m for m in EVERY_SERIES if m.name == "PatientBirthDate invalid"]
    # a logger of its own: the module's was cached with the suite's processors when an
    # earlier test first used it (cache_logger_on_first_use), which capture_logs misses
    monkeypatch.setattr(kos, "log", get_logger("cds.results"))
    with capture_logs() as logs:
        kos_of(mutation.apply(slices[2]), [ref(earlier[1])], "en")
    (event,) = [e for e in logs if e["event"] == "results.source_attributes_not_copied"]
    assert event["notes"] == ["PatientBirthDate not copied (left empty): not a valid DA"]
    assert CANARY.lower() not in str(logs).lower()
