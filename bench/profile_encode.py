"""Where the time of building the result objects goes (the largest cost of bench/e2e.py).

    python bench/profile_encode.py [--slices 300] [--size 512] [--kinds SEG,SR] [--top 25]
                                   [--rounds 3]

Runs ``cds-ref-ct-bone`` on a synthetic CT (``cds.demo_study.synthetic_ct``), then
encodes ``--kinds``: once to pay highdicom's one-time loading of the standard's tables
(a running node pays it once), then ``--rounds`` times without a profiler (the best
round is what every later study costs, the builders timed on their own too: the
copy of the sources ``encode`` makes, the SEG, the SR), then once under cProfile,
whose cumulative profile is printed (cProfile slows pydicom's many small calls
about threefold: read the wall times above it). Prints the size of what was made:
the SR's content items and IMAGE references, the SEG's frames, their encoded bytes.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cds.demo_study import synthetic_ct  # noqa: E402
from cds.inference.images import decode  # noqa: E402
from cds.inference.registry import ModelRegistry  # noqa: E402
from cds.inference.runner import ModelRunner  # noqa: E402
from cds.inference.session import DeviceSlots  # noqa: E402
from cds.logging import configure_logging  # noqa: E402
from cds.results.copied import copy_for_encoding  # noqa: E402
from cds.results.encode import encode  # noqa: E402
from cds.results.seg import build_seg  # noqa: E402
from cds.results.sr import build_sr  # noqa: E402


def best(rounds: int, run: Callable[[], object]) -> float:
    """The shortest wall time of ``rounds`` calls of ``run``."""
    walls = []
    for _ in range(rounds):
        t = time.perf_counter()
        run()
        walls.append(time.perf_counter() - t)
    return min(walls)


def _walk(items: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _size(ds: Dataset) -> int:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return len(buf.getvalue())


def describe(objects: Sequence[Dataset]) -> list[str]:
    """What each object holds that grows with the series."""
    lines = []
    for ds in objects:
        if ds.Modality == "SR":
            items = list(_walk(ds.ContentSequence))
            images = sum(1 for i in items if i.ValueType == "IMAGE")
            lines.append(f"SR: {len(items)} content items, {images} IMAGE items, {_size(ds)} bytes")
        elif ds.Modality == "SEG":
            lines.append(f"SEG: {int(ds.NumberOfFrames)} frames, {_size(ds)} bytes")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--kinds", default="SEG,SR")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    configure_logging("console", "warning")
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory(prefix="cds-profile-") as tmp:
        files = synthetic_ct(Path(tmp), args.slices, args.size).files
        registry = ModelRegistry([REPO / "models"], "cpu", DeviceSlots(1, 1), warm=False)
        registry.load()
        model = registry.get("cds-ref-ct-bone")
        assert model is not None
        assert model.manifest is not None
        manifest = model.manifest
        result = ModelRunner(model, registry.slots).run(decode(files))
        t = time.perf_counter()
        sources = [dcmread(f) for f in files]
        read_s = time.perf_counter() - t

    def run() -> tuple[list[Dataset], list[str]]:
        return encode(sources, result, manifest, kinds, "en", seed="p")

    t = time.perf_counter()
    objects, skipped = run()
    first_s = time.perf_counter() - t
    encode_s = best(args.rounds, run)
    copies, _ = copy_for_encoding(sources)
    seg = build_seg(copies, result, manifest, "en", uid_root_seed="p")
    parts = {
        "copy_for_encoding": best(args.rounds, lambda: copy_for_encoding(sources)),
        "build_seg": best(
            args.rounds, lambda: build_seg(copies, result, manifest, "en", uid_root_seed="p")
        ),
        "build_sr": best(
            args.rounds,
            lambda: build_sr(copies, result, manifest, "en", seg=seg, uid_root_seed="p"),
        ),
    }
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    run()
    prof.disable()
    profiled_s = time.perf_counter() - t
    print(f"{args.slices} slices {args.size}x{args.size}: sources read {read_s:.3f} s")
    print(
        f"encode {kinds}: first call {first_s:.3f} s, then best of {args.rounds} "
        f"{encode_s:.3f} s (under cProfile {profiled_s:.3f} s)"
    )
    print(
        "  on their own, best of",
        args.rounds,
        ":",
        ", ".join(f"{k} {v:.3f} s" for k, v in parts.items()),
    )
    print(f"objects: {[str(o.Modality) for o in objects]}; skipped: {skipped}")
    for line in describe(objects):
        print(" ", line)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)
    print(f"command: python bench/profile_encode.py --slices {args.slices} --size {args.size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
