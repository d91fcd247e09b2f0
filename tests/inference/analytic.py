"""Models whose outputs are analytic functions of their input (written with onnx.helper),
their manifests, and the end-to-end run used by the geometry tests.

- ``bbox_detector``: the box around the pixels above a threshold, in any box format,
  batched or not, with a labels tensor or a per-class score matrix;
- ``threshold_segmenter``: the pixels above a threshold, as probabilities (one or two
  classes) or a label map, 2D or 3D, in any output layout;
- ``mean_classifier``: softmax logits of the image mean (NHWC input).

``run_e2e`` runs a model through cds (decode, preprocess, onnxruntime, postprocess),
encodes the results, writes them as files, reads them back and runs dciodvfy.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydicom import dcmread
from pydicom.dataset import Dataset

from cds.findings import InferenceResult
from cds.inference import manifest as mf
from cds.inference.images import decode
from cds.inference.registry import LoadedModel
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots, Session
from cds.inference.validate import sha256_file
from cds.results.encode import encode, write_results

OPSET = 17
FLOAT = TensorProto.FLOAT


def _c(name: str, value: object, dtype: Any = np.float32) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any]) -> bytes:
    graph = helper.make_graph(nodes, "analytic", inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cds-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def bbox_detector(  # noqa: PLR0912 - one branch per box format and option
    *,
    input_layout: str = "NCHW",
    box_format: str = "xyxy",
    units: str = "pixels",
    batched: bool = True,
    size: tuple[int, int],
    threshold: float = 0.5,
    label_value: int = 1,
    score_classes: int = 0,
) -> bytes:
    """boxes: the bounding box (edges) of the pixels > threshold; score: the image max;
    labels: ``label_value`` (int64), or a score matrix of ``score_classes`` classes whose
    class ``label_value`` holds the score."""
    h, w = size
    shape = ["n", 1, h, w] if input_layout == "NCHW" else ["n", h, w, 1]
    row_axes, col_axes = ([1, 3], [1, 2]) if input_layout == "NCHW" else ([2, 3], [1, 3])
    nodes = [
        helper.make_node("Greater", ["image", "t"], ["gt"]),
        helper.make_node("Cast", ["gt"], ["m"], to=FLOAT),
        helper.make_node("ReduceMax", ["m"], ["rows"], axes=row_axes, keepdims=0),
        helper.make_node("ReduceMax", ["m"], ["cols"], axes=col_axes, keepdims=0),
    ]
    for prof, lo, hi in (("rows", "r0", "r1"), ("cols", "c0", "c1")):
        nodes += [
            helper.make_node("ArgMax", [prof], [f"{lo}_i"], axis=1, keepdims=1),
            helper.make_node(
                "ArgMax", [prof], [f"{hi}_i"], axis=1, keepdims=1, select_last_index=1
            ),
            helper.make_node("Cast", [f"{lo}_i"], [lo], to=FLOAT),
            helper.make_node("Cast", [f"{hi}_i"], [f"{hi}_last"], to=FLOAT),
            helper.make_node("Add", [f"{hi}_last", "one"], [hi]),  # exclusive edge
        ]
    # edges: x1 = c0, y1 = r0, x2 = c1, y2 = r1  ([n, 1] each)
    x1, y1, x2, y2 = "c0", "r0", "c1", "r1"
    if units == "normalized":
        nodes += [
            helper.make_node("Div", [x1, "w"], ["nx1"]),
            helper.make_node("Div", [x2, "w"], ["nx2"]),
            helper.make_node("Div", [y1, "h"], ["ny1"]),
            helper.make_node("Div", [y2, "h"], ["ny2"]),
        ]
        x1, y1, x2, y2 = "nx1", "ny1", "nx2", "ny2"
    if box_format == "xyxy":
        parts = [x1, y1, x2, y2]
    elif box_format == "yxyx":
        parts = [y1, x1, y2, x2]
    else:
        nodes += [
            helper.make_node("Sub", [x2, x1], ["bw"]),
            helper.make_node("Sub", [y2, y1], ["bh"]),
        ]
        if box_format == "xywh":
            parts = [x1, y1, "bw", "bh"]
        else:
            nodes += [
                helper.make_node("Add", [x1, x2], ["sx"]),
                helper.make_node("Add", [y1, y2], ["sy"]),
                helper.make_node("Div", ["sx", "two"], ["cx"]),
                helper.make_node("Div", ["sy", "two"], ["cy"]),
            ]
            parts = ["cx", "cy", "bw", "bh"]
    for p in parts:
        nodes.append(helper.make_node("Unsqueeze", [p, "axis2"], [f"{p}_u"]))
    nodes += [
        helper.make_node("Concat", [f"{p}_u" for p in parts], ["boxes_b"], axis=2),
        helper.make_node("ReduceMax", ["image"], ["score_n"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["score_n", "axis1"], ["scores_b"]),  # [n, 1]
        helper.make_node("Mul", ["c0_i", "zero_i"], ["zeros_i"]),
        helper.make_node("Add", ["zeros_i", "label_i"], ["labels_b"]),  # [n, 1] int64
    ]
    inits = [
        _c("t", threshold),
        _c("one", 1.0),
        _c("two", 2.0),
        _c("w", float(w)),
        _c("h", float(h)),
        _c("axis1", [1], np.int64),
        _c("axis2", [2], np.int64),
        _c("axis0", [0], np.int64),
        _c("zero_i", 0, np.int64),
        _c("label_i", label_value, np.int64),
    ]
    score_out = "scores_b"
    if score_classes:
        cols = []
        for k in range(score_classes):
            name = f"class_{k}"
            if k == label_value:
                nodes.append(helper.make_node("Unsqueeze", ["scores_b", "axis2"], [name]))
            else:
                nodes += [
                    helper.make_node("Mul", ["scores_b", "zero_f"], [f"{name}_z"]),
                    helper.make_node("Unsqueeze", [f"{name}_z", "axis2"], [name]),
                ]
            cols.append(name)
        nodes.append(helper.make_node("Concat", cols, ["matrix_b"], axis=2))  # [n, 1, C]
        inits.append(_c("zero_f", 0.0))
        score_out = "matrix_b"
    outs = {"boxes": "boxes_b", "scores": score_out, "labels": "labels_b"}
    if not batched:
        for name, src in list(outs.items()):
            nodes.append(helper.make_node("Squeeze", [src, "axis0"], [f"{name}_u"]))
            outs[name] = f"{name}_u"
    for name, src in outs.items():
        nodes.append(helper.make_node("Identity", [src], [name]))
    lead = ["n", 1] if batched else [1]
    score_shape = [*lead, score_classes] if score_classes else lead
    outputs = [
        helper.make_tensor_value_info("boxes", FLOAT, [*lead, 4]),
        helper.make_tensor_value_info("scores", FLOAT, score_shape),
        helper.make_tensor_value_info("labels", TensorProto.INT64, lead),
    ]
    image = helper.make_tensor_value_info("image", FLOAT, shape)
    return _model(nodes, [image], outputs, inits)


def threshold_segmenter(
    *,
    volume: bool,
    output_layout: str,
    encoding: str,
    classes: int = 1,
    threshold: float = 0.5,
    value: int = 1,
    name: str = "mask",
    channels_last: bool = False,
) -> bytes:
    """pixels > threshold: a label map (``value`` where above, else 0, uint8) or
    probabilities sigmoid(200 (x - t)): one class, or two (background, foreground).
    ``channels_last``: the input is NDHWC (or NHWC), moved to NCDHW first."""
    shape: list[Any] = ["n", 1, "d", "h", "w"] if volume else ["n", 1, "h", "w"]
    nodes = []
    x = "image"
    if channels_last:
        shape = [shape[0], *shape[2:], 1]
        perm = [0, 4, 1, 2, 3] if volume else [0, 3, 1, 2]
        nodes.append(helper.make_node("Transpose", ["image"], ["x"], perm=perm))
        x = "x"
    if encoding == "labelmap":
        nodes += [
            helper.make_node("Greater", [x, "t"], ["gt"]),
            helper.make_node("Cast", ["gt"], ["m"], to=FLOAT),
            helper.make_node("Mul", ["m", "value"], ["mv"]),
            helper.make_node("Cast", ["mv"], ["full"], to=TensorProto.UINT8),
        ]
        elem = TensorProto.UINT8
    else:
        nodes += [
            helper.make_node("Sub", [x, "t"], ["d"]),
            helper.make_node("Mul", ["d", "k"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["p"]),
        ]
        if classes == 2:
            nodes += [
                helper.make_node("Sub", ["one", "p"], ["q"]),
                helper.make_node("Concat", ["q", "p"], ["full"], axis=1),
            ]
        else:
            nodes.append(helper.make_node("Identity", ["p"], ["full"]))
        elem = FLOAT
    layout = output_layout
    src = "NCDHW" if volume else "NCHW"
    cur = "full"
    if "C" not in layout:  # drop the channel (one class or a label map)
        nodes.append(helper.make_node("Squeeze", [cur, "axis1"], ["noc"]))
        cur, src = "noc", src.replace("C", "")
    if layout[0] != "N":  # slice-major, no batch
        nodes.append(helper.make_node("Squeeze", [cur, "axis0"], ["non"]))
        cur, src = "non", src.replace("N", "")
    perm = [src.index(ch) for ch in layout]
    nodes.append(helper.make_node("Transpose", [cur], [name], perm=perm))
    inits = [
        _c("t", threshold),
        _c("k", 200.0),
        _c("one", 1.0),
        _c("value", float(value)),
        _c("axis0", [0], np.int64),
        _c("axis1", [1], np.int64),
    ]
    image = helper.make_tensor_value_info("image", FLOAT, shape)
    out = helper.make_tensor_value_info(name, elem, [f"{ch}{i}" for i, ch in enumerate(layout)])
    return _model(nodes, [image], [out], inits)


def mean_classifier(size: int) -> bytes:
    """logits [n, 2] = 8 * (mean - 0.5) * (-1, 1) of an NHWC image (cds applies softmax)."""
    image = helper.make_tensor_value_info("image", FLOAT, ["n", size, size, 3])
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sub", ["m", "half"], ["c"]),
        helper.make_node("Unsqueeze", ["c", "axis1"], ["c2"]),
        helper.make_node("Mul", ["c2", "w"], ["logits"]),
    ]
    inits = [_c("half", 0.5), _c("axis1", [1], np.int64), _c("w", [[-8.0, 8.0]])]
    out = helper.make_tensor_value_info("logits", FLOAT, ["n", 2])
    return _model(nodes, [image], [out], inits)


# --- manifests -------------------------------------------------------------------
def label(index: int, meaning: str = "Bright blob", threshold: float | None = 0.5) -> dict:
    return {
        "index": index,
        "code": {"scheme": "99ACME", "value": f"ACME-{index}", "meaning": meaning},
        "display": {"en": meaning, "fr": f"{meaning} (fr)"},
        "threshold": threshold,
    }


def manifest(
    *,
    name: str,
    kind: str,
    input_spec: dict[str, Any],
    output: dict[str, Any],
) -> mf.Manifest:
    return mf.parse_manifest(
        {
            "name": name,
            "version": "1.0.0",
            "manufacturer": "ACME Imaging",
            "coding_schemes": [
                {"designator": "99ACME", "name": "ACME codes", "organization": "ACME Imaging"}
            ],
            "intended_use": {"en": "Geometry test", "fr": "Test de géométrie"},
            "regulatory_status": {"en": "Not a medical device", "fr": "Pas un dispositif"},
            "input": {"kind": kind, **input_spec},
            "output": output,
            "test_vector": {"input": "t/x.npy", "expected": "t/y.npz"},
        }
    )


# --- running -----------------------------------------------------------------------
def load(model: bytes, m: mf.Manifest, folder: Path) -> ModelRunner:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model)
    session = Session(path, "cpu")
    loaded = LoadedModel(folder, "ready", m, sha256_file(path), "CPU", session=session)
    return ModelRunner(loaded, DeviceSlots(1, 1))


def dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        return []
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def run_e2e(
    runner: ModelRunner,
    files: list[Path],
    kinds: list[str],
    out: Path,
    lang: str = "en",
) -> tuple[InferenceResult, dict[str, Dataset]]:
    """cds end to end on ``files`` (in the order given): the result and each encoded
    object read back from its file, by Modality (SR, SEG, PR). Every object is checked
    with dciodvfy (0 errors)."""
    result = runner.run(decode(files))
    sources = [dcmread(f) for f in files]
    objects, skipped = encode(sources, result, runner.manifest, kinds, lang, seed="e2e")
    assert not [s for s in skipped if "SC" not in s], skipped
    paths = write_results(out, "study", objects)
    back: dict[str, Dataset] = {}
    for p in paths:
        assert dciodvfy_errors(p) == [], (p.parent.name, dciodvfy_errors(p))
        ds = dcmread(p)
        back.setdefault(str(ds.Modality), ds)
    return result, back
