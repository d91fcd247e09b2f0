"""decode's errors are ModelErrors that name the instance, never its patient data
(found by the fuzz target, issue 8)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from cds.errors import ModelError
from cds.inference.images import decode

CANARY = "CANARY^PATIENT"


def _no_pixels() -> Dataset:
    ds = Dataset()
    ds.PatientName = CANARY
    ds.PatientID = "CANARY-ID-123"
    ds.SOPInstanceUID = "1.2.3.4"
    return ds


def test_missing_pixel_data_names_the_sop_instance_not_the_patient() -> None:
    with pytest.raises(ModelError) as err:
        decode([_no_pixels()])
    assert "instance 1.2.3.4: (7FE0,0010) Pixel Data missing" in str(err.value)
    assert "CANARY" not in str(err.value)


def test_a_data_set_with_an_unreadable_element_decodes_or_fails_cleanly(corpus: Path) -> None:
    """The fuzzer's first find: a data set read from memory (no file name) holding an
    element with a VR the standard does not know. decode used to print the data set
    into its error message, which read every element (NotImplementedError) and would
    have put the patient's name in the job's error. Now the element is never read."""
    src = sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[0]
    ds = dcmread(src)
    ds.PatientName = CANARY
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    pixel = data.index(b"\xe0\x7f\x10\x00")
    bad = b"\x00\x47\x52\x41DI\x02\x00ab"  # (4700,4152), VR "DI", 2 bytes
    broken = dcmread(BytesIO(data[:pixel] + bad + data[pixel:]))
    with pytest.raises(NotImplementedError):
        str(broken)  # what the old error path did
    stack = decode([broken])
    assert stack.pixels.shape[0] == 1
    del broken.PixelData
    with pytest.raises(ModelError) as err:
        decode([broken])
    assert "(7FE0,0010) Pixel Data missing" in str(err.value)
    assert "CANARY" not in str(err.value)


def _monochrome(samples: int, rows: int = 64, cols: int = 4, frames: int | None = None) -> Dataset:
    ds = _no_pixels()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    if samples > 1:
        ds.PlanarConfiguration = 0
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    n = (frames or 1) * rows * cols * samples
    ds.PixelData = np.arange(n, dtype=np.uint16).tobytes()
    return ds


def test_several_samples_a_pixel_under_a_monochrome_name_is_refused() -> None:
    """The fuzzer's find at bc18012: SamplesPerPixel 3 with MONOCHROME2 decoded as
    [rows, columns, 3], which decode took for ``rows`` frames of columns x 3 pixels; the
    CT model's resize to 256 x 256 then made 4,096 images of one (3 GB). It is refused,
    naming the attribute."""
    with pytest.raises(ModelError) as err:
        decode([_monochrome(3, rows=4096, cols=8)])
    assert "(0028,0002) SamplesPerPixel is not 1" in str(err.value)
    assert "CANARY" not in str(err.value)
    stack = decode([_monochrome(1, rows=64, cols=4)])  # the grayscale twin decodes
    assert stack.pixels.shape == (1, 64, 4)
    assert len(stack.meta) == 1


def test_frames_decoded_are_the_frames_declared() -> None:
    stack = decode([_monochrome(1, rows=8, cols=4, frames=5)])
    assert stack.pixels.shape == (5, 8, 4)
    assert [m.frame for m in stack.meta] == [1, 2, 3, 4, 5]
