"""issue 15: every tensor names its layout; a manifest that contradicts itself or its
ONNX graph is refused with the path at fault and what to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cds.errors import ModelError
from cds.golden import run_golden
from cds.inference import layouts
from cds.inference.manifest import ManifestError, parse_manifest
from cds.inference.validate import validate_package

from .analytic import mean_classifier, threshold_segmenter
from .pkg import manifest


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, "m.yaml")
    return info.value.errors


def volume_manifest(mask: dict[str, Any]) -> dict[str, Any]:
    m = manifest()
    m["input"] = {
        "kind": "volume",
        "modality": ["CT"],
        "tensor": {"name": "image", "shape": [1, 1, "D", "H", "W"], "layout": "NCDHW"},
        "preprocessing": [{"step": "modality_lut"}],
    }
    m["output"] = {
        "kind": "segmentation",
        "tensors": [{"name": "mask", "role": "mask", "dtype": "uint8", **mask}],
        "labels": [m["output"]["labels"][0] | {"index": 1}],
        "results": ["SEG"],
    }
    return m


def test_a_layout_is_required_on_every_tensor() -> None:
    m = manifest()
    del m["output"]["tensors"][0]["layout"]
    del m["input"]["tensor"]["layout"]
    errs = errors_of(m)
    assert (
        "m.yaml: input.tensor.layout: required: say what each dimension is, e.g. "
        "layout: NCHW (see docs/vendor-guide.md, 'Layouts')" in errs
    )
    assert any(e.startswith("m.yaml: output.tensors[0].layout: required") for e in errs)


def test_the_vendors_label_map_declared_as_ncdhw_is_named_with_the_fix() -> None:
    m = volume_manifest({"shape": [1, "D", "H", "W"], "layout": "NCDHW", "encoding": "labelmap"})
    assert errors_of(m) == [
        "m.yaml: output.tensors[0]: shape [1, D, H, W] does not match layout NCDHW "
        "(5 dimensions); set layout: NDHW"
    ]
    m = volume_manifest({"shape": [1, "D", "H", "W"], "layout": "NCDHW"})
    assert errors_of(m) == [
        "m.yaml: output.tensors[0]: shape [1, D, H, W] does not match layout NCDHW "
        "(5 dimensions); set layout: one of DCHW, NDHW"
    ]
    ok = volume_manifest({"shape": [1, "D", "H", "W"], "layout": "NDHW", "encoding": "labelmap"})
    assert parse_manifest(ok).output.tensors[0].layout == "NDHW"


def test_nhwc_declared_as_nchw_says_which_dimension_is_c() -> None:
    m = manifest()
    m["input"]["tensor"]["shape"] = ["batch", 8, 8, 3]
    m["input"]["preprocessing"][3] = {"step": "channels", "count": 3}
    assert errors_of(m) == [
        "m.yaml: input.tensor.shape: dimension C of layout NCHW is 8, the preprocessing makes "
        "3 channel(s); if the channels are the other dimension, set layout: NHWC"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda m: m["output"]["tensors"][0].update(layout="NCHW"),
            "output.tensors[0].layout: NCHW is not a layout of a scores (probabilities) for "
            "input.kind slice; set layout: NC",
        ),
        (
            lambda m: m["output"]["labels"][1].update(index=3),
            "output.tensors[0].shape: 2 classes (dimension C), output.labels has index 3; "
            "a label's index is its class (channel) in this tensor",
        ),
        (
            lambda m: m["output"]["labels"][0]["code"].update(scheme="99ACME"),
            "output.labels[0].code.scheme: 99ACME is not declared; add it to coding_schemes "
            "(designator, name, organization) or use SCT, RADLEX, DCM, LN, UCUM",
        ),
        (
            lambda m: m.update(
                coding_schemes=[{"designator": "99CDS", "name": "x", "organization": "y"}]
            ),
            "coding_schemes[0].designator: 99CDS is the cds project's own scheme; declare "
            "yours (99 then your name, e.g. 99ACME)",
        ),
        (
            lambda m: m["input"]["preprocessing"][3].update(layout="NHWC"),
            "input.preprocessing[3].layout: NHWC contradicts input.tensor.layout NCHW; "
            "remove it (the tensor's layout decides)",
        ),
        (
            lambda m: m["input"]["preprocessing"].append({"step": "resize", "size": [8, 8]}),
            "input.preprocessing[4]: step resize after channels (input.preprocessing[3]); "
            "only normalize and scale may follow channels: move channels down",
        ),
        (
            lambda m: m["input"]["tensor"].update(layout="NCDHW"),
            "input.tensor.layout: NCDHW does not fit input.kind slice; set layout: NCHW or NHWC",
        ),
    ],
)
def test_contradictions_name_their_path_and_the_fix(change: Any, expected: str) -> None:
    m = manifest()
    change(m)
    assert errors_of(m) == [f"m.yaml: {expected}"]


def test_detection_needs_a_box_format_and_unbatched_boxes_a_batch_of_one() -> None:
    m = manifest()
    m["output"] = {
        "kind": "detection",
        "tensors": [
            {"name": "boxes", "role": "boxes", "shape": ["k", 4], "layout": "K4"},
            {"name": "scores", "role": "box_scores", "shape": ["k"], "layout": "K"},
        ],
        "labels": [m["output"]["labels"][0]],
        "results": ["SR"],
    }
    errs = errors_of(m)
    assert (
        "m.yaml: output.tensors[0].box: required for role boxes (format: xyxy, yxyx, "
        "xywh or cxcywh)" in errs
    )
    assert (
        "m.yaml: output.tensors[0].layout: K4 has no batch dimension; set "
        "input.batch_size: 1" in errs
    )


def write(tmp: Path, model: bytes, m: dict[str, Any], x: np.ndarray, y: dict[str, Any]) -> Path:
    tmp.mkdir(parents=True)
    (tmp / "model.onnx").write_bytes(model)
    (tmp / "manifest.yaml").write_text(yaml.safe_dump(m))
    (tmp / "MODEL_CARD.md").write_text("# test\n")
    (tmp / "test").mkdir()
    np.save(tmp / "test" / "input.npy", x)
    np.savez(tmp / "test" / "expected.npz", **y)
    return tmp


def test_validate_checks_layouts_against_the_graphs_fixed_dimensions(tmp_path: Path) -> None:
    """The manifest leaves the dimensions free, the graph fixes them: [n, 16, 16, 3] is
    NHWC, and the manifest's NCHW is refused naming the fix."""
    m = manifest()
    m["input"]["tensor"] = {"name": "image", "shape": ["n", "a", "b", "c"], "layout": "NCHW"}
    m["input"]["preprocessing"] = [
        {"step": "resize", "size": [16, 16]},
        {"step": "channels", "count": 3},
    ]
    m["output"]["tensors"] = [
        {
            "name": "logits",
            "role": "scores",
            "shape": ["n", 2],
            "layout": "NC",
            "activation": "softmax",
        }
    ]
    x = np.zeros((1, 16, 16, 3), np.float32)
    y = {"logits": np.array([[4.0, -4.0]], np.float32)}
    report = validate_package(write(tmp_path / "p", mean_classifier(16), m, x, y), "cpu")
    assert report.errors == [
        f"{tmp_path / 'p' / 'manifest.yaml'}: input.tensor.shape: dimension C of layout NCHW "
        "is 16, the preprocessing makes 3 channel(s); if the channels are the other "
        "dimension, set layout: NHWC"
    ]


