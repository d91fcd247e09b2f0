"""issue 19: a spooled study's headers are parsed once while its files are unchanged
(its pipelines and the feedback reader both ask for them), and read again on a change."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from cds.routing import headers
from cds.routing.headers import FolderHeaders, read_headers

SERIES = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "dicom"
    / "ct"
    / "dcm_qa_ct_GE_HiSpeedDual_series"
)
pytestmark = pytest.mark.skipif(not SERIES.is_dir(), reason=f"corpus series missing: {SERIES}")


def _study(tmp_path: Path) -> Path:
    folder = tmp_path / "studies" / "k1"
    shutil.copytree(SERIES, folder)
    return folder


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = headers.read_headers

    def counted(*args: object, **kw: object) -> object:
        calls.append(1)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(headers, "read_headers", counted)
    return calls


def test_same_as_read_headers_parsed_once_and_each_caller_owns_its_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _study(tmp_path)
    calls = _counting(monkeypatch)
    cache = FolderHeaders()
    a = cache(folder)
    assert a == read_headers([folder])[0]
    (s,) = a[next(iter(a))]
    s.files.reverse()
    s.calling_ae = "X"
    s.attrs["ImageType"].append("CHANGED")
    b = cache(folder)
    assert b == read_headers([folder])[0]  # the caller's changes did not reach the cache
    assert len(calls) == 1


def test_a_replaced_added_or_removed_file_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _study(tmp_path)
    calls = _counting(monkeypatch)
    cache = FolderHeaders()
    first = cache(folder)
    files = sorted(folder.iterdir())
    files[-1].unlink()
    fewer = cache(folder)
    assert len(calls) == 2
    ((s,),) = fewer.values()
    ((f,),) = first.values()
    assert s.instance_count == f.instance_count - 1
    shutil.copy(SERIES / files[-1].name, folder / "new.tmp")
    os.replace(folder / "new.tmp", files[-1])  # as the spool writes: a rename
    assert cache(folder) == first
    assert len(calls) == 3


def test_concurrent_callers_of_one_folder_share_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _study(tmp_path)
    calls = _counting(monkeypatch)
    cache = FolderHeaders()
    out: list[object] = []
    threads = [threading.Thread(target=lambda: out.append(cache(folder))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(out) == 4
    assert all(o == out[0] for o in out)
    assert len(calls) == 1
    assert not cache._busy  # no lock kept once nobody reads


def test_keeps_a_bounded_number_of_folders(tmp_path: Path) -> None:
    cache = FolderHeaders(keep=2)
    for name in ("a", "b", "c"):
        shutil.copytree(SERIES, tmp_path / name)
        cache(tmp_path / name)
    assert list(cache._read) == [tmp_path / "b", tmp_path / "c"]
