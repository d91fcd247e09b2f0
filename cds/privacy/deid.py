"""Apply the Basic Application Level Confidentiality Profile (PS3.15 E.1.1).

Consistent across runs under one key kept on site (``settings.deid_key_path``):
the same Patient ID gives the same pseudonym, the same UID the same new UID
(``2.25.<128 bits of HMAC-SHA-256(key, uid)>``), so exports of one patient's
studies made on different days still link, and nobody without the key can go back.

Declared (DeidentificationMethodCodeSequence, CID 7050): 113100 Basic Application
Confidentiality Profile; and, when asked (``privacy.modified_dates``), 113107 Retain
Longitudinal Temporal Information with Modified Dates: study, series, acquisition
and content dates shifted back by a keyed number of days per patient (1..3650).
Without it, dates are zeroed or removed as the table says (Longitudinal Temporal
Information: REMOVED). Descriptions removed (no Clean
Descriptors), private attributes removed (no Retain Safe Private), device identity
removed, pixels untouched (no Clean Pixel Data): so an instance where burned-in
text is possible is refused, never exported (``check_burned_in``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from cds.errors import CdsError
from cds.privacy.profile import (
    BASIC_PROFILE,
    CODE_BASIC_PROFILE,
    CODE_MODIFIED_DATES,
    KEEP_UID_KEYWORDS,
    MODIFIED_DATES,
    SAFE_TEXT,
    TEXT_VRS,
)

PROFILE_NAME = "DICOM PS3.15 E.1.1 Basic Application Level Confidentiality Profile"
MODIFIED_DATES_OPTION = "Retain Longitudinal Temporal Information with Modified Dates"
METHOD = "cds: PS3.15 Basic Profile; keyed pseudonyms and UIDs"  # LO: <= 64 characters

#: modalities whose pixels often carry burned-in text (screens, reports, video)
PRONE_MODALITIES = frozenset({"US", "OT", "XA", "RF", "ES", "XC", "SC", "DOC", "GM", "SM", "IVUS"})
#: SOP classes of the same kind, whatever their Modality says
_PRONE_CLASS_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture, all kinds
    "1.2.840.10008.5.1.4.1.1.6.",  # Ultrasound
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.77.",  # Visible Light (endoscopy, photo, video, slide)
    "1.2.840.10008.5.1.4.1.1.104.",  # Encapsulated documents (PDF, CDA...)
    "1.2.840.10008.5.1.4.1.1.12.",  # X-Ray Angiographic / RF
)
_STANDARD_UID_ROOT = "1.2.840.10008."
_KEY_BYTES = 32


class DeidRefused(CdsError):
    """An instance that cannot be de-identified safely; the message names file and field."""


def load_key(path: Path) -> bytes:
    """The pseudonymisation key; created (random, 0600) if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(_KEY_BYTES).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    text = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise CdsError(f"{path}: privacy.key_file: not a hex key") from None
    if len(key) < 16:
        raise CdsError(f"{path}: privacy.key_file: key shorter than 128 bits")
    return key


def key_id(key: bytes) -> str:
    """A short public name for a key (which key made an export), not the key."""
    return hashlib.sha256(b"cds-deid-key-id:" + key).hexdigest()[:12]


