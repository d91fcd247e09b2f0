"""What a result image inherits from its source images, and the fallbacks the standard
allows when a source lacks it (issue 16: fallbacks, not silent skips).

- Patient Orientation (General Image, Type 2C: required when the image has no Image
  Orientation (Patient)): the source's, else the letters of its Image Orientation
  (Patient), else present and empty (Type 2: unknown), which the caller says in a note.
- Series Laterality (General Series, Type 2C: required for a paired body part): the
  source's side; absent where the source names an unpaired body part (which is then
  copied, so that a reader can tell); else present and empty (unknown).
- Lossy Image Compression (PS3.3 C.7.6.1.1.5, and C.8.20.2.2 for the SEG): an image
  derived from lossy compressed images says "01", with the Ratio and Method of the
  source; a Method the source does not name is taken from a transfer syntax that is
  lossy by definition (JPEG baseline, JPEG-LS near-lossless...), and said in a note.

Notes name attributes, never their values.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom import config
from pydicom import uid as uids
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import validate_value

#: a Patient Orientation value of a biped (PS3.3 C.7.6.1.1.1): letters A P R L H F
_BIPED = re.compile(r"^[APRLHF]{1,3}$")
#: Body Part Examined defined terms (PS3.16 Annex L) of unpaired body parts: Laterality
#: is then absent (dciodvfy also reads any other term, or none, as possibly paired)
UNPAIRED_BODY_PARTS = frozenset((
    "ABDOMEN", "ABDOMENPELVIS", "AORTA", "BLADDER", "BRAIN", "CEREBELLUM", "CERVIX", "CHEST",
    "CHESTABDOMEN", "CHESTABDPELVIS", "COCCYX", "COLON", "CORONARYARTERY", "CSPINE", "CTSPINE",
    "DUODENUM", "ESOPHAGUS", "FACE", "GALLBLADDER", "HEAD", "HEADNECK", "HEART", "ILEUM", "JAW",
    "JEJUNUM", "LARYNX", "LIVER", "LSPINE", "LSSPINE", "MEDIASTINUM", "MOUTH", "NECK",
    "NECKCHEST", "NECKCHESTABDOMEN", "NECKCHESTABDPELV", "NOSE", "PANCREAS", "PELVIS", "PENIS",
    "PHARYNX", "PROSTATE", "RECTUM", "SCALP", "SKULL", "SPINE", "SPLEEN", "SSPINE", "STERNUM",
    "STOMACH", "THYROID", "TLSPINE", "TONGUE", "TRACHEA", "TSPINE", "URETHRA", "UTERUS",
    "VAGINA", "VULVA", "WHOLEBODY",
))  # fmt: skip
#: transfer syntaxes that are lossy by definition, and their Lossy Image Compression
#: Method (PS3.3 C.7.6.1.1.5.1)
LOSSY_TRANSFER_SYNTAXES: dict[str, str] = {
    uids.JPEGBaseline8Bit: "ISO_10918_1",
    uids.JPEGExtended12Bit: "ISO_10918_1",
    uids.JPEGLSNearLossless: "ISO_14495_1",
    uids.MPEG2MPML: "ISO_13818_2",
    uids.MPEG2MPHL: "ISO_13818_2",
    uids.MPEG4HP41: "ISO_14496_10",
    uids.MPEG4HP41BD: "ISO_14496_10",
    uids.MPEG4HP422D: "ISO_14496_10",
    uids.MPEG4HP423D: "ISO_14496_10",
    uids.MPEG4HP42STEREO: "ISO_14496_10",
    uids.HEVCMP51: "ISO_23008_2",
    uids.HEVCM10P51: "ISO_23008_2",
}
ORIENTATION_UNKNOWN = (
    "PatientOrientation left empty: the source image has no valid PatientOrientation "
    "or ImageOrientationPatient"
)
METHOD_FROM_TRANSFER_SYNTAX = (
    "LossyImageCompressionMethod taken from the source's transfer syntax: "
    "the source images do not name it"
)


def _letter(direction: Sequence[float]) -> str:
    axis = int(np.argmax(np.abs(direction)))
    return ("LR", "PA", "HF")[axis][0 if direction[axis] > 0 else 1]


def _orientation_patient(ds: Dataset) -> list[float] | None:
    """The six direction cosines of ``ds`` (single- or multi-frame), or None where it has
    none, or none a number (as a scanner may write)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote the values
        try:
            iop: Any = ds.get("ImageOrientationPatient")
            if iop is None and "SharedFunctionalGroupsSequence" in ds:
                shared = ds.SharedFunctionalGroupsSequence[0]
                if "PlaneOrientationSequence" in shared:
                    iop = shared.PlaneOrientationSequence[0].get("ImageOrientationPatient")
            values = [float(v) for v in iop] if iop is not None else []
        except (TypeError, ValueError):
            return None
    return values if len(values) == 6 and any(values[:3]) and any(values[3:]) else None


