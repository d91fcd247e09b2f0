"""atheris fuzz target: the bytes of a C-STORE data set through what cds does with
them, the way the node does it: the header check at ingest (``read_header``), then,
for what ingest accepts, a full read, ``decode`` and ``preprocess`` with the
reference CT model's steps.

A clean error is a ``CdsError`` (ingest answers it with a DIMSE status and an error
comment; the pipeline records it on the job, naming the file and the field).
Anything else escaping is a finding: atheris stops and writes the input.

    python tests/fuzz/fuzz_ingest.py -max_total_time=60 [corpus_dir]

``tests/fuzz/test_fuzz.py`` runs it, bounded, in the test suite (seeded with real
files of ../shared/dicom).
"""

from __future__ import annotations

import sys
from io import BytesIO
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from pydicom import dcmread

    from cds.errors import CdsError
    from cds.inference.images import decode
    from cds.inference.manifest import InputSpec, PreprocessStep, load_manifest
    from cds.inference.preprocess import preprocess
    from cds.ingest.instance import encode_file_meta, read_header


PACKAGE = Path(__file__).resolve().parents[2] / "models" / "cds-ref-ct-bone"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
MAX_PIXELS = 4096 * 4096  # what one fuzz input may ask decode to allocate
# preprocess runs here on the whole stack (the runner: batch by batch); each image
# becomes a 256 x 256 float32 tensor however small it was, so frames are bounded too
MAX_FRAMES = 64


def _steps() -> tuple[list[PreprocessStep], InputSpec]:
    m = load_manifest(PACKAGE)
    return list(m.input.preprocessing), m.input


STEPS, SPEC = _steps()


def one_input(data: bytes) -> None:
    meta = encode_file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3", EXPLICIT_LE, "FUZZ")
    try:
        read_header(meta, data)
    except CdsError:
        return  # refused at ingest with a status: clean
    try:
        ds = dcmread(BytesIO(b"\x00" * 128 + b"DICM" + meta + data))
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:
        # ingest accepted it, but the full data set does not read: the pipeline's
        # decode wraps that same read in a ModelError (tests/inference); nothing more
        # to fuzz with this input
        return
    if rows * cols * frames > MAX_PIXELS or frames > MAX_FRAMES:
        return
    try:
        stack = decode([ds])
        preprocess(stack, STEPS, SPEC)
    except CdsError:
        return


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
