"""issue 19 (receive) and issue 2: Success only once the instance is durably on disk.

The receiver overlaps the file's fsync with the SHA-256 of the data set
(``PendingFile.sync``); these tests hold it to the order that makes an answered
instance survive a power loss: the temporary file fsync'd, then renamed into
place, then its folder fsync'd, and only then the store row and the answer.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cds.domain import StoreOutcome
from cds.errors import IngestError
from cds.ingest.receiver import Receiver
from cds.ingest.spool import STATUS_OUT_OF_RESOURCES, Spool
from cds.store import open_store
from cds.store.sqlite import SqliteStore

from ..conftest import make_settings

CT = "1.2.840.10008.5.1.4.1.1.2"


def _data_set() -> tuple[str, bytes]:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return str(ds.SOPInstanceUID), bytes(buf.getvalue())


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    settings = make_settings(tmp_path / "home")
    spool = Spool(settings.spool_path, 0)
    spool.open()
    store = open_store(settings)
    yield Receiver(settings, spool, store, b"k" * 32)
    store.close()


def _receive(rx: Receiver, sop_uid: str, data: bytes) -> Any:
    return rx.receive(
        sop_class_uid=CT,
        sop_uid=sop_uid,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        dataset=data,
        calling_ae="TESTSCU",
    )


def _leftovers(root: Path) -> list[Path]:
    return [p for folder in ("tmp", "spare") for p in (root / folder).iterdir() if p.stat().st_size]


def test_the_row_and_the_answer_come_after_file_rename_and_folder_are_durable(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    real_record = SqliteStore.record_instances

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        real_fsync(fd)
        calls.append("fsync " + ("file" if target.endswith(".part") else target))

    def replace(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        calls.append(f"replace {dst}")

    def record(self: SqliteStore, recs: Any) -> Any:  # the rows, group-committed
        calls.append("row")
        return real_record(self, recs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(SqliteStore, "record_instances", record)
    sop_uid, data = _data_set()
    result = _receive(receiver, sop_uid, data)
    calls.append("answer")
    assert result.outcome is StoreOutcome.NEW
    (final,) = receiver._spool.iter_files()
    # (the new study and series folders are made durable too, before the rename)
    made = {f"fsync {final.parent.parent}", f"fsync {final.parent.parent.parent}"}
    assert [c for c in calls if c not in made] == [
        "fsync file",
        f"replace {final}",
        f"fsync {final.parent}",
        "row",
        "answer",
    ]
    assert calls.index(f"replace {final}") > max(calls.index(c) for c in made)
    assert final.read_bytes().endswith(data)


@pytest.mark.parametrize(
    ("error", "status"), [(errno.EIO, None), (errno.ENOSPC, STATUS_OUT_OF_RESOURCES)]
)
def test_a_failed_file_fsync_is_refused_and_leaves_nothing(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, error: int, status: int | None
) -> None:
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".part"):
            raise OSError(error, os.strerror(error))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)
    sop_uid, data = _data_set()
    with pytest.raises((OSError, IngestError)) as err:
        _receive(receiver, sop_uid, data)
    if status is not None:
        assert isinstance(err.value, IngestError)
        assert err.value.status == status
    assert list(receiver._spool.iter_files()) == []
    assert receiver._store.find_instance(sop_uid) is None
    assert _leftovers(receiver._spool.root) == []
    monkeypatch.undo()
    assert _receive(receiver, sop_uid, data).outcome is StoreOutcome.NEW  # the retry stores it


def test_a_synced_pending_file_is_not_synced_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = Spool(tmp_path, 0)
    sp.open()
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    rel = Spool.relative_path("sk", "rk", "1.2.3", "ab" * 32)
    with sp.begin(b"M", b"D") as pending:
        pending.sync()
        pending.sync()
        assert len(synced) == 1
        assert synced[0].endswith(".part")
        pending.commit(rel)
    assert synced[-1] == str((tmp_path / rel).parent)
    assert not any(path.endswith(".part") for path in synced[1:])
    assert (tmp_path / rel).read_bytes().endswith(b"MD")