def test_validate_without_golden_cases_warns_geometry_not_verified(tmp_path: Path) -> None:
    m = manifest()
    m["input"]["tensor"] = {"name": "image", "shape": ["n", 16, 16, 3], "layout": "NHWC"}
    m["input"]["preprocessing"] = [
        {"step": "resize", "size": [16, 16]},
        {"step": "channels", "count": 3},
    ]
    m["output"]["tensors"] = [
        {
            "name": "logits",
            "role": "scores",
            "shape": ["n", 2],
            "layout": "NC",
            "activation": "softmax",
        }
    ]
    x = np.zeros((1, 16, 16, 3), np.float32)
    y = {"logits": np.array([[4.0, -4.0]], np.float32)}
    report = validate_package(
        write(tmp_path / "p", mean_classifier(16), m, x, y), "cpu", golden=run_golden
    )
    assert report.ok, report.errors
    (warning,) = report.warnings
    assert "geometry not verified" in warning


def test_an_output_that_does_not_fit_its_layout_at_run_time_is_named() -> None:
    with pytest.raises(ModelError) as info:
        layouts.canonical(
            "mask",
            "NCDHW",
            np.zeros((1, 7, 8, 8)),
            images=7,
            volume=True,
            where="output.tensors[0] ('mask')",
        )
    assert str(info.value) == (
        "output.tensors[0] ('mask'): the model returned shape [1, 7, 8, 8] (4 dimensions), "
        "layout NCDHW has 5; set layout: one of DCHW, NDHW"
    )
    with pytest.raises(ModelError, match=r"dimension D of layout NDHW is 6, the volume has 7"):
        layouts.canonical(
            "mask", "NDHW", np.zeros((1, 6, 8, 8)), images=7, volume=True, where="output.tensors[0]"
        )


def test_the_vendors_3d_model_runs_instead_of_crashing(tmp_path: Path) -> None:
    """[1, 1, D, H, W] in, [1, D, H, W] uint8 label map out: the IndexError of issue 15."""
    from cds.inference import synthetic
    from cds.inference.images import decode

    from .analytic import load

    m = parse_manifest(
        volume_manifest({"shape": [1, "D", "H", "W"], "layout": "NDHW", "encoding": "labelmap"})
    )
    hu = np.zeros((3, 16, 24))
    hu[1, 4:8, 10:20] = 1
    files = synthetic.write(synthetic.ct_series(hu + 1024 - 1024, "v3d"), tmp_path / "in")
    runner = load(
        threshold_segmenter(volume=True, output_layout="NDHW", encoding="labelmap", threshold=0.5),
        m,
        tmp_path / "m",
    )
    (finding,) = runner.run(decode(files)).findings
    (mask,) = finding.per_image.values()
    assert mask.sum() == 40
