"""Build the bundled reference model packages: classical image processing as ONNX graphs.

    python models/build_reference.py               # rebuild models/cds-ref-*/ in place
    python models/build_reference.py --out DIR     # write DIR/cds-ref-*/ instead

No training and no data. Each model is a documented formula written as an ONNX
graph with ``onnx.helper``:

| package             | output                  | formula                                         |
|---------------------|-------------------------|-------------------------------------------------|
| cds-ref-ct-bone     | mask [N,1,256,256]      | sigmoid(40 (mean3x3(x) - 0.5))                  |
| cds-ref-cxr-triage  | scores [N,2]            | softmax of a logistic on the pixel std. dev.    |
| cds-ref-blob-detect | boxes [N,5,4], scores   | difference of box means, max-pool NMS, top 5    |
| cds-ref-perf-unet   | mask [N,1,256,256]      | a U-Net with seeded weights (performance only)  |

cds-ref-perf-unet is the exception: a 2D U-Net of real compute (16-32-64 channels,
3.6 GFLOP per slice) whose weights are seeded, for measuring cds next to a real network
(``bench/inference.py --model``, ``bench/e2e.py --model``); NOT FOR DIAGNOSIS. Its golden
case is written here (``perf_dense_block``), its reference is the network in numpy.

For each package this script writes ``model.onnx``, its golden cases (``golden/``,
by ``build_golden.py``: synthetic DICOM and the findings expected), ``test/input.npy`` (a
synthetic input built with integer arithmetic, then scaled as the manifest's
preprocessing would) and ``test/expected.npz``, computed by an independent
numpy implementation of the same formula (float64, sliding windows), never by
onnxruntime. Before writing, it checks that onnxruntime (CPU) agrees with numpy
within the tolerance of the package's hand-written ``manifest.yaml``, which it
reads from beside this script together with the tensor names; ``manifest.yaml``
and ``MODEL_CARD.md`` are never written here.

The output is byte-for-byte reproducible: fixed opset and IR version, fixed
producer, no time stamps (the .npz zip entries carry a fixed date).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from build_golden import INPUT as GOLDEN_INPUT  # beside this script
from build_golden import _case as golden_case
from build_golden import build_golden
from onnx import TensorProto, helper, numpy_helper

from cds.inference import synthetic
from cds.inference.manifest import Manifest, load_manifest

HERE = Path(__file__).resolve().parent
OPSET = 17
IR_VERSION = 8  # the IR version of opset 17 (ONNX 1.12); onnxruntime >= 1.12 loads it
PRODUCER = "cds models/build_reference.py"
PRODUCER_VERSION = "1.0.0"
BATCH = "batch"

# cds-ref-ct-bone: window 300/1000 maps [-200, 800] HU onto [0, 1]; 0.5 is 300 HU.
BONE_SIZE = 256
BONE_WINDOW = (300, 1000)  # center, width (HU), as in its manifest
BONE_SMOOTH = 3  # k x k mean
BONE_THRESHOLD = 0.5  # in window units: 300 HU
BONE_SLOPE = 40.0  # per window unit: 1/40 of 1000 HU = 25 HU

# cds-ref-cxr-triage: P(adequate) = sigmoid(a (s - s0)), s = std of the minmax image.
CXR_SIZE = 224
CXR_S0 = 0.10
CXR_SLOPE = 50.0

# cds-ref-blob-detect: window 40/400 maps [-160, 240] HU onto [0, 1].
BLOB_SIZE = 256
BLOB_WINDOW = (40, 400)
BLOB_INNER = 5  # k x k mean: the blob
BLOB_OUTER = 21  # k x k mean: its surroundings
BLOB_NMS = 15  # a peak is the maximum of its k x k neighbourhood
BLOB_HALF = 7  # boxes are (2 * half + 1) pixels square, centred on the peak
BLOB_OFFSET = 0.10  # response (window units) that scores 0.5: 40 HU above the surroundings
BLOB_SLOPE = 20.0
BLOB_K = 5


# --- ONNX helpers --------------------------------------------------------------
def _const(name: str, value: object, dtype: type = np.float32) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _io(name: str, shape: list[int | str], elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(
    name: str,
    doc: str,
    *,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[TensorProto],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name, inputs, outputs, initializer=initializers, doc_string=doc
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        ir_version=IR_VERSION,
        doc_string=doc,
    )
    helper.set_model_props(model, {"cds.package": name, "cds.reference": "not a medical device"})
    onnx.checker.check_model(model, full_check=True)
    return model


def _avg_pool(x: str, out: str, k: int) -> onnx.NodeProto:
    p = k // 2
    return helper.make_node(
        "AveragePool", [x], [out], kernel_shape=[k, k], pads=[p, p, p, p], count_include_pad=0
    )


# --- numpy reference (independent of the graphs) ---------------------------------
def window_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over the k x k window centred on each pixel, counting only pixels in the image."""
    p = k // 2
    padded = np.pad(x.astype(np.float64), ((0, 0), (p, p), (p, p)), constant_values=np.nan)
    view = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))
    return np.nanmean(view, axis=(-2, -1))


