"""issue 4: a series' routing attributes do not depend on file names or order
(the spool names files by SOP UID; a modality by slice number)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cds.routing.router import read_headers

SERIES = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "dicom"
    / "ct"
    / ("dcm_qa_ct_GE_HiSpeedDual_series")
)


@pytest.mark.skipif(not SERIES.is_dir(), reason=f"corpus series missing: {SERIES}")
def test_series_attributes_come_from_the_first_instance_whatever_the_names(tmp_path: Path) -> None:
    files = sorted(SERIES.iterdir())
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for i, f in enumerate(files):  # reverse the name order
        shutil.copy(f, renamed / f"{len(files) - i:03d}.dcm")
    ((a,),) = read_headers([SERIES])[0].values()
    ((b,),) = read_headers([renamed])[0].values()
    assert a.instance_count == b.instance_count == len(files)
    # this series varies its slice thickness: the first instance's value is used
    assert a.attrs["SliceThickness"] == b.attrs["SliceThickness"]
    assert [p.name for p in a.files][:2] != [p.name for p in b.files][:2]
