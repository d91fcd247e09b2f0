"""What every result builder shares: deterministic UIDs, the repairs of copied source
attributes, the coding schemes and the model's vendor, and the outline of a detection box.

Who is named: the object's Manufacturer (General Equipment) is cds, the software that
encoded it (SoftwareVersions: its version); the model's manufacturer from the manifest
is the algorithm's (SR TID 4019 and observer device, SEG algorithm identification) and
a Contributing Equipment item of every object (``identify_vendor``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cds import __version__
from cds.findings import InferenceResult, Label
from cds.inference import manifest as mf

MANUFACTURER = "cds"
PRIVATE_SCHEME = "99CDS"
#: responsible organisation of the 99CDS codes (the cds reference packages')
CDS_ORGANIZATION = "cds open-source project"
#: the longest value of VR LO (series descriptions, names, model names)
LO = 64
_LO = LO
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://cds.invalid/dicom/result-uid")
_SEP = "\x1f"  # ASCII unit separator
#: Type 2 Patient and General Study attributes the builders copy from the source images
TYPE2_COPIED = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def result_uids(
    study_uid: str,
    series_uids: Sequence[str],
    model: str,
    version: str,
    *,
    kind: str,
    seed: str = "",
) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of a result: the same inputs give the same UIDs.

    ``seed`` (e.g. the node's identity) keeps two installations from minting the
    same UIDs for their own objects; it defaults to none.
    """
    base = [seed, study_uid, *sorted(series_uids), model, version, kind]
    return derived_uid([*base, "series"]), derived_uid([*base, "instance"])


def content_seed(
    seed: str,
    sources: Sequence[Dataset],
    manifest: mf.Manifest,
    model_sha256: str,
    lang: str,
) -> str:
    """The seed of a result's UIDs: the input SOP Instance UIDs, the SHA-256 of model.onnx,
    the manifest's digest (thresholds, labels, preprocessing), the language and the
    encoder (cds) version, with the caller's ``seed``. Different content never reuses a
    UID; the same inputs give the same UIDs. (The object kind is added by ``result_uids``.)
    """
    parts = [
        seed,
        *sorted(str(ds.SOPInstanceUID) for ds in sources),
        model_sha256,
        manifest.digest(),
        lang,
        __version__,
    ]
    return hashlib.sha256(_SEP.join(parts).encode("utf-8")).hexdigest()[:32]


#: last digit of a result series' number, per kind of object
_KIND_DIGIT = {"SEG": 1, "SR": 2, "GSPS": 3, "SC": 4}


def series_number(model: str, kind: str) -> int:
    """The Series Number of ``model``'s ``kind`` series: 9000 + 10 x (a number 1..89
    derived from the model name) + the kind's digit (SEG 1, SR 2, GSPS 3, SC 4).

    Stable (the same model always gets the same numbers, whatever the study or the
    version), after the acquisition series in a viewer's list, and different for two
    models in one study except for a 1-in-89 collision of their names.
    """
    slot = 1 + uuid.uuid5(_UID_NAMESPACE, model).int % 89
    return 9000 + 10 * slot + _KIND_DIGIT[kind]


