"""issue 8: the atheris fuzz target (fuzz_ingest.py) runs for a bounded time on seeds
made from real files of ../shared/dicom: no exception other than a clean CdsError
escapes ingest's header check, decode or preprocess.

``CDS_FUZZ_RUNS`` (default 4,000 inputs), ``CDS_FUZZ_SEED`` (libFuzzer's seed, default
1) and a fixed PYTHONHASHSEED are meant to make the suite's run repeat, so that a finding
replays; 0 gives a random seed for exploring. (At a93f966, without the hash seed, the
same -seed passed once and ran out of memory once.) ``CDS_FUZZ_SECONDS`` bounds the time
(default 60 s, the bound for a slow machine: with it the run may stop before its inputs
are done); a crash, a timeout or an out-of-memory leaves its input in the test's folder
(``crash-*``, ``timeout-*``, ``oom-*``) and the test prints how to replay it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

pytest.importorskip("atheris")

HERE = Path(__file__).resolve().parent
SEEDS = ["ct", "mr", "cr_dx", "malformed"]


def _seed(path: Path) -> bytes | None:
    """The data set of ``path`` re-encoded Explicit VR Little Endian (the target's
    transfer syntax), without its File Meta; None when it does not read."""
    try:
        ds = dcmread(path, force=True)
        if ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1") not in (
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2",
        ):
            return None
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, False
        write_dataset(buf, ds)
        return buf.getvalue()
    except Exception:
        return None


def test_fuzz_parse_decode_preprocess(corpus: Path, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    n = 0
    for folder in SEEDS:
        files = sorted(p for p in (corpus / folder).rglob("*") if p.is_file())
        for f in [p for p in files if p.stat().st_size < 600_000][:6]:
            data = _seed(f)
            if data:
                (seeds / f"seed{n:03d}").write_bytes(data)
                n += 1
    assert n >= 6, "too few seeds read from the corpus"
    seconds = int(os.environ.get("CDS_FUZZ_SECONDS", "60"))
    # one seed in the suite, so that a run repeats (a finding replays); explore with
    # another seed, e.g. CDS_FUZZ_SEED=0 (libFuzzer: a random one) and more seconds
    seed = int(os.environ.get("CDS_FUZZ_SEED", "1"))
    runs = int(os.environ.get("CDS_FUZZ_RUNS", "4000"))  # the same inputs every run
    p = subprocess.run(
        [
            # through a shell that forks it: a process exec'd straight from pytest keeps
            # pytest's peak RSS as its own (Linux carries ru_maxrss across execve), and
            # libFuzzer's -rss_limit_mb reads that peak; the suite's pytest passes 3 GB
            # late in a run, which failed this test at 6826a47 and bc18012 with an
            # "out-of-memory" on its very first (empty) input
            "sh",
            "-c",
            '"$0" "$@" & wait $!',
            sys.executable,
            str(HERE / "fuzz_ingest.py"),
            f"-seed={seed}",
            f"-runs={runs}",
            f"-max_total_time={seconds}",
            "-rss_limit_mb=3072",
            "-timeout=20",
            f"-artifact_prefix={tmp_path}/",
            str(seeds),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=HERE.parent.parent,
        # the coverage libFuzzer steers by includes dict and set orders: one hash seed
        # (else the same -seed explores differently from run to run)
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    crashes = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("timeout-*"))
    crashes += sorted(tmp_path.glob("oom-*"))
    tail = "\n".join(p.stderr.splitlines()[-40:])
    replay = f"replay with: python tests/fuzz/fuzz_ingest.py {crashes[0] if crashes else ''}"
    assert not crashes, f"fuzzing found a problem; {replay}\n{tail}"
    assert p.returncode == 0, f"the fuzzer failed:\n{tail}"
    runs = [line for line in p.stderr.splitlines() if line.startswith("Done ")]
    print(f"\n{n} seeds; {runs[-1] if runs else tail}")
