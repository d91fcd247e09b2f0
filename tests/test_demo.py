"""cds demo's synthetic study: valid CT, one study, N slices, routed by the example rules,
with something for both reference CT models to find; no real patient data."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from cds import demo as demo_mod
from cds.demo import DEMO_PATIENT_NAME, DemoOutcome, demo_routing, run_demo, synthetic_ct
from cds.routing.router import read_headers, route
from cds.routing.rules import load_routing, parse_routing

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_RULES = REPO / "deploy" / "routing.example.yaml"
DCIODVFY = Path("/usr/bin/dciodvfy")


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return np.asarray(ds.pixel_array, dtype=np.float64) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept
    )


def test_synthetic_ct_is_one_study_of_n_ct_slices(tmp_path: Path) -> None:
    study = synthetic_ct(tmp_path / "ct", slices=12, size=64)
    assert len(study.files) == 12
    datasets = [pydicom.dcmread(f) for f in study.files]
    assert {str(d.StudyInstanceUID) for d in datasets} == {study.study_uid}
    assert {str(d.SeriesInstanceUID) for d in datasets} == {study.series_uid}
    assert len({str(d.SOPInstanceUID) for d in datasets}) == 12
    assert sorted(int(d.InstanceNumber) for d in datasets) == list(range(1, 13))
    for d in datasets:
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.SOPClassUID == pydicom.uid.CTImageStorage
        assert d.Modality == "CT"
        assert d.pixel_array.shape == (64, 64)
        assert str(d.PatientName) == DEMO_PATIENT_NAME
    # slices are 2.5 mm apart along the normal
    z = sorted(float(d.ImagePositionPatient[2]) for d in datasets)
    assert np.allclose(np.diff(z), 2.5)


def test_two_runs_make_two_studies(tmp_path: Path) -> None:
    a = synthetic_ct(tmp_path / "a", slices=2, size=32)
    b = synthetic_ct(tmp_path / "b", slices=2, size=32)
    assert a.study_uid != b.study_uid
    given = synthetic_ct(tmp_path / "c", slices=1, size=32, study_uid="1.2.3.4")
    assert given.study_uid == "1.2.3.4"


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1 slice"):
        synthetic_ct(tmp_path, slices=0)
    with pytest.raises(ValueError, match="32 x 32"):
        synthetic_ct(tmp_path, slices=1, size=8)


def test_phantom_has_bone_and_a_hyperdense_blob_in_the_middle(tmp_path: Path) -> None:
    """What cds-ref-ct-bone (> 300 HU) and cds-ref-blob-detect (40/400 window) respond to."""
    study = synthetic_ct(tmp_path, slices=20, size=128)
    middle = _hu(pydicom.dcmread(study.files[10]))
    end = _hu(pydicom.dcmread(study.files[0]))
    assert (middle > 300).sum() > 200  # the skull ring
    blob = (middle > 150) & (middle < 250)
    assert 30 < blob.sum() < 400  # a focal spot, not a slab
    assert not ((end > 150) & (end < 250)).any()  # only in the middle slices
    assert middle.min() < -900  # air around the head


def test_synthetic_ct_is_routed_by_the_example_rules(tmp_path: Path) -> None:
    synthetic_ct(tmp_path / "ct", slices=5, size=64)
    studies, problems = read_headers([tmp_path / "ct"])
    assert problems == []
    (series,) = studies.values()
    plan = route(series, load_routing(EXAMPLE_RULES))
    assert [v.rule for v, _ in plan.runs] == ["adult CT", "adult CT"]
    assert sorted(p.model for _, p in plan.runs) == ["cds-ref-blob-detect", "cds-ref-ct-bone"]
    # and by the demo's own routing file, which sends to Orthanc when there is one
    for port in (4242, None):
        rf = parse_routing(demo_routing(port), "demo")
        runs = route(series, rf).runs
        assert sorted(p.pipeline for _, p in runs) == ["ct-bone", "ct-hyperdensity"]
        assert all(p.destinations == ([] if port is None else [p.destinations[0]]) for _, p in runs)
        if port is not None:
            assert "ORTHANC@127.0.0.1:4242" in runs[0][1].destinations[0]


@pytest.mark.skipif(not DCIODVFY.exists(), reason="dicom3tools dciodvfy not installed")
def test_synthetic_ct_passes_dciodvfy(tmp_path: Path) -> None:
    study = synthetic_ct(tmp_path, slices=1, size=32)
    out = subprocess.run(
        [str(DCIODVFY), str(study.files[0])], capture_output=True, text=True, check=False
    )
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error")]
    assert errors == [], out.stderr


# --- what the demo says (issue 14): true when it says it, and after it ended ---------


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> tuple[DemoOutcome, str]:
    """The demo in this process, its temporary folder under ``tmp_path``."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    lines: list[str] = []
    outcome = run_demo(lines.append, slices=3, size=64, timeout=60, **kw)
    assert list(tmp_path.glob("cds-demo-*")) == []  # removed at the end
    return outcome, "\n".join(lines)


def _paths_under(root: Path, text: str) -> list[Path]:
    return [Path(p.rstrip(".:")) for p in re.findall(rf"{re.escape(str(root))}[^\s,()]*", text)]


def test_no_orthanc_says_it_was_not_used_and_prints_no_vanished_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-orthanc with Orthanc installed or not: the demo says Orthanc was not used
    because of the option (not that it is missing); the results are listed by kind,
    without the paths of the temporary folder it removes, and it says how to keep them."""
    monkeypatch.setattr(demo_mod, "find_orthanc", lambda: Path("/usr/sbin/Orthanc"))
    outcome, out = _run(tmp_path, monkeypatch, orthanc=False)
    assert outcome.ok, out
    assert "[1/5] Orthanc not used (--no-orthanc)" in out
    assert "not found" not in out
    assert "install" not in out
    kinds = re.findall(r"^\s+(\w+)\s+\d+ object\(s\)$", out, re.MULTILINE)
    assert {"SR", "SEG"} <= set(kinds), out
    assert _paths_under(tmp_path, out) == []  # nothing printed lives in the removed folder
    assert "--out DIR keeps the files" in out


def test_out_keeps_the_results_and_every_printed_path_exists_after_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orthanc really not found, --out DIR: the message says it is missing and how to
    install it; the result files are copied into DIR, and every path the demo printed
    still exists once it has ended."""
    monkeypatch.setattr(demo_mod, "find_orthanc", lambda: None)
    kept = tmp_path / "kept"
    outcome, out = _run(tmp_path, monkeypatch, out=kept)
    assert outcome.ok, out
    assert "[1/5] Orthanc not found" in out
    assert "sudo apt-get install orthanc" in out
    printed = _paths_under(tmp_path, out)
    assert kept in printed
    assert all(p.exists() for p in printed), out
    folders = re.findall(r"^\s+(\w+)\s+\d+ object\(s\) in (\S+)$", out, re.MULTILINE)
    assert {"SR", "SEG"} <= {kind for kind, _ in folders}, out
    for kind, folder in folders:
        files = sorted(Path(folder).glob("*.dcm"))
        assert files, folder
        assert Path(folder).parent == kept
        assert {pydicom.dcmread(f).Modality for f in files} == {kind}


def test_out_that_cannot_be_a_folder_is_refused_before_anything_runs(tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    outcome = run_demo(lambda _: None, out=taken / "results")
    assert not outcome.ok
    (problem,) = outcome.problems
    assert problem.startswith(f"--out {taken / 'results'}: cannot create")
