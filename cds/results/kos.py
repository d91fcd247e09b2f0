"""IHE IOCM rejection note: the Key Object Selection Document that withdraws result objects.

When a newer run (late instances, another model version) supersedes the result
objects of an earlier one, the earlier objects are withdrawn with a rejection
note, as IHE IOCM (Imaging Object Change Management) describes it: a KOS
(SOP Class 1.2.840.10008.5.1.4.1.1.88.59, Modality KO) in the same study, whose
document title is (113001, DCM, "Rejected for Quality Reasons") (CID 7010), and
which references every rejected instance both in its content tree (TID 2010:
IMAGE items for image objects such as SEG and SC, COMPOSITE items for the SR and
the GSPS) and in the Current Requested Procedure Evidence Sequence. A PACS that
implements IOCM hides or deletes what the note references; one that does not
still shows the note's description.

The note is advisory like every cds object (SeriesDescription prefix) and names
the model, version and SHA-256 of the run that superseded the objects, in a Key
Object Description (DCM 113012) in the job's language. UIDs come from
``result_uids`` with kind "KOS", seeded by the rejected SOP Instance UIDs: the
same rejection is the same object, however often it is built.

Built with highdicom (``hd.ko.KeyObjectSelectionDocument`` takes any coded
title). The patient and study attributes come from a source dataset of the
study, through the policy every result's copy goes through
(``cds.results.copied.copy_for_encoding``: checked, invalid ones dropped, text in
UTF-8), with missing Type 2 ones added empty (``tolerant``).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import UID

from cds.domain import ResultRef
from cds.errors import EncodingError
from cds.i18n import advisory
from cds.logging import get_logger
from cds.results.common import LO, MANUFACTURER, complete, result_uids, tolerant
from cds.results.copied import copy_for_encoding

log = get_logger("cds.results")

RESULT_KIND = "KOS"
#: CID 7010 title of an IOCM rejection note for results that must no longer be used
REJECTED_FOR_QUALITY_REASONS = hd.sr.CodedConcept("113001", "DCM", "Rejected for Quality Reasons")


def _is_image(sop_class_uid: str) -> bool:
    """Whether TID 2010 references the class with an IMAGE item (else COMPOSITE).

    Image IODs: '... Image Storage' classes (Secondary Capture included) and the
    Segmentation; SR documents and presentation states are not images.
    """
    name = UID(sop_class_uid).name
    return "Image Storage" in name or name == "Segmentation Storage"


def _reference(ref: ResultRef) -> Dataset:
    """What highdicom needs to reference ``ref`` (content item and evidence).

    highdicom makes an IMAGE item for a dataset with Rows and Columns, a
    COMPOSITE item otherwise; the values themselves are not written.
    """
    ds = Dataset()
    ds.StudyInstanceUID = ref.study_uid
    ds.SeriesInstanceUID = ref.series_uid
    ds.SOPInstanceUID = ref.sop_uid
    ds.SOPClassUID = ref.sop_class_uid
    if _is_image(ref.sop_class_uid):
        ds.Rows = ds.Columns = 1
    return ds


def build_rejection_kos(
    source: Dataset,
    rejected: Sequence[ResultRef],
    lang: str,
    *,
    model: str,
    version: str,
    sha256: str,
    seed: str = "",
    series_number: int = 990,
    notes: list[str] | None = None,
) -> hd.ko.KeyObjectSelectionDocument:
    """The IOCM rejection note withdrawing ``rejected``, in the study of ``source``.

    ``source``: any instance of the study (its patient and study attributes are
    copied); ``rejected``: the superseded result objects, all of that study;
    ``model``, ``version``, ``sha256``: the model of the newer run that
    supersedes them; ``seed``: as for the other builders (keeps two nodes' UIDs
    apart); ``notes`` get what of the source's attributes was not copied as it was
    (without ``notes``, they are logged: attribute names, never values). Raises
    ValueError for an unknown language, nothing to reject, a reference to another
    study or a duplicated reference; EncodingError when the object would not be valid.
    """
    t = advisory(lang)
    if not rejected:
        raise ValueError("rejected is empty: a rejection note references at least one object")
    if not sha256:
        raise EncodingError(f"KOS: the run of {model} {version} has no model SHA-256")
    study_uid = str(source.StudyInstanceUID)
    others = sorted({r.study_uid for r in rejected if r.study_uid != study_uid})
    if others:
        raise ValueError(
            f"rejected objects of study {', '.join(others)} are not in the source's study "
            f"{study_uid}: a rejection note references one study"
        )
    sop_uids = [r.sop_uid for r in rejected]
    if len(set(sop_uids)) != len(sop_uids):
        raise ValueError("rejected names an object more than once")
    series_uid, sop_uid = result_uids(
        study_uid, sop_uids, model, version, kind=RESULT_KIND, seed=seed
    )
    description = t.superseded.format(name=model, version=version, sha256=sha256)
    references = [_reference(r) for r in rejected]
    # highdicom copies the patient and study attributes from the first evidence dataset
    (checked,), copied = copy_for_encoding([source])
    if notes is not None:
        notes.extend(copied)
    elif copied:
        log.info("results.source_attributes_not_copied", kind=RESULT_KIND, notes=copied)
    header = Dataset()
    header.update(tolerant(checked))
    header.update(references[0])
    try:
        content = hd.ko.KeyObjectSelection(
            document_title=REJECTED_FOR_QUALITY_REASONS,
            referenced_objects=references,
            description=f"{t.banner}. {description}",
        )
        kos = hd.ko.KeyObjectSelectionDocument(
            evidence=[header, *references[1:]],
            content=content,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer=MANUFACTURER,
            series_description=(
                t.series_prefix + t.superseded_series.format(name=model, version=version)
            )[:LO],
            manufacturer_model_name=model[:LO],
            software_versions=version,
            device_serial_number=sha256[:LO],
            specific_character_set="ISO_IR 192",  # the French description holds accents
        )
    except (ValueError, TypeError) as exc:
        raise EncodingError(
            f"KOS withdrawing {len(rejected)} object(s) is not valid: {exc}"
        ) from exc
    complete(kos)
    return kos
