"""issue 2: durable spool writes; disk watermark answered 0xA700, never a crash."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cds.errors import IngestError
from cds.ingest.spool import STATUS_OUT_OF_RESOURCES, Spool


def test_write_is_part10_with_zeroed_preamble(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 0)
    sp.open()
    rel = Spool.relative_path("sk", "rk", "1.2.3", "ab" * 32)
    sp.write(rel, b"META", b"DATASET")
    data = (tmp_path / rel).read_bytes()
    assert data == b"\0" * 128 + b"DICM" + b"META" + b"DATASET"
    assert rel == "studies/sk/rk/1.2.3.abababababab.dcm"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_fsyncs_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = Spool(tmp_path, 0)
    sp.open()
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    rel = Spool.relative_path("sk", "rk", "1.2.3", "cd" * 32)
    sp.write(rel, b"M", b"D")
    # the temp file, then the folder holding the final name
    assert synced[-2].endswith(".part")
    assert synced[-1] == str((tmp_path / rel).parent)


def test_open_drops_partial_writes(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir(parents=True)
    (tmp_path / "tmp" / "x.part").write_bytes(b"half")
    Spool(tmp_path, 0).open()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_watermark_refuses_with_a700(tmp_path: Path) -> None:
    sp = Spool(tmp_path, min_free_bytes=10**18)
    sp.open()
    with pytest.raises(IngestError) as err:
        sp.check_space(1000)
    assert err.value.status == STATUS_OUT_OF_RESOURCES
    assert "watermark" in str(err.value)
    assert sp.space().below_watermark


def test_disk_full_during_write_is_a700_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = Spool(tmp_path, 0)
    sp.open()

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    rel = Spool.relative_path("sk", "rk", "1.2.3", "ef" * 32)
    with pytest.raises(IngestError) as err:
        sp.write(rel, b"M", b"D")
    assert err.value.status == STATUS_OUT_OF_RESOURCES
    assert not (tmp_path / rel).exists()
    assert list((tmp_path / "tmp").iterdir()) == []
