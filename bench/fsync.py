"""What durability costs on this disk: the floor under the receive benchmark.

    python bench/fsync.py [--files 300] [--size 525765] [--dir PATH]

Writes ``--files`` files of ``--size`` bytes (one CT slice of bench/receive.py) three
ways, as a receiver would: write only (what storescp does), write + fsync(file), and
write + fsync(file) + fsync(directory) after the rename (what the node does before it
answers Success). Prints the seconds per way and per file. The difference between the
first and the last is time the node spends that storescp does not, whatever the code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(folder: Path, files: int, data: bytes, fsync_file: bool, fsync_dir: bool) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.sync()
    t0 = time.perf_counter()
    for i in range(files):
        tmp, final = folder / f"{i}.part", folder / f"{i}.dcm"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            if fsync_file:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        if fsync_dir:
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--size", type=int, default=525_765)
    ap.add_argument("--dir", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    data = os.urandom(args.size)
    ways = [("write only (storescp)", False, False), ("write + fsync file", True, False),
            ("write + fsync file + fsync dir (cds)", True, True)]  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="fsync-") as tmp:
        print(f"{args.files} files of {args.size} B in {tmp}, median of {args.rounds}")
        for label, f, d in ways:
            times = sorted(run(Path(tmp) / "x", args.files, data, f, d) for _ in range(args.rounds))
            med = times[len(times) // 2]
            print(f"  {label:<40} {med:7.3f} s   {1000 * med / args.files:6.2f} ms/file")
    print(f"command: python bench/fsync.py --files {args.files} --size {args.size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
