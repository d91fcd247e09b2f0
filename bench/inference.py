"""Inference throughput: raw onnxruntime vs the cds runtime, same model, same run.

    python bench/inference.py [--model models/cds-ref-ct-bone] [--slices 300] [--rounds 3]

The series is the synthetic 300-slice 512x512 CT of bench/receive.py
(generated once into bench/out/). For each round, interleaved:

- raw: onnxruntime InferenceSession.run over ready tensors (already
  preprocessed), in batches of the manifest's batch_size: the model alone;
- cds runtime: ModelRunner.run on the decoded series: preprocessing (on a
  worker thread, overlapped with inference), batched inference, postprocessing
  to findings on the source grid (a segmentation's on a worker thread too), and the
  inference record;
- cds incl. decode: the same, plus pydicom decoding of the 300 files.

Prints slices/s (medians) and the ratio cds runtime / raw (target >= 0.90), the
runtime's split and onnxruntime's threads in cds, the provider really used, and the
exact command. ``--model`` takes any package; ``models/cds-ref-perf-unet`` is a U-Net of
real compute (3.6 GFLOP per slice), where the ratio means something.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from receive import ensure_series  # noqa: E402

from cds.inference.images import ImageStack, decode  # noqa: E402
from cds.inference.preprocess import preprocess  # noqa: E402
from cds.inference.registry import LoadedModel, warm_up  # noqa: E402
from cds.inference.runner import ModelRunner  # noqa: E402
from cds.inference.session import DeviceSlots, Threads  # noqa: E402
from cds.inference.validate import validate_package  # noqa: E402
from cds.logging import configure_logging  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "cds-ref-ct-bone")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--providers", default="auto", choices=["auto", "tensorrt", "cuda", "cpu"])
    args = ap.parse_args()
    configure_logging("console", "warning")

    report = validate_package(args.model, args.providers, keep_session=True)
    if not report.ok or report.manifest is None or report.session is None:
        print(f"{args.model}: not a valid package:\n  " + "\n  ".join(report.errors))
        return 1
    m = report.manifest
    model = LoadedModel(
        args.model, "ready", m, report.sha256, report.provider, session=report.session
    )
    warm_up(model)
    runner = ModelRunner(model, DeviceSlots(1, 1))

    files = sorted(ensure_series(args.slices).glob("*.dcm"))[: args.slices]
    t0 = time.perf_counter()
    decoded = decode(files)
    decode_s = time.perf_counter() - t0
    n = len(decoded)

    # raw onnxruntime: its own session, same providers, tensors ready
    tensor, _ = preprocess(decode(files), m.input.preprocessing, m.input)
    raw = ort.InferenceSession(
        str(args.model / "model.onnx"), providers=report.session.providers_asked
    )
    name, bs = m.input.tensor.name, m.input.batch_size
    batches = [np.ascontiguousarray(tensor[i : i + bs]) for i in range(0, n, bs)]
    raw.run(None, {name: batches[0]})  # warm-up

    def run_raw() -> float:
        t = time.perf_counter()
        for b in batches:
            raw.run(None, {name: b})
        return time.perf_counter() - t

    split: dict[str, list[float]] = {}

    def run_cds() -> float:
        fresh = _copy(decoded)  # the runner works in place
        t = time.perf_counter()
        timings = runner.run(fresh).record.timings
        took = time.perf_counter() - t
        for k, v in timings.items():
            split.setdefault(k, []).append(v)
        return took

    def run_cds_decode() -> float:
        t = time.perf_counter()
        runner.run(decode(files))
        return time.perf_counter() - t

    times: dict[str, list[float]] = {
        "raw onnxruntime": [],
        "cds runtime": [],
        "cds incl. decode": [],
    }
    for r in range(args.rounds):
        order = [
            ("raw onnxruntime", run_raw),
            ("cds runtime", run_cds),
            ("cds incl. decode", run_cds_decode),
        ]
        order = order[r % 3 :] + order[: r % 3]
        for label, fn in order:
            times[label].append(fn())
        print(f" round {r + 1}: " + "  ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))

    print(
        f"\nmodel {m.name} {m.version} (sha256 {report.sha256[:12] if report.sha256 else '?'}),"
        f" provider {report.provider}, {n} slices {decoded.pixels.shape[1]}x"
        f"{decoded.pixels.shape[2]} -> tensor {list(tensor.shape[1:])}, batch {bs}, "
        f"{args.rounds} rounds; one-off decode of the series {decode_s:.3f} s"
    )
    print(f"{'path':<20} {'median s':>9} {'slices/s':>9}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:<20} {v:>9.3f} {n / v:>9.1f}")
    _print_split(split, runner.session.threads)
    ratio = med["raw onnxruntime"] / med["cds runtime"]
    print(
        f"throughput ratio cds runtime / raw: {ratio:.2f} (target >= 0.90); "
        f"including DICOM decode: {med['raw onnxruntime'] / med['cds incl. decode']:.2f}"
    )
    print(
        f"command: python bench/inference.py --model {args.model} --slices {args.slices} "
        f"--rounds {args.rounds} --providers {args.providers}"
    )
    return 0


def _print_split(split: dict[str, list[float]], threads: Threads) -> None:
    print(
        "cds runtime split (medians; pre- and postprocessing on worker threads, overlapped "
        "with inference): "
        + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in split.items())
    )
    print(
        f"onnxruntime threads in cds: intra-op {threads.intra_op}, inter-op "
        f"{threads.inter_op}, spinning {'on' if threads.spinning else 'off'} "
        f"({threads.cores} usable cores); raw: onnxruntime's defaults"
    )


def _copy(stack: ImageStack) -> ImageStack:
    out = ImageStack(stack.series_uid, stack.modality, stack.pixels.copy(), list(stack.meta))
    out.order, out.flips = list(stack.order), list(stack.flips)
    return out


if __name__ == "__main__":
    sys.exit(main())
