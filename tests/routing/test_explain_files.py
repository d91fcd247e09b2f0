"""issue 14 'Hardening': reading files for an explain is bounded (files, bytes, wall
time), cancellable, and never opens a device or a FIFO; ``cds route explain`` on the
admin's own paths keeps the same bounds and never hangs."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from cds.cli import app
from cds.config import ExplainLimits, IngestLimits
from cds.routing.files import ExplainStopped, ReadBudget
from cds.routing.router import read_headers

from ..conftest import DICOM
from ..test_pipeline import ROUTING

HEAD_CT = DICOM / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
MR_SMALL = DICOM / "mr" / "MR_small.dcm"


def test_bytes_are_bounded_in_all_never_read_past(corpus: Path) -> None:
    """A 15 MB series under a 1 MiB bound: stopped, having read at most 1 MiB + 1 byte."""
    budget = ReadBudget.of(ExplainLimits(max_total_mb=1))
    with pytest.raises(ExplainStopped, match=r"routing\.explain_limits\.max_total_mb \(1\)") as e:
        read_headers([HEAD_CT], limits=IngestLimits(), budget=budget)
    assert e.value.reason == "max_total_mb"
    assert 0 < budget.bytes_read <= 2**20 + 1
    assert budget.files_read < len(list(HEAD_CT.iterdir()))


def test_past_the_deadline_or_cancelled_nothing_is_read(corpus: Path) -> None:
    budget = ReadBudget.of(ExplainLimits(max_seconds=5))
    budget.deadline = time.monotonic() - 1  # as if listing had taken 6 s
    with pytest.raises(ExplainStopped, match=r"max_seconds \(5\)") as e:
        read_headers([HEAD_CT], limits=IngestLimits(), budget=budget)
    assert (e.value.reason, budget.files_read) == ("max_seconds", 0)

    budget = ReadBudget.of(ExplainLimits())
    budget.cancel.set()
    with pytest.raises(ExplainStopped, match="cancelled") as e:
        read_headers([HEAD_CT], limits=IngestLimits(), budget=budget)
    assert (e.value.reason, budget.files_read) == ("cancelled", 0)


def test_within_the_bounds_the_answer_is_the_unbounded_one(corpus: Path) -> None:
    budget = ReadBudget.of(ExplainLimits())
    bounded = read_headers([DICOM / "ct", DICOM / "mr"], limits=IngestLimits(), budget=budget)
    plain = read_headers([DICOM / "ct", DICOM / "mr"], limits=IngestLimits())
    assert bounded[1] == plain[1]
    assert {k: [(s.series_uid, s.files) for s in v] for k, v in bounded[0].items()} == {
        k: [(s.series_uid, s.files) for s in v] for k, v in plain[0].items()
    }
    assert budget.files_read == budget.files_found > 0
    assert budget.bytes_read > 0


def test_a_file_over_the_ingest_size_bound_is_skipped_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.dcm"
    with big.open("wb") as fh:
        fh.truncate(2 * 2**20)  # sparse: 2 MiB of zeros
    budget = ReadBudget.of(ExplainLimits())
    studies, skipped = read_headers([big], limits=IngestLimits(max_dataset_mb=1), budget=budget)
    assert studies == {}
    assert skipped == [f"{big}: refused (larger than dicom.limits.max_dataset_mb)"]
    assert budget.bytes_read == 0


def _cli(tmp_path: Path, *args: str, **limits: object) -> Result:
    """``cds route explain`` with a config file; fails the test if it does not end."""
    rules = tmp_path / "routing.yaml"
    rules.write_text(ROUTING)
    config = tmp_path / "cds.yaml"
    config.write_text(yaml.safe_dump({"routing": {"file": str(rules), "explain_limits": limits}}))
    out: list[Result] = []
    run = threading.Thread(
        target=lambda: out.append(
            CliRunner().invoke(
                app,
                ["route", "explain", *args, "--config", str(config), "--home", str(tmp_path)],
            )
        ),
        daemon=True,
    )
    run.start()
    run.join(timeout=20)
    assert out, "cds route explain hung"
    return out[0]


def test_cli_never_opens_a_device_or_a_fifo(tmp_path: Path) -> None:
    """As the admin on local paths: /dev/zero and a FIFO (given, or met in a folder) are
    passed over with the reason, not read for ever."""
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(tmp_path / "pipe")
    os.mkfifo(folder / "pipe")
    res = _cli(tmp_path, "/dev/zero", str(tmp_path / "pipe"), str(folder))
    assert res.exit_code == 1, res.output
    assert "skipped /dev/zero: not a regular file (not opened)" in res.output
    assert f"skipped {tmp_path / 'pipe'}: not a regular file (not opened)" in res.output
    assert f"skipped {folder / 'pipe'}: not a regular file" in res.output
    assert "no DICOM study found" in res.output


def test_cli_stops_at_the_files_bound(tmp_path: Path, corpus: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        shutil.copy(MR_SMALL, folder / f"{i}.dcm")
    res = _cli(tmp_path, str(folder), max_files=3)
    assert res.exit_code == 2, res.output
    assert "routing.explain_limits.max_files (3)" in res.output
    res = _cli(tmp_path, str(folder), max_files=4)
    assert res.exit_code == 0, res.output
    assert "no rule matched" in res.output
