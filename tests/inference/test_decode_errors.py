"""decode's errors are ModelErrors that name the instance, never its patient data
(found by the fuzz target, issue 8)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
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