@dataclass(frozen=True)
class Deidentifier:
    key: bytes
    modified_dates: bool = False  # the Retain Longitudinal ... Modified Dates option

    @property
    def options(self) -> tuple[str, ...]:
        """The options of Table E.1-1 applied (declared in manifests)."""
        return (MODIFIED_DATES_OPTION,) if self.modified_dates else ()

    def method_codes(self) -> list[tuple[str, str]]:
        return [CODE_BASIC_PROFILE, *([CODE_MODIFIED_DATES] if self.modified_dates else [])]

    def date_shift_days(self, patient_id: str) -> int:
        """Days every date of this patient moves back (same key and patient, same shift)."""
        return 1 + int.from_bytes(self._mac("dates", patient_id.strip())[:4], "big") % 3650

    def _mac(self, kind: str, value: str) -> bytes:
        return hmac.new(self.key, f"{kind}:{value}".encode(), hashlib.sha256).digest()

    def uid(self, value: str) -> str:
        """The new UID for ``value``: same key and input, same output; standard UIDs kept."""
        value = value.strip().rstrip("\x00")
        if not value or value.startswith(_STANDARD_UID_ROOT):
            return value
        return "2.25." + str(int.from_bytes(self._mac("uid", value)[:16], "big"))

    def pseudonym(self, patient_id: str) -> str:
        """The patient's pseudonym (16 characters, upper case): from Patient ID."""
        digest = self._mac("patient", patient_id.strip())
        return base64.b32encode(digest).decode("ascii")[:16]

    def apply(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (and its File Meta); returns it."""
        patient_id = str(ds.get("PatientID", "") or "")
        shift = self.date_shift_days(patient_id) if self.modified_dates else None
        self._walk(ds, self.pseudonym(patient_id), shift)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD
        ds.DeidentificationMethodCodeSequence = Sequence(
            [_code(*code) for code in self.method_codes()]
        )
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if shift else "REMOVED"
        ds.BurnedInAnnotation = ds.get("BurnedInAnnotation") or "NO"
        ds.preamble = b"\x00" * 128  # CVE-2019-11687: no polyglot
        meta = FileMetaDataset()
        old = getattr(ds, "file_meta", None)
        if "SOPClassUID" not in ds and old is not None and "MediaStorageSOPClassUID" in old:
            ds.SOPClassUID = old.MediaStorageSOPClassUID  # received without it: from the request
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ts: str = "1.2.840.10008.1.2.1"
        if old is not None and "TransferSyntaxUID" in old:
            ts = str(old.TransferSyntaxUID)
        meta.TransferSyntaxUID = UID(ts)
        ds.file_meta = meta
        return ds

    def _walk(self, ds: Dataset, pseudo: str, shift: int | None) -> None:
        # nesting is bounded at ingest (dicom.limits.max_sequence_depth)
        for elem in list(ds):
            tag = elem.tag
            action = _action(tag, elem.keyword, elem.VR)
            if shift is not None and int(tag) in MODIFIED_DATES:
                elem.value = _shifted(str(elem.value or ""), shift)
            elif action == "X":
                del ds[tag]
            elif action == "Z":
                elem.value = Sequence() if elem.VR == "SQ" else ""
            elif action == "D":
                elem.value = f"ANON^{pseudo}" if elem.VR == "PN" else pseudo
            elif action == "U":
                if elem.VM > 1:
                    elem.value = [self.uid(str(v)) for v in elem.value]
                elif elem.value:
                    elem.value = self.uid(str(elem.value))
            elif elem.VR == "SQ":
                for item in elem.value:
                    self._walk(item, pseudo, shift)


def _shifted(value: str, days: int) -> str:
    """A DA (or the date of a DT) moved back ``days``; empty if it is not a date."""
    value = value.strip()
    try:
        day = datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (day - timedelta(days=days)).strftime("%Y%m%d") + value[8:]


def _action(tag: BaseTag, keyword: str, vr: str) -> str:
    if tag.is_private or (tag.group & 0xFF00) in (0x5000, 0x6000):
        return "X"  # private attributes, curves and overlays (no Retain Safe Private)
    listed = BASIC_PROFILE.get(int(tag))
    if listed is not None:
        return listed
    if vr == "UI":
        return "K" if keyword in KEEP_UID_KEYWORDS else "U"
    if vr in TEXT_VRS and keyword not in SAFE_TEXT:
        return "X"
    return "K"


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def check_burned_in(ds: Dataset, name: str) -> None:
    """Refuse (DeidRefused) an instance whose pixels may carry identifying text.

    Pixels are not cleaned (no Clean Pixel Data option): an image is exported only
    when BurnedInAnnotation is NO, or is absent on a modality and SOP class where
    burned-in text is not usual (CT, MR, ...). The message names file and field.
    """
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    visual = str(ds.get("RecognizableVisualFeatures", "") or "").strip().upper()
    if visual == "YES":
        raise DeidRefused(
            f"{name}: (0028,0302) RecognizableVisualFeatures is YES: the image may show "
            "the patient; not exported"
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds and "EncapsulatedDocument" not in ds:
        return
    if burned == "YES":
        raise DeidRefused(
            f"{name}: (0028,0301) BurnedInAnnotation is YES: pixels are not cleaned; not exported"
        )
    if burned == "NO":
        return
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality in PRONE_MODALITIES or sop_class.startswith(_PRONE_CLASS_PREFIXES):
        raise DeidRefused(
            f"{name}: (0028,0301) BurnedInAnnotation absent on a {modality or 'no-Modality'} "
            "instance: burned-in text is possible and pixels are not cleaned; not exported"
        )
