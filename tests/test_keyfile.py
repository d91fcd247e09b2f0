"""issue 18: one key-file helper for the node key and the audit key, safe when two
processes start at once."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from cds.errors import CdsError
from cds.keyfile import KEY_BYTES, load_or_create_key


def _load(path: str) -> bytes:
    key = load_or_create_key(Path(path))
    assert key is not None
    return key


def test_a_key_is_made_once_mode_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    assert load_or_create_key(path, create=False) is None
    key = load_or_create_key(path)
    assert key is not None
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temporary left


def test_processes_starting_together_all_read_one_whole_key(tmp_path: Path) -> None:
    path = str(tmp_path / "node.key")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_load, [path] * 16)
    assert len(set(keys)) == 1
    assert len(keys[0]) == KEY_BYTES


def test_an_empty_key_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"")
    with pytest.raises(CdsError, match="the key file is empty"):
        load_or_create_key(path)
