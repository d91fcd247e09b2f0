"""Synthetic DICOM series from numpy arrays: for golden cases and geometry tests.

No patient data (the patient is ``SYNTHETIC^CDS``); UIDs are derived from a ``seed``
text, so the same call writes the same bytes. What is in the pixels is yours, which
is the point: a finding whose place you know exactly, in source pixels.

- ``ct_series``: axial CT slices (CT Image Storage), 16-bit, HU = stored - 1024, with
  PixelSpacing, ImagePositionPatient (slice i at z = z0 + i * spacing) and orientation;
- ``projection``: one CR or DX image (MONOCHROME1 or MONOCHROME2) with PixelSpacing;
- ``write``: each data set to ``folder/<name>_<n>.dcm`` (Explicit VR Little Endian).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"
_NS = uuid.UUID("0b6c56f4-9e2f-4a51-8f43-64d2a6f1e7a1")


def uid(seed: str, *parts: object) -> str:
    """A '2.25.' UID derived from ``seed`` and ``parts``."""
    return f"2.25.{uuid.uuid5(_NS, '/'.join([seed, *map(str, parts)])).int}"


def _base(seed: str, modality: str, sop_class: str, body_part: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20250101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "SYNTH"
    ds.Modality = modality
    ds.Manufacturer = "cds synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "synthetic"
    ds.SeriesDescription = f"synthetic {modality}"
    ds.PatientName = "SYNTHETIC^CDS"
    ds.PatientID = "CDS-SYNTH"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    if body_part:
        ds.BodyPartExamined = body_part
    ds.StudyInstanceUID = uid(seed, "study")
    ds.SeriesInstanceUID = uid(seed, "series")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def _finish(ds: Dataset, seed: str, n: int, pixels: np.ndarray) -> Dataset:
    sop = uid(seed, "instance", n)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = sop
    ds.InstanceNumber = n + 1
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.PixelData = np.clip(pixels, 0, 65535).astype("<u2").tobytes()
    return ds


def ct_series(
    hu: np.ndarray,
    seed: str,
    *,
    spacing: tuple[float, float] = (0.8, 0.8),
    slice_spacing: float = 2.5,
    z0: float = 0.0,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    body_part: str = "HEAD",
) -> list[Dataset]:
    """One CT data set per slice of ``hu`` ([S, rows, columns], Hounsfield units), slice i
    at z0 + i * slice_spacing along the normal of ``orientation``."""
    o = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(o[:3], o[3:])
    out = []
    for i, img in enumerate(np.asarray(hu)):
        ds = _base(seed, "CT", CT_IMAGE, body_part)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = uid(seed, "frame-of-reference")
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.ImageOrientationPatient = [float(v) for v in o]
        position = normal * (z0 + i * slice_spacing)
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.SliceThickness = slice_spacing
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelSpacing = list(spacing)
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        out.append(_finish(ds, seed, i, np.asarray(img, dtype=np.float64) + 1024))
    return out


def projection(
    image: np.ndarray,
    seed: str,
    *,
    modality: str = "CR",
    photometric: str = "MONOCHROME1",
    spacing: tuple[float, float] = (0.2, 0.2),
    body_part: str = "CHEST",
) -> Dataset:
    """One projection radiograph of ``image`` ([rows, columns], stored values 0..4095)."""
    sop_class = CR_IMAGE if modality == "CR" else DX_IMAGE
    ds = _base(seed, modality, sop_class, body_part)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.PhotometricInterpretation = photometric
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelSpacing = list(spacing)
    ds.ImagerPixelSpacing = list(spacing)
    ds.PresentationIntentType = "FOR PRESENTATION"
    if modality == "DX":
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
        ds.DetectorType = "SCINTILLATOR"
        ds.BurnedInAnnotation = "NO"
        ds.Laterality = ""
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    return _finish(ds, seed, 0, np.asarray(image, dtype=np.float64))


def write(datasets: Sequence[Dataset], folder: Path, name: str = "image") -> list[Path]:
    """Each data set to ``folder/<name>_<n>.dcm``; the paths, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets):
        path = folder / f"{name}_{n + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