def window_max(x: np.ndarray, k: int) -> np.ndarray:
    p = k // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p)), constant_values=-np.inf)
    view = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))
    return view.max(axis=(-2, -1))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# --- synthetic inputs (integer arithmetic only, so the bytes never vary) --------
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:n, 0:n]
    return rows.astype(np.int64), cols.astype(np.int64)


def _ellipse(n: int, center: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    rows, cols = _grid(n)
    (r0, c0), (a, b) = center, axes
    return (rows - r0) ** 2 * b * b + (cols - c0) ** 2 * a * a <= a * a * b * b


def _noise(n: int, seed: int, amplitude: int) -> np.ndarray:
    """Integers in [-amplitude, amplitude] from a splitmix64 hash of the pixel index."""
    z = np.arange(n * n, dtype=np.uint64) + np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(2 * amplitude + 1)).astype(np.int64).reshape(n, n) - amplitude


def _paraboloid(n: int, center: tuple[int, int], radius: int, height: int) -> np.ndarray:
    rows, cols = _grid(n)
    d2 = (rows - center[0]) ** 2 + (cols - center[1]) ** 2
    r2 = radius * radius
    return (height * np.maximum(r2 - d2, 0)) // r2


def _windowed(hu: np.ndarray, center: int, width: int) -> np.ndarray:
    lo = center - width / 2
    return np.clip((hu - lo) / width, 0.0, 1.0).astype(np.float32)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = int(a.min()), int(a.max())
    return ((a - lo) / (hi - lo)).astype(np.float32)


