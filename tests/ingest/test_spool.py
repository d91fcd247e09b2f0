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


def test_remove_files_and_study_folder(tmp_path: Path) -> None:
    """issue 4 (purge): files go durably, empty folders go, other studies stay."""
    sp = Spool(tmp_path, 0)
    sp.open()
    a = [Spool.relative_path("sk", "rk", f"1.2.{n}", "ab" * 32) for n in range(2)]
    other = Spool.relative_path("other", "rk", "1.3", "ab" * 32)
    for rel in (*a, other):
        sp.write(rel, b"M", b"D")
    assert sp.study_files("sk") == sorted(a)
    assert sp.remove_files([*a, "studies/sk/rk/missing.dcm"]) == 2
    sp.remove_study_folder("sk")
    assert not (tmp_path / "studies" / "sk").exists()
    assert sp.study_files("sk") == []
    assert sp.exists(other)
    sp.write(a[0], b"M", b"D")  # a later instance of the study makes its folder again
    assert sp.exists(a[0])


def test_write_after_its_folder_was_removed_by_another_process(tmp_path: Path) -> None:
    """A purge by the CLI removes a folder the node's spool believes it made."""
    sp = Spool(tmp_path, 0)
    sp.open()
    rel = Spool.relative_path("sk", "rk", "1.2.3", "ab" * 32)
    sp.write(rel, b"M", b"D")
    Spool(tmp_path, 0).remove_files([rel])
    Spool(tmp_path, 0).remove_study_folder("sk")
    assert not (tmp_path / "studies" / "sk").exists()
    sp.write(rel, b"M", b"D2")
    assert (tmp_path / rel).read_bytes().endswith(b"D2")


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b"])
def test_study_folder_names_are_checked(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="study_key"):
        Spool(tmp_path, 0).study_files(bad)


def test_remove_files_stays_inside_the_spool(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inside the spool"):
        Spool(tmp_path / "spool", 0).remove_files(["studies/../../x.dcm"])
