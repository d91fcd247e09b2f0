"""Where the time of building the result objects goes (the largest cost of bench/e2e.py).

    python bench/profile_encode.py [--slices 300] [--size 512] [--kinds SEG,SR] [--top 25]

Runs ``cds-ref-ct-bone`` on a synthetic CT (``cds.demo.synthetic_ct``), then encodes
``--kinds`` under cProfile twice: the first call pays highdicom's one-time loading of
the standard's tables (a running node pays it once), the second is what every later
study costs. Prints both wall times and the second call's cumulative profile.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from pydicom import dcmread

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cds.demo import synthetic_ct  # noqa: E402
from cds.inference.images import decode  # noqa: E402
from cds.inference.registry import ModelRegistry  # noqa: E402
from cds.inference.runner import ModelRunner  # noqa: E402
from cds.inference.session import DeviceSlots  # noqa: E402
from cds.logging import configure_logging  # noqa: E402
from cds.results.encode import encode  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--kinds", default="SEG,SR")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    configure_logging("console", "warning")
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory(prefix="cds-profile-") as tmp:
        files = synthetic_ct(Path(tmp), args.slices, args.size).files
        registry = ModelRegistry([REPO / "models"], "cpu", DeviceSlots(1, 1), warm=False)
        registry.load()
        model = registry.get("cds-ref-ct-bone")
        assert model is not None
        result = ModelRunner(model, registry.slots).run(decode(files))
        t = time.perf_counter()
        sources = [dcmread(f) for f in files]
        read_s = time.perf_counter() - t
        walls = []
        for _ in range(2):
            prof = cProfile.Profile()
            t = time.perf_counter()
            prof.enable()
            objects, skipped = encode(sources, result, model.manifest, kinds, "en", seed="p")
            prof.disable()
            walls.append(time.perf_counter() - t)
    print(f"{args.slices} slices {args.size}x{args.size}: sources read {read_s:.3f} s")
    print(f"encode {kinds}: first call {walls[0]:.3f} s, second call {walls[1]:.3f} s")
    print(f"objects: {[str(o.Modality) for o in objects]}; skipped: {skipped}")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)
    print(f"command: python bench/profile_encode.py --slices {args.slices} --size {args.size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
