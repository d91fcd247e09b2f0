"""issue 18: one key-file helper for the node key and the audit key, safe when two
processes start at once."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cds.errors import CdsError
from cds.keyfile import KEY_BYTES, load_or_create_key


def test_a_key_is_made_once_mode_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    assert load_or_create_key(path, create=False) is None
    key = load_or_create_key(path)
    assert key is not None
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temporary left


#: each process waits for the others to start, then loads the key and prints it
_LOAD = """
import sys, time
from pathlib import Path
from cds.keyfile import load_or_create_key
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
print(load_or_create_key(Path(sys.argv[1])).hex())
"""


def test_processes_starting_together_all_read_one_whole_key(tmp_path: Path) -> None:
    """Eight node processes start at once on a home without a key: one key is made, and
    every process reads all of it. Plain processes: a multiprocessing pool in the suite's
    process (Ray's and onnxruntime's threads in it) once hung in Pool.map, its workers
    idle and no result coming back."""
    path = str(tmp_path / "node.key")
    start = time.time() + 2.0  # the interpreters are up by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOAD, path, str(start)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    keys = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 8
    assert len(set(keys)) == 1
    assert len(bytes.fromhex(keys[0])) == KEY_BYTES


def test_an_empty_key_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"")
    with pytest.raises(CdsError, match="the key file is empty"):
        load_or_create_key(path)
