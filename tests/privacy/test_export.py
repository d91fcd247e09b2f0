"""issue 7, privacy: ``cds export case``: de-identified copies of a study's spooled
instances, a manifest without identifiers, refusal by file and field where burned-in
text is possible, an EXPORT audit record; works with the node stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import dcmread
from typer.testing import CliRunner

from cds.cli import app as cli
from cds.orchestrator import Node

from ..conftest import make_settings
from ..test_pipeline import send_files
from .test_deid import CANARY, canary_dataset


def _received(tmp_path: Path, sources: list[Path], **extra: str) -> tuple[Path, str]:
    """A node home holding one study made of ``sources`` with canaries; node stopped."""
    settings = make_settings(tmp_path / "home")
    node = Node(settings)
    node.start()
    files = []
    try:
        for i, src in enumerate(sources):
            ds = canary_dataset(dcmread(src))
            for k, v in extra.items():
                setattr(ds, k, v)
            files.append(tmp_path / f"in{i}.dcm")
            ds.save_as(files[-1], enforce_file_format=True)
        send_files(node, files)
        (study,) = node.store.list_studies()
    finally:
        node.stop()
    return settings.home, study.study_key


def _export(home: Path, key: str, out: Path) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["export", "case", key, "--out", str(out), "--home", str(home)])
    return r.exit_code, r.output


@pytest.fixture
def ct_series(corpus: Path) -> list[Path]:
    return sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]


def test_export_case_writes_deidentified_copies(tmp_path: Path, ct_series: list[Path]) -> None:
    home, key = _received(tmp_path, ct_series)
    code, output = _export(home, key, tmp_path / "out")
    assert code == 0, output
    files = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(files) == 3
    for f in files:
        raw = f.read_bytes()
        assert raw[:128] == b"\0" * 128  # CVE-2019-11687
        assert CANARY.encode() not in raw
        ds = dcmread(f)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    manifest_text = (tmp_path / "out" / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    assert manifest["counts"] == {"instances": 3, "series": 1}
    assert manifest["options"] == []
    assert "Basic" in manifest["profile"]
    assert CANARY not in manifest_text
    src = dcmread(ct_series[0])
    for uid in (src.StudyInstanceUID, src.SeriesInstanceUID):
        assert uid not in manifest_text
    assert key_file_mode(home) == 0o600

    # a second export of the same study under the same key: the same UIDs
    code, output = _export(home, key, tmp_path / "again")
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "again").rglob("*.dcm")) == [p.name for p in files]

    audit = "".join(p.read_text() for p in sorted((home / "audit").rglob("*.jsonl")))
    records = [json.loads(line) for line in audit.splitlines() if '"export"' in line]
    assert len(records) == 2
    assert records[0]["detail"]["instances"] == 3
    assert CANARY not in audit


def key_file_mode(home: Path) -> int:
    return (home / "keys" / "deid.key").stat().st_mode & 0o777


def test_export_refuses_burned_in_possible(tmp_path: Path, ct_series: list[Path]) -> None:
    """A study with an OT instance lacking BurnedInAnnotation: exit 3, file and field named,
    nothing written."""
    home, key = _received(tmp_path, ct_series[:1], Modality="OT")
    code, output = _export(home, key, tmp_path / "out")
    assert code == 3, output
    assert "(0028,0301) BurnedInAnnotation" in output
    assert ".dcm:" in output  # the file is named
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_export_exit_codes(tmp_path: Path, ct_series: list[Path]) -> None:
    home, key = _received(tmp_path, ct_series[:1])
    assert _export(home, "nosuchstudy", tmp_path / "o1")[0] == 1
    assert _export(tmp_path / "nohome", key, tmp_path / "o2")[0] == 1
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    code, output = _export(home, key, busy)
    assert code == 1
    assert "--out" in output


def test_export_with_modified_dates_declares_the_option(
    tmp_path: Path, ct_series: list[Path]
) -> None:
    home, key = _received(tmp_path, ct_series[:1])
    args = ["export", "case", key, "--out", str(tmp_path / "o"), "--home", str(home)]
    r = CliRunner().invoke(cli, [*args, "--modified-dates"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["options"] == ["Retain Longitudinal Temporal Information with Modified Dates"]
    assert [c["value"] for c in manifest["method_codes"]] == ["113100", "113107"]
    (f,) = (tmp_path / "o").rglob("*.dcm")
    ds = dcmread(f)
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.StudyDate  # shifted, not removed
    assert ds.StudyDate != dcmread(ct_series[0]).StudyDate
