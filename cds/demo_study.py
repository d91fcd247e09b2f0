"""The synthetic study of ``cds demo`` and the benchmarks: a head-like CT phantom.

No patient data: the patient is ``DEMO^CDS``. Something for both reference CT models to
find: a skull ring (bone, ``cds-ref-ct-bone``) and, in the middle slices, a
hyperdense sphere (``cds-ref-blob-detect``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

DEMO_PATIENT_NAME = "DEMO^CDS"
DEMO_PATIENT_ID = "CDS-DEMO-0001"
FOV_MM = 240.0  # field of view of the synthetic slices, whatever their size


@dataclass(frozen=True)
class DemoStudy:
    study_uid: str
    series_uid: str
    files: list[Path]


def phantom_slice(index: int, slices: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One axial slice of a head-like phantom, in HU: air, soft tissue (35 HU), a
    skull ring (~1000 HU, what ``cds-ref-ct-bone`` segments) and, in the middle
    third of the slices, a sphere of 190 HU (what ``cds-ref-blob-detect`` boxes)."""
    c = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    y, x = np.meshgrid(c, c, indexing="ij")
    t = (index + 0.5) / slices * 2 - 1  # slice position in [-1, 1]
    shrink = float(np.sqrt(max(0.2, 1 - 0.6 * t * t)))  # the head narrows at both ends
    r = np.sqrt((x / (0.78 * shrink)) ** 2 + (y / (0.88 * shrink)) ** 2)
    hu = np.full((size, size), -1000.0)
    hu[r <= 1.0] = 1000.0  # skull
    hu[r <= 0.9] = 35.0  # brain-like soft tissue
    blob_r2 = 0.12**2 - (t * 0.4) ** 2  # a sphere of radius 0.12 around the middle slice
    if blob_r2 > 0.03**2:
        hu[(x - 0.25) ** 2 + (y + 0.2) ** 2 <= blob_r2] = 190.0
    noise = rng.normal(0.0, 4.0, size=(size, size))
    return np.asarray(hu + np.where(r <= 1.0, noise, 0.0))


def _ct_header(study_uid: str, series_uid: str, frame_uid: str, size: int) -> Dataset:
    now = datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = "DEMO"
    ds.Modality = "CT"
    ds.Manufacturer = "cds demo (synthetic)"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CDS DEMO - synthetic head CT"
    ds.SeriesDescription = "Synthetic head CT 2.5 mm"
    ds.PatientName = DEMO_PATIENT_NAME
    ds.PatientID = DEMO_PATIENT_ID
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "O"
    ds.PatientAge = "045Y"
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = 2.5
    ds.KVP = 120
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [FOV_MM / size, FOV_MM / size]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    return ds


def synthetic_ct(
    folder: Path, slices: int = 40, size: int = 128, *, study_uid: str | None = None
) -> DemoStudy:
    """Write a synthetic axial CT series (one study, ``slices`` files of ``size`` x
    ``size``, 16-bit, Explicit VR Little Endian) into ``folder``; fresh UIDs unless
    ``study_uid`` is given. Routable by deploy/routing.example.yaml's adult CT rule."""
    if slices < 1 or size < 32:
        raise ValueError(f"need at least 1 slice of at least 32 x 32 (got {slices}, {size})")
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    header = _ct_header(study_uid, series_uid, generate_uid(), size)
    rng = np.random.default_rng(20261125)
    origin = -FOV_MM / 2
    files = []
    for n in range(slices):
        ds = Dataset()
        ds.update(header)
        sop_uid = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = n + 1
        z = -n * 2.5
        ds.ImagePositionPatient = [origin, origin, z]
        ds.SliceLocation = z
        hu = phantom_slice(n, slices, size, rng)
        ds.PixelData = np.clip(hu + 1024, 0, 65535).astype("<u2").tobytes()
        path = folder / f"ct_{n + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return DemoStudy(study_uid, series_uid, files)