def patient_orientation(ds: Dataset) -> tuple[str, str] | None:
    """Patient Orientation (row, column directions) of ``ds``'s pixels: the source's
    own when it is two valid biped values, else the main direction of each axis of its
    Image Orientation (Patient), else None (unknown)."""
    given = ds.get("PatientOrientation")
    if isinstance(given, MultiValue) and len(given) == 2:
        row, column = (str(v).strip() for v in given)
        if _BIPED.match(row) and _BIPED.match(column):
            return row, column
    iop = _orientation_patient(ds)
    if iop is None:
        return None
    return _letter(iop[:3]), _letter(iop[3:])


def source_laterality(ds: Dataset) -> str | None:
    """The side (R or L) ``ds`` names: its series Laterality, else its ImageLaterality
    when that is R or L (B and U are not Laterality values)."""
    for kw in ("Laterality", "ImageLaterality"):
        value = str(ds.get(kw, "") or "").strip()
        if value in ("R", "L"):
            return value
    return None


def set_series_laterality(obj: Dataset, source: Dataset) -> None:
    """General Series Laterality of ``obj`` (Type 2C: required if the body part examined
    is paired) from ``source``: its side; absent for an unpaired body part, whose Body
    Part Examined (Type 3) is then copied; else empty (a paired or unknown body part
    whose side is not known)."""
    side = source_laterality(source)
    body = str(source.get("BodyPartExamined", "") or "").strip().upper()
    if "Laterality" in obj:
        del obj.Laterality
    if side is not None:
        obj.Laterality = side
    elif body in UNPAIRED_BODY_PARTS:
        obj.BodyPartExamined = body
    else:
        obj.Laterality = ""


def _valid(ds: Dataset, keyword: str, vr: str) -> list[str] | None:
    """The values of ``ds``'s DS or CS attribute ``keyword`` as strings, or None where
    it is absent or one of its values is not valid for ``vr`` (as a scanner may write)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote the values
        try:
            value = ds.get(keyword)
            values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
            out = [str(v).strip() for v in values if v not in (None, "")]
            for v in out:
                validate_value(vr, v, config.RAISE)
        except (ValueError, TypeError):
            return None
    return out or None


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def set_lossy_compression(obj: Dataset, sources: Sequence[Dataset], notes: list[str]) -> None:
    """Lossy Image Compression "01" in ``obj`` when any of ``sources`` was lossy
    compressed (it says so, or its transfer syntax is lossy), with the Ratio and Method
    of the first such source (PS3.3 C.7.6.1.1.5; C.8.20.2.2: "01" in any source image
    makes the SEG "01"). A Method the source does not name comes from its transfer
    syntax, and ``notes`` say so. Nothing changes when no source was lossy."""
    for ds in sources:
        said = str(ds.get("LossyImageCompression", "") or "").strip() == "01"
        by_syntax = LOSSY_TRANSFER_SYNTAXES.get(_transfer_syntax(ds))
        if not (said or by_syntax):
            continue
        obj.LossyImageCompression = "01"
        for kw in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
            if kw in obj:
                delattr(obj, kw)
        ratio = _valid(ds, "LossyImageCompressionRatio", "DS")
        method = _valid(ds, "LossyImageCompressionMethod", "CS")
        if ratio:
            obj.LossyImageCompressionRatio = ratio
        if method:
            obj.LossyImageCompressionMethod = method
        elif by_syntax:
            obj.LossyImageCompressionMethod = by_syntax
            notes.append(METHOD_FROM_TRANSFER_SYNTAX)
        return
