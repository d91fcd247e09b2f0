"""issue 15: the three worked examples of docs/vendor-guide.md are real — their manifests
(read from the page) validate, golden cases included, against stand-in models of the
same shapes (``analytic``): an NHWC min-max classifier, a 3D label-map segmentation, an
xyxy detector with separate boxes, scores and labels."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from cds.golden import run_golden
from cds.inference import synthetic
from cds.inference.manifest import parse_manifest
from cds.inference.validate import validate_package

from .analytic import bbox_detector, mean_classifier, threshold_segmenter

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "vendor-guide.md"


def blocks() -> dict[str, dict[str, Any]]:
    """The guide's YAML blocks, by their first-line comment ('manifest.yaml (NAME)' or
    'golden/CASE/expected.yaml')."""
    out = {}
    for body in re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S):
        first = body.splitlines()[0]
        if first.startswith("# "):
            out[first[2:].strip()] = yaml.safe_load(body)
    return out


def package(tmp: Path, name: str, model: bytes, golden: dict[str, Any]) -> Path:
    """The guide's manifest NAME with ``model`` and a test vector computed by onnxruntime
    from zeros; ``golden``: case folder -> (input datasets, expected, extra files)."""
    data = blocks()[f"manifest.yaml ({name})"]
    m = parse_manifest(data)
    root = tmp / name
    root.mkdir()
    (root / "manifest.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    (root / "model.onnx").write_bytes(model)
    (root / "MODEL_CARD.md").write_text(f"# {name}\nA stand-in of the vendor guide.\n")
    shape = [
        d if isinstance(d, int) else (1 if d in ("batch", "K") else 4) for d in m.input.tensor.shape
    ]
    x = np.zeros(shape, np.float32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [t.name for t in m.output.tensors]
    y = dict(zip(names, session.run(names, {m.input.tensor.name: x}), strict=True))
    (root / "test").mkdir()
    np.save(root / "test" / "input.npy", x)
    np.savez(root / "test" / "expected.npz", **y)
    for folder, (datasets, expected, extra) in golden.items():
        synthetic.write(datasets, root / folder / "input")
        (root / folder / "expected.yaml").write_text(yaml.safe_dump(expected))
        for rel, writer in extra.items():
            writer(root / folder / rel)
    return root


def check(root: Path) -> list[str]:
    report = validate_package(root, "cpu", golden=run_golden)
    assert report.ok, report.errors
    assert report.warnings == []
    assert all(": OK: " in line for line in report.golden), report.golden
    return report.golden


def test_example_1_nhwc_minmax_classifier(tmp_path: Path) -> None:
    img = np.full((100, 128), 3500.0)
    img[:, :80] = 300.0  # MONOCHROME1: low is bright; 62.5 % bright: P = sigmoid(2) = 0.88
    ds = synthetic.projection(img, "guide/effusion", photometric="MONOCHROME1")
    expected = blocks()["golden/effusion/expected.yaml"]
    root = package(
        tmp_path,
        "acme-cxr-classifier",
        mean_classifier(224),
        {"golden/effusion": ([ds], expected, {})},
    )
    (line,) = check(root)
    assert "label 1 (Pleural effusion), present, score 0.88" in line


def test_example_2_volume_label_map(tmp_path: Path) -> None:
    hu = np.zeros((8, 48, 64))
    hu[2:6, 10:30, 20:50] = 120  # as in the guide's section 7
    datasets = synthetic.ct_series(
        hu, "guide/liver", spacing=(0.8, 0.8), slice_spacing=2.5, body_part="ABDOMEN"
    )
    masks = {f"{ds.SOPInstanceUID}_1": hu[i] > 60 for i, ds in enumerate(datasets)}
    expected = blocks()["golden/liver-block/expected.yaml"]
    model = threshold_segmenter(
        volume=True, output_layout="NDHW", encoding="labelmap", value=1, name="labels"
    )
    extra = {"mask.npz": lambda p: np.savez(p, **masks)}
    root = package(
        tmp_path, "acme-ct-liver", model, {"golden/liver-block": (datasets[::-1], expected, extra)}
    )
    (line,) = check(root)
    assert "label 1 (Liver structure), present, mask Dice 1.000 (SEG)" in line
    assert "label 2 (Focal liver lesion), absent" in line


@pytest.mark.parametrize("declared", ["xyxy", "yxyx"])
def test_example_3_xyxy_detector(tmp_path: Path, declared: str) -> None:
    hu = np.full((1, 64, 96), -1000.0)
    hu[0, 22:36, 40:58] = 40  # the nodule of the guide's golden case: [40, 22, 58, 36]
    (ds,) = synthetic.ct_series(hu, "guide/nodule", body_part="CHEST")
    expected = blocks()["golden/nodule/expected.yaml"]
    expected["findings"][0]["boxes"][0]["image"] = str(ds.SOPInstanceUID)
    model = bbox_detector(box_format="xyxy", batched=False, size=(256, 256), label_value=1)
    root = package(tmp_path, "acme-lung-nodules", model, {"golden/nodule": ([ds], expected, {})})
    if declared == "xyxy":
        (line,) = check(root)
        assert "1 box(es), IoU min" in line
        return
    text = (root / "manifest.yaml").read_text().replace("format: xyxy", "format: yxyx")
    (root / "manifest.yaml").write_text(text)
    errors = validate_package(root, "cpu", golden=run_golden).errors
    assert any("box 0 in the SR: IoU" in e and "below min_iou 0.9" in e for e in errors)