# --- cds-ref-ct-bone -------------------------------------------------------------
def bone_graph() -> onnx.ModelProto:
    doc = (
        "Bone mask of a CT slice windowed 300/1000 (x = clip((HU + 200) / 1000, 0, 1)): "
        f"mask = sigmoid({BONE_SLOPE:g} * (mean{BONE_SMOOTH}x{BONE_SMOOTH}(x) - "
        f"{BONE_THRESHOLD:g})), i.e. a soft threshold at 300 HU."
    )
    nodes = [
        _avg_pool("image", "smoothed", BONE_SMOOTH),
        helper.make_node("Sub", ["smoothed", "threshold"], ["centred"]),
        helper.make_node("Mul", ["centred", "slope"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["mask"]),
    ]
    shape: list[int | str] = [BATCH, 1, BONE_SIZE, BONE_SIZE]
    inits = [_const("threshold", BONE_THRESHOLD), _const("slope", BONE_SLOPE)]
    inputs, outputs = [_io("image", shape)], [_io("mask", shape)]
    return _model(
        "cds-ref-ct-bone", doc, nodes=nodes, inputs=inputs, outputs=outputs, initializers=inits
    )


def bone_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    mask = sigmoid(BONE_SLOPE * (window_mean(x[:, 0], BONE_SMOOTH) - BONE_THRESHOLD))
    return {"mask": mask[:, None].astype(np.float32)}


def bone_input() -> np.ndarray:
    n = BONE_SIZE
    # 0: a head phantom: air, skull ring, brain, a calcification, noise.
    head = np.full((n, n), -1000, dtype=np.int64)
    head[_ellipse(n, (128, 128), (110, 92))] = 1200
    head[_ellipse(n, (128, 128), (100, 82))] = 35
    head[_ellipse(n, (90, 150), (4, 4))] = 400
    head += _noise(n, 1, 30)
    # 1: a ramp from -1000 to 1550 HU along the columns, under 16-pixel squares of +-150 HU.
    rows, cols = _grid(n)
    ramp = -1000 + 10 * cols + 150 * (((rows // 16) + (cols // 16)) % 2 * 2 - 1)
    center, width = BONE_WINDOW
    return np.stack([_windowed(head, center, width), _windowed(ramp, center, width)])[:, None]


# --- cds-ref-cxr-triage ----------------------------------------------------------
def cxr_graph() -> onnx.ModelProto:
    doc = (
        "Contrast triage of a projection radiograph normalised to [0, 1] (minmax): "
        f"s = std(x); P(adequate) = sigmoid({CXR_SLOPE:g} * (s - {CXR_S0:g})), "
        "written as softmax([-z/2, z/2]) with z = a (s - s0). Index 0: low contrast, "
        "index 1: adequate contrast."
    )
    half = CXR_SLOPE / 2
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Sub", ["image", "mean"], ["dev"]),
        helper.make_node("Mul", ["dev", "dev"], ["dev2"]),
        helper.make_node("ReduceMean", ["dev2"], ["var"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Sqrt", ["var"], ["std"]),
        helper.make_node("Reshape", ["std", "col_shape"], ["std_col"]),
        helper.make_node("MatMul", ["std_col", "weights"], ["wx"]),
        helper.make_node("Add", ["wx", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
    ]
    inits = [
        _const("col_shape", [-1, 1], np.int64),
        _const("weights", [[-half, half]]),
        _const("bias", [half * CXR_S0, -half * CXR_S0]),
    ]
    x = _io("image", [BATCH, 1, CXR_SIZE, CXR_SIZE])
    outputs = [_io("scores", [BATCH, 2])]
    return _model(
        "cds-ref-cxr-triage", doc, nodes=nodes, inputs=[x], outputs=outputs, initializers=inits
    )


def cxr_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    s = x.reshape(len(x), -1).astype(np.float64).std(axis=1)
    adequate = sigmoid(CXR_SLOPE * (s - CXR_S0))
    return {"scores": np.stack([1.0 - adequate, adequate], axis=1).astype(np.float32)}


def cxr_input() -> np.ndarray:
    n = CXR_SIZE
    # 0: chest-like: a body, two dark lungs, a mediastinum, noise; well spread histogram.
    chest = np.full((n, n), 60, dtype=np.int64)
    chest[_ellipse(n, (118, 112), (100, 96))] = 2600
    chest[_ellipse(n, (105, 66), (62, 32))] = 700
    chest[_ellipse(n, (105, 158), (62, 32))] = 750
    chest[_ellipse(n, (150, 104), (28, 24))] = 2300
    chest += _noise(n, 2, 40)
    # 1: low contrast: a flat, faintly graded field with a small burned-in marker at full scale.
    rows, _ = _grid(n)
    flat = 1500 + rows // 8 + _noise(n, 3, 12)
    flat[8:14, 8:14] = 4095
    return np.stack([_minmax(chest), _minmax(flat)])[:, None]


# --- cds-ref-blob-detect ---------------------------------------------------------
def blob_graph() -> onnx.ModelProto:
    n, k = BLOB_SIZE, BLOB_K
    doc = (
        "Focal bright spots on a CT slice windowed 40/400 (x = clip((HU + 160) / 400, 0, 1)): "
        f"R = mean{BLOB_INNER}x{BLOB_INNER}(x) - mean{BLOB_OUTER}x{BLOB_OUTER}(x); "
        f"peaks where R equals the max of R over {BLOB_NMS}x{BLOB_NMS} and no peak of lower "
        "raster index lies in that window (ties on plateaus); "
        f"score = sigmoid({BLOB_SLOPE:g} * (R - {BLOB_OFFSET:g})) at peaks, 0 elsewhere; "
        f"the {k} best scores; boxes (row0, col0, row1, col1) = peak -/+ {BLOB_HALF} pixels "
        f"(pixel indices, inclusive), clipped to [0, {n - 1}]."
    )
    nodes = [
        _avg_pool("image", "inner", BLOB_INNER),
        _avg_pool("image", "outer", BLOB_OUTER),
        helper.make_node("Sub", ["inner", "outer"], ["response"]),
        helper.make_node(
            "MaxPool",
            ["response"],
            ["local_max"],
            kernel_shape=[BLOB_NMS, BLOB_NMS],
            pads=[BLOB_NMS // 2] * 4,
        ),
        helper.make_node("Equal", ["response", "local_max"], ["is_max"]),
        # Ties: of equal maxima closer than the window, keep the first in raster order.
        helper.make_node("Range", ["range_start", "range_limit", "range_delta"], ["neg_flat"]),
        helper.make_node("Reshape", ["neg_flat", "plane_shape"], ["neg_index"]),
        helper.make_node("Where", ["is_max", "neg_index", "no_peak"], ["peak_key"]),
        helper.make_node(
            "MaxPool",
            ["peak_key"],
            ["first_key"],
            kernel_shape=[BLOB_NMS, BLOB_NMS],
            pads=[BLOB_NMS // 2] * 4,
        ),
        helper.make_node("Equal", ["first_key", "neg_index"], ["is_first"]),
        helper.make_node("And", ["is_max", "is_first"], ["is_peak"]),
        helper.make_node("Sub", ["response", "offset"], ["centred"]),
        helper.make_node("Mul", ["centred", "slope"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score_all"]),
        helper.make_node("Where", ["is_peak", "score_all", "zero"], ["score_map"]),
        helper.make_node("Reshape", ["score_map", "flat_shape"], ["flat"]),
        helper.make_node("TopK", ["flat", "k"], ["box_scores", "index"], axis=1, sorted=1),
        helper.make_node("Div", ["index", "width"], ["row_i"]),
        helper.make_node("Mod", ["index", "width"], ["col_i"]),
        helper.make_node("Cast", ["row_i"], ["row"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["col_i"], ["col"], to=TensorProto.FLOAT),
    ]
    corners = []
    for coord, op, out in (
        ("row", "Sub", "r0"),
        ("col", "Sub", "c0"),
        ("row", "Add", "r1"),
        ("col", "Add", "c1"),
    ):
        nodes += [
            helper.make_node(op, [coord, "half"], [f"{out}_raw"]),
            helper.make_node("Clip", [f"{out}_raw", "lo", "hi"], [f"{out}_clip"]),
            helper.make_node("Unsqueeze", [f"{out}_clip", "last_axis"], [out]),
        ]
        corners.append(out)
    nodes.append(helper.make_node("Concat", corners, ["boxes"], axis=2))
    inits = [
        _const("offset", BLOB_OFFSET),
        _const("slope", BLOB_SLOPE),
        _const("zero", 0.0),
        _const("range_start", 0.0),
        _const("range_limit", -float(n * n)),
        _const("range_delta", -1.0),
        _const("plane_shape", [1, 1, n, n], np.int64),
        _const("no_peak", -2.0 * n * n),
        _const("flat_shape", [0, -1], np.int64),
        _const("k", [k], np.int64),
        _const("width", n, np.int64),
        _const("half", float(BLOB_HALF)),
        _const("lo", 0.0),
        _const("hi", float(n - 1)),
        _const("last_axis", [2], np.int64),
    ]
    outputs = [_io("boxes", [BATCH, k, 4]), _io("box_scores", [BATCH, k])]
    x = _io("image", [BATCH, 1, n, n])
    return _model(
        "cds-ref-blob-detect", doc, nodes=nodes, inputs=[x], outputs=outputs, initializers=inits
    )


def blob_peaks(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The response R and the peaks: maxima of R over the NMS window, first of equals."""
    response = window_mean(img, BLOB_INNER) - window_mean(img, BLOB_OUTER)
    is_max = response == window_max(response, BLOB_NMS)
    index = np.arange(img[0].size, dtype=np.float64).reshape(img[0].shape)
    first = -window_max(np.where(is_max, -index, -np.inf), BLOB_NMS) == index
    return response, is_max & first


def blob_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    img = x[:, 0].astype(np.float64)
    n, h, w = img.shape
    response, peak = blob_peaks(img)
    score = np.where(peak, sigmoid(BLOB_SLOPE * (response - BLOB_OFFSET)), 0.0).reshape(n, -1)
    best = np.argsort(-score, axis=1, kind="stable")[:, :BLOB_K]  # ties: lower index first
    rows, cols = np.divmod(best, w)
    boxes = np.stack(
        [
            np.clip(rows - BLOB_HALF, 0, h - 1),
            np.clip(cols - BLOB_HALF, 0, w - 1),
            np.clip(rows + BLOB_HALF, 0, h - 1),
            np.clip(cols + BLOB_HALF, 0, w - 1),
        ],
        axis=-1,
    )
    return {
        "boxes": boxes.astype(np.float32),
        "box_scores": np.take_along_axis(score, best, axis=1).astype(np.float32),
    }


def blob_input() -> np.ndarray:
    n = BLOB_SIZE
    # 0: a 30 HU field with noise and six bright spots of distinct contrast (the faintest
    # scores below 0.5 and ranks sixth, so it is not among the five boxes).
    field = 30 + _noise(n, 4, 3)
    for center, height in (
        ((40, 40), 200),
        ((60, 180), 160),
        ((128, 100), 120),
        ((190, 60), 90),
        ((200, 200), 60),
        ((128, 220), 40),
    ):
        field += _paraboloid(n, center, 6, height)
    # 1: a -100..100 HU gradient along the rows; spots near the edges, so boxes are clipped.
    rows, _ = _grid(n)
    edges = -100 + (200 * rows) // (n - 1)
    for center, height in (
        ((3, 250), 190),
        ((252, 4), 150),
        ((128, 2), 130),
        ((5, 128), 110),
        ((130, 130), 80),
    ):
        edges += _paraboloid(n, center, 6, height)
    center, width = BLOB_WINDOW
    return np.stack([_windowed(field, center, width), _windowed(edges, center, width)])[:, None]


def _check_blob_conditioning(expected: dict[str, np.ndarray], x: np.ndarray) -> None:
    """Peaks must win clearly, or another implementation (GPU) could order them otherwise."""
    response, peak = blob_peaks(x[:, 0].astype(np.float64))
    score = np.where(peak, sigmoid(BLOB_SLOPE * (response - BLOB_OFFSET)), 0.0)
    for i, s in enumerate(score.reshape(len(x), -1)):
        top = np.sort(s)[::-1][: BLOB_K + 1]
        gaps = -np.diff(top)
        if gaps.min() < 1e-4:
            raise SystemExit(f"cds-ref-blob-detect: test image {i}: scores too close {top}")
    if not np.all(expected["box_scores"] > 0.5):
        raise SystemExit("cds-ref-blob-detect: every expected box should score above 0.5")


# --- cds-ref-perf-unet -----------------------------------------------------------
# A 2D U-Net of real compute for performance measurement: 16-32-64 channels, 3x3
# convolutions, max-pool down, nearest up, skip connections. Its weights are seeded
# pseudo-random numbers (He-uniform, from a splitmix64 hash, so the bytes never vary),
# except that channel 0 of the top level carries the windowed image through: the output
# is sigmoid(PERF_SLOPE (x - 0.5) + the random channels' small contribution), a soft
# threshold at 300 HU that golden cases can check, computed by the whole network.
PERF_SIZE = 256
PERF_WINDOW = BONE_WINDOW
PERF_WIDTHS = (16, 32, 64)
PERF_SLOPE = 10.0  # per window unit: one logit per 100 HU
PERF_THRESHOLD = 0.5  # in window units: 300 HU
PERF_NOISE = 0.15  # bound of the head weights of the random channels (see the card)
PERF_SEED = 19
# (name, input channels, output channels, carries channel `identity` of its input as its
# channel 0, or None); the graph's order of convolutions
PERF_CONVS: tuple[tuple[str, int, int, int | None], ...] = (
    ("enc1a", 1, 16, 0),
    ("enc1b", 16, 16, 0),
    ("enc2a", 16, 32, None),
    ("enc2b", 32, 32, None),
    ("mid_a", 32, 64, None),
    ("mid_b", 64, 64, None),
    ("dec2a", 64 + 32, 32, None),
    ("dec2b", 32, 32, None),
    ("dec1a", 32 + 16, 16, 32),  # its input: [up(dec2b) 32, enc1b 16]; enc1b's channel 0
    ("dec1b", 16, 16, 0),
)


def _uniform(seed: int, shape: tuple[int, ...], bound: float) -> np.ndarray:
    """Uniform on [-bound, bound] in 2**20 + 1 steps, from a splitmix64 hash: the same
    float32 values on every machine (no random number generator stream involved)."""
    steps = 2**20
    z = np.arange(int(np.prod(shape)), dtype=np.uint64) + np.uint64(
        seed * 0x9E3779B97F4A7C15 % 2**64
    )
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    k = (z % np.uint64(2 * steps + 1)).astype(np.int64) - steps
    return (k.astype(np.float64) * (bound / steps)).astype(np.float32).reshape(shape)


def perf_weights() -> dict[str, np.ndarray]:
    """Every initializer of the U-Net: conv weights [out, in, 3, 3] and biases, the head."""
    out: dict[str, np.ndarray] = {}
    for i, (name, cin, cout, identity) in enumerate(PERF_CONVS):
        w = _uniform(PERF_SEED * 100 + 2 * i, (cout, cin, 3, 3), float(np.sqrt(6 / (9 * cin))))
        b = _uniform(PERF_SEED * 100 + 2 * i + 1, (cout,), 0.05)
        if identity is not None:
            w[0] = 0.0
            w[0, identity, 1, 1] = 1.0
            b[0] = 0.0
        out[f"{name}_w"], out[f"{name}_b"] = w, b
    head = _uniform(PERF_SEED * 100 + 99, (1, PERF_WIDTHS[0], 1, 1), PERF_NOISE)
    head[0, 0] = PERF_SLOPE
    out["head_w"] = head
    out["head_b"] = np.array([-PERF_SLOPE * PERF_THRESHOLD], dtype=np.float32)
    return out


def perf_flops(size: int = PERF_SIZE) -> int:
    """Multiply-adds x 2 of one slice: the convolutions and the head."""
    total, side = 0, size
    for name, cin, cout, _ in PERF_CONVS:
        side = {"enc1": size, "enc2": size // 2, "mid_": size // 4, "dec2": size // 2}.get(
            name[:4], size
        )
        total += 2 * 9 * cin * cout * side * side
    return total + 2 * PERF_WIDTHS[0] * size * size


def perf_graph() -> onnx.ModelProto:
    doc = (
        "PERFORMANCE MEASUREMENT ONLY, NOT FOR DIAGNOSIS. An untrained 2D U-Net "
        f"({'-'.join(map(str, PERF_WIDTHS))} channels, {perf_flops() / 1e9:.2f} GFLOP per "
        f"{PERF_SIZE}x{PERF_SIZE} slice) with seeded weights, on a CT slice windowed 300/1000; "
        f"mask = sigmoid({PERF_SLOPE:g} (x - {PERF_THRESHOLD:g}) + random channels of the "
        "network), a soft threshold at 300 HU."
    )
    weights = perf_weights()
    nodes: list[onnx.NodeProto] = []

    def conv(x: str, name: str) -> str:
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}_w", f"{name}_b"],
                [f"{name}_lin"],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
            )
        )
        nodes.append(helper.make_node("Relu", [f"{name}_lin"], [name]))
        return name

    def pool(x: str, out: str) -> str:
        nodes.append(helper.make_node("MaxPool", [x], [out], kernel_shape=[2, 2], strides=[2, 2]))
        return out

    def up_cat(x: str, skip: str, out: str) -> str:
        nodes.append(
            helper.make_node(
                "Resize",
                [x, "", "up_scales"],
                [f"{out}_up"],
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
                nearest_mode="floor",
            )
        )
        nodes.append(helper.make_node("Concat", [f"{out}_up", skip], [out], axis=1))
        return out

    e1 = conv(conv("image", "enc1a"), "enc1b")
    e2 = conv(conv(pool(e1, "pool1"), "enc2a"), "enc2b")
    mid = conv(conv(pool(e2, "pool2"), "mid_a"), "mid_b")
    d2 = conv(conv(up_cat(mid, e2, "cat2"), "dec2a"), "dec2b")
    d1 = conv(conv(up_cat(d2, e1, "cat1"), "dec1a"), "dec1b")
    nodes.append(helper.make_node("Conv", [d1, "head_w", "head_b"], ["logit"], kernel_shape=[1, 1]))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["mask"]))
    inits = [numpy_helper.from_array(a, n) for n, a in weights.items()]
    inits.append(_const("up_scales", [1.0, 1.0, 2.0, 2.0]))
    shape: list[int | str] = [BATCH, 1, PERF_SIZE, PERF_SIZE]
    return _model(
        "cds-ref-perf-unet",
        doc,
        nodes=nodes,
        inputs=[_io("image", shape)],
        outputs=[_io("mask", shape)],
        initializers=inits,
    )


def _conv3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3 x 3 convolution, zero padding 1, float64: [N, C, H, W] -> [N, O, H, W]."""
    n, _, h, wd = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd))
    for dy in range(3):
        for dx in range(3):
            tap = padded[:, :, dy : dy + h, dx : dx + wd]
            out += np.einsum("oc,nchw->nohw", w[:, :, dy, dx].astype(np.float64), tap)
    return out + b.astype(np.float64)[None, :, None, None]


def perf_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    w = perf_weights()

    def block(a: np.ndarray, first: str, second: str) -> np.ndarray:
        a = np.maximum(_conv3(a, w[f"{first}_w"], w[f"{first}_b"]), 0.0)
        return np.maximum(_conv3(a, w[f"{second}_w"], w[f"{second}_b"]), 0.0)

    def pool(a: np.ndarray) -> np.ndarray:
        n, c, h, wd = a.shape
        return a.reshape(n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))

    def up(a: np.ndarray) -> np.ndarray:
        return a.repeat(2, axis=2).repeat(2, axis=3)

    e1 = block(x.astype(np.float64), "enc1a", "enc1b")
    e2 = block(pool(e1), "enc2a", "enc2b")
    mid = block(pool(e2), "mid_a", "mid_b")
    d2 = block(np.concatenate([up(mid), e2], axis=1), "dec2a", "dec2b")
    d1 = block(np.concatenate([up(d2), e1], axis=1), "dec1a", "dec1b")
    head = w["head_w"][:, :, 0, 0].astype(np.float64)
    logit = np.einsum("oc,nchw->nohw", head, d1) + float(w["head_b"][0])
    return {"mask": sigmoid(logit).astype(np.float32)}


def perf_input() -> np.ndarray:
    return bone_input()  # the same window and size: the head phantom and the ramp


def perf_dense_block() -> dict[str, bytes]:
    """Golden case: bone-block's geometry (2 CT slices, 64 x 96, 0.7 x 0.5 mm, a 1000 HU
    block at rows 20-43, columns 30-69 of slice 1), its own UIDs; the mask expected is
    the block, known from how it was drawn."""
    hu = np.zeros((2, 64, 96))
    hu[0, 20:44, 30:70] = 1000
    datasets = synthetic.ct_series(hu, "cds-ref-perf-unet/dense-block", spacing=(0.7, 0.5))
    mask = np.zeros((64, 96), dtype=bool)
    mask[20:44, 30:70] = True
    expected = {
        "input": GOLDEN_INPUT,
        "min_dice": 0.95,
        "findings": [{"label": 0, "present": True, "mask": "mask.npz"}],
    }
    key = f"{datasets[0].SOPInstanceUID}_1"
    return golden_case(expected, datasets, {"mask.npz": _npz_bytes({key: mask})})


# --- building --------------------------------------------------------------------
@dataclass(frozen=True)
class Package:
    name: str
    graph: Callable[[], onnx.ModelProto]
    make_input: Callable[[], np.ndarray]
    reference: Callable[[np.ndarray], dict[str, np.ndarray]]
    #: golden cases written here (folder -> files) besides build_golden.py's
    golden: tuple[tuple[str, Callable[[], dict[str, bytes]]], ...] = ()


PACKAGES = (
    Package("cds-ref-ct-bone", bone_graph, bone_input, bone_reference),
    Package("cds-ref-cxr-triage", cxr_graph, cxr_input, cxr_reference),
    Package("cds-ref-blob-detect", blob_graph, blob_input, blob_reference),
    Package(
        "cds-ref-perf-unet",
        perf_graph,
        perf_input,
        perf_reference,
        golden=(("golden/dense-block", perf_dense_block),),
    ),
)


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Like np.savez_compressed, but with a fixed date on each entry (reproducible bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, _npy_bytes(arrays[name]), compresslevel=9)
    return buf.getvalue()


def _check_against_runtime(
    pkg: Package, manifest: Manifest, model: bytes, x: np.ndarray, expected: dict[str, np.ndarray]
) -> None:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [t.name for t in manifest.output.tensors]
    if sorted(names) != sorted(expected):
        raise SystemExit(f"{pkg.name}: manifest outputs {names} != reference {sorted(expected)}")
    got = session.run(names, {manifest.input.tensor.name: x})
    tv = manifest.test_vector
    for name, out in zip(names, got, strict=True):
        want = expected[name]
        if out.shape != want.shape or not np.allclose(out, want, atol=tv.atol, rtol=tv.rtol):
            diff = np.max(np.abs(out.astype(np.float64) - want)) if out.shape == want.shape else "-"
            raise SystemExit(
                f"{pkg.name}: onnxruntime and numpy disagree on {name!r}: shapes "
                f"{out.shape} / {want.shape}, max abs diff {diff}"
            )


def build(pkg: Package, out: Path) -> Path:
    manifest = load_manifest(HERE / pkg.name)
    if manifest.name != pkg.name:
        raise SystemExit(f"{HERE / pkg.name}/manifest.yaml names {manifest.name!r}")
    model = pkg.graph().SerializeToString()
    x = pkg.make_input()
    expected = pkg.reference(x)
    if pkg.name == "cds-ref-blob-detect":
        _check_blob_conditioning(expected, x)
    _check_against_runtime(pkg, manifest, model, x, expected)
    dest = out / pkg.name
    files = {
        "model.onnx": model,
        manifest.test_vector.input: _npy_bytes(x),
        manifest.test_vector.expected: _npz_bytes(expected),
    }
    for rel, data in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    build_golden(pkg.name, dest)
    for folder, make in pkg.golden:
        for rel, data in make().items():
            path = dest / folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write packages into")
    parser.add_argument("--only", choices=[p.name for p in PACKAGES], action="append")
    args = parser.parse_args(argv)
    for pkg in PACKAGES:
        if args.only and pkg.name not in args.only:
            continue
        dest = build(pkg, args.out)
        model = (dest / "model.onnx").read_bytes()
        print(f"{dest}: model.onnx {len(model)} bytes sha256 {hashlib.sha256(model).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