def derived_uid(parts: Sequence[str]) -> str:
    """A '2.25.' UID from a name-based (SHA-1, version 5) UUID of ``parts``.

    Not ``generate_uid(prefix=None, entropy_srcs=...)``: pydicom ignores the
    entropy when there is no prefix and returns a random UUID. The parts are
    joined with a separator no UID or model name holds, so ('ab', 'c') and
    ('a', 'bc') stay apart.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, _SEP.join(parts)).int}"


def rectangle(r0: float, c0: float, r1: float, c1: float) -> np.ndarray:
    """A closed rectangle (column, row) around inclusive pixel indices r0..r1, c0..c1.

    Pixel (r, c) covers [c, c+1) x [r, r+1) in PIXEL annotation units (GSPS) and in
    SR 2-D spatial coordinates (SCOORD), whose origin is the top left corner of the
    top left pixel.
    """
    left, top, right, bottom = c0, r0, c1 + 1, r1 + 1
    return np.array(
        [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]], dtype=float
    )


def below_threshold(label: Label, score: float) -> bool:
    """Whether a classification ``score`` is under ``label``'s threshold, so that the model
    does not report the finding (never for a 'normal' class or an informational score)."""
    return not label.normal and label.threshold is not None and score < label.threshold


def tolerant(ds: Dataset) -> Dataset:
    """``ds``, or a copy with the Type 2 attributes a scanner left out added empty.

    Real series omit some of them (PatientBirthDate, AccessionNumber); results
    must carry them, empty when unknown. The caller's dataset is not changed.
    """
    missing = [kw for kw in TYPE2_COPIED if kw not in ds]
    if not missing:
        return ds
    fixed = Dataset()
    fixed.update(ds)
    if hasattr(ds, "file_meta"):
        fixed.file_meta = ds.file_meta
    for kw in missing:
        setattr(fixed, kw, None)
    return fixed


def complete(obj: Dataset, organization: str | None = None) -> None:
    """Repairs of what highdicom copies or leaves out, keeping the object valid.

    - a source that says PatientIdentityRemoved YES without naming the method
      (DeidentificationMethod empty) makes the copy invalid (Type 1C): say the
      method is not stated, rather than invent one;
    - with ``organization``, codes of the cds private scheme (99CDS) are declared in
      the Coding Scheme Identification Sequence, as PS3.3 C.12.1.1.8 asks, as the cds
      project's (``CDS_ORGANIZATION``; a vendor's own schemes: ``identify_vendor``).
    """
    removed = str(obj.get("PatientIdentityRemoved", "")).upper() == "YES"
    if (
        removed
        and not obj.get("DeidentificationMethod")
        and not obj.get("DeidentificationMethodCodeSequence")
    ):
        obj.DeidentificationMethod = "not stated in the source images"
    if organization is not None and PRIVATE_SCHEME in _schemes(obj):
        item = Dataset()
        item.CodingSchemeDesignator = PRIVATE_SCHEME
        item.CodingSchemeName = "cds private codes"
        item.CodingSchemeResponsibleOrganization = CDS_ORGANIZATION
        declared = [
            i
            for i in obj.get("CodingSchemeIdentificationSequence", [])
            if i.get("CodingSchemeDesignator") != PRIVATE_SCHEME
        ]
        obj.CodingSchemeIdentificationSequence = [*declared, item]


def identify_vendor(obj: Dataset, manifest: mf.Manifest) -> None:
    """Name the model's vendor in ``obj`` and declare its coding schemes.

    - a Contributing Equipment item (DCM 109102 "Processing Equipment"): Manufacturer =
      the manifest's manufacturer, ManufacturerModelName and SoftwareVersions = the
      model's name and version (unless an item for it is already there, as in a SEG);
    - each coding scheme of the manifest's ``coding_schemes`` that the object uses, in
      the Coding Scheme Identification Sequence (designator, name, organisation, version).
    """
    items = list(obj.get("ContributingEquipmentSequence", []))
    if not any(str(i.get("Manufacturer", "")) == manifest.manufacturer for i in items):
        items.append(
            hd.ContributingEquipment(
                manufacturer=manifest.manufacturer,
                purpose_of_reference=codes.DCM.ProcessingEquipment,
                manufacturer_model_name=manifest.name[:_LO],
                software_versions=manifest.version,
                contribution_description=f"algorithm {manifest.name} {manifest.version}"[:_LO],
            )
        )
        obj.ContributingEquipmentSequence = items
    used = _schemes(obj)
    wanted = [s for s in manifest.coding_schemes if s.designator in used]
    if not wanted:
        return
    names = {s.designator for s in wanted}
    declared = [
        i
        for i in obj.get("CodingSchemeIdentificationSequence", [])
        if i.get("CodingSchemeDesignator") not in names
    ]
    for scheme in wanted:
        item = Dataset()
        item.CodingSchemeDesignator = scheme.designator
        item.CodingSchemeName = scheme.name[:_LO]
        item.CodingSchemeResponsibleOrganization = scheme.organization[:_LO]
        if scheme.version:
            item.CodingSchemeVersion = scheme.version
        declared.append(item)
    obj.CodingSchemeIdentificationSequence = declared


#: (0008,0102) Coding Scheme Designator, compared by tag: a keyword look-up per element
#: was most of the cost of walking a 300-frame SEG
_CODING_SCHEME_DESIGNATOR = 0x00080102


def _schemes(ds: Dataset) -> set[str]:
    """The coding scheme designators used anywhere in ``ds``."""
    found: set[str] = set()
    for stored in list(ds.values()):  # unsorted: iterating ``ds`` sorts every dataset
        elem = ds[stored.tag] if isinstance(stored, RawDataElement) else stored
        if elem.VR == "SQ":
            for item in elem.value:
                found |= _schemes(item)
        elif elem.tag == _CODING_SCHEME_DESIGNATOR:
            found.add(str(elem.value))
    return found


def check_model_of(manifest: mf.Manifest, result: InferenceResult) -> None:
    """Raise ValueError unless ``manifest`` is the model that produced ``result``: every
    builder checks it before writing the model's name into an object."""
    rec = result.record
    if (manifest.name, manifest.version) != (rec.model, rec.version):
        raise ValueError(
            f"manifest {manifest.name} {manifest.version} is not the model that produced "
            f"the result ({rec.model} {rec.version})"
        )
