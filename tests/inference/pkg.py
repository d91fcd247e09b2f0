"""Build tiny model packages for tests (a real ONNX graph, written with onnx.helper)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper

SIZE = 8


def classifier_onnx(size: int = SIZE) -> bytes:
    """scores = softmax([mean(x), -mean(x)]) per image; input [batch, 1, size, size]."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, size, size])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 2])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes"], ["m"], keepdims=1),
        helper.make_node("Reshape", ["m", "shape"], ["m2"]),
        helper.make_node("Neg", ["m2"], ["n2"]),
        helper.make_node("Concat", ["m2", "n2"], ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[axes, shape])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="cds-tests"
    )
    model.ir_version = 8
    return bytes(model.SerializeToString())


def expected_probs(x: np.ndarray) -> np.ndarray:
    m = x.reshape(len(x), -1).mean(axis=1)
    logits = np.stack([m, -m], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def manifest(**over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "name": "tiny-classifier",
        "version": "1.0.0",
        "manufacturer": "cds tests",
        "intended_use": {"en": "Test model", "fr": "Modèle de test"},
        "regulatory_status": {"en": "Not a medical device", "fr": "Pas un dispositif médical"},
        "input": {
            "kind": "slice",
            "modality": ["CT"],
            "tensor": {"name": "image", "shape": ["batch", 1, SIZE, SIZE], "layout": "NCHW"},
            "preprocessing": [
                {"step": "modality_lut"},
                {"step": "window", "center": 40, "width": 400},
                {"step": "resize", "size": [SIZE, SIZE]},
                {"step": "channels", "count": 1},
            ],
            "batch_size": 4,
        },
        "output": {
            "kind": "classification",
            "tensors": [{"name": "probs", "shape": ["batch", 2], "role": "scores", "layout": "NC"}],
            "labels": [
                {
                    "index": 0,
                    "code": {"scheme": "99CDS", "value": "T1", "meaning": "Bright"},
                    "display": {"en": "Bright", "fr": "Clair"},
                    "threshold": 0.5,
                },
                {
                    "index": 1,
                    "code": {"scheme": "99CDS", "value": "T2", "meaning": "Dark"},
                    "display": {"en": "Dark", "fr": "Sombre"},
                    "threshold": 0.5,
                },
            ],
            "results": ["SR"],
        },
        "test_vector": {
            "input": "test/input.npy",
            "expected": "test/expected.npz",
            "atol": 1e-5,
            "rtol": 1e-4,
        },
    }
    for k, v in over.items():
        m[k] = v
    return m


def write_package(root: Path, data: dict[str, Any] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(classifier_onnx())
    (root / "manifest.yaml").write_text(yaml.safe_dump(data or manifest(), allow_unicode=True))
    (root / "MODEL_CARD.md").write_text("# tiny classifier\nA test model.\n")
    (root / "test").mkdir(exist_ok=True)
    x = np.linspace(0, 1, 2 * SIZE * SIZE, dtype=np.float32).reshape(2, 1, SIZE, SIZE)
    np.save(root / "test" / "input.npy", x)
    np.savez(root / "test" / "expected.npz", probs=expected_probs(x))
    onnx.checker.check_model(onnx.load(str(root / "model.onnx")))
    return root
