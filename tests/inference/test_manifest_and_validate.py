"""issue 3: `cds model validate` proves a package or names every problem with its path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from cds.cli import app
from cds.inference.manifest import json_schema
from cds.inference.validate import validate_package

from .pkg import manifest, write_package

REPO = Path(__file__).resolve().parents[2]


def test_good_package_validates(tmp_path: Path) -> None:
    r = validate_package(write_package(tmp_path / "p"), "cpu")
    assert r.ok, r.errors
    assert r.provider == "CPU"
    assert r.sha256 is not None
    assert len(r.sha256) == 64
    assert r.test_vector_max_abs_diff["probs"] < 1e-5


def test_missing_files_are_each_reported(tmp_path: Path) -> None:
    p = write_package(tmp_path / "p")
    (p / "model.onnx").unlink()
    (p / "MODEL_CARD.md").unlink()
    (p / "test" / "expected.npz").unlink()
    errors = validate_package(p, "cpu").errors
    assert f"{p / 'model.onnx'}: missing" in errors
    assert f"{p / 'MODEL_CARD.md'}: missing" in errors
    assert any("test_vector.expected: file test/expected.npz missing" in e for e in errors)


def test_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    m = manifest()
    m["input"]["tensor"]["shape"] = ["batch", 1, 16, 16]
    m["input"]["preprocessing"][2]["size"] = [16, 16]
    errors = validate_package(write_package(tmp_path / "p", m), "cpu").errors
    assert len(errors) == 1
    assert "input.tensor.shape: declares ['batch', 1, 16, 16]" in errors[0]
    assert "[" in errors[0].split("has")[-1]


def test_preprocessing_size_must_agree_with_the_input_tensor(tmp_path: Path) -> None:
    m = manifest()
    m["input"]["tensor"]["shape"] = ["batch", 1, 16, 16]
    (err,) = validate_package(write_package(tmp_path / "p", m), "cpu").errors
    assert err.endswith(
        "input.tensor.shape: H x W is 16 x 16, input.preprocessing[2] makes 8 x 8; make them agree"
    )


def test_unknown_tensor_name_and_dtype(tmp_path: Path) -> None:
    m = manifest()
    m["output"]["tensors"][0]["name"] = "scores"
    m["input"]["tensor"]["dtype"] = "uint8"
    errors = validate_package(write_package(tmp_path / "p", m), "cpu").errors
    assert any("output.tensors[0].name: model.onnx has no tensor 'scores'" in e for e in errors)
    assert any("input.tensor.dtype: declares uint8" in e for e in errors)


def test_unknown_preprocessing_step(tmp_path: Path) -> None:
    m = manifest()
    m["input"]["preprocessing"].insert(1, {"step": "sharpen", "amount": 2})
    errors = validate_package(write_package(tmp_path / "p", m), "cpu").errors
    assert errors == [
        f"{tmp_path / 'p' / 'manifest.yaml'}: input.preprocessing[1]: unknown preprocessing step "
        "'sharpen' (known: modality_lut, window, percentile_clip, resize, resample_spacing, "
        "crop_or_pad, orient, normalize, channels, scale)"
    ]


def test_wrong_test_vector_is_caught(tmp_path: Path) -> None:
    p = write_package(tmp_path / "p")
    bad = np.load(p / "test" / "expected.npz")["probs"][:, ::-1]
    np.savez(p / "test" / "expected.npz", probs=bad)
    (err,) = validate_package(p, "cpu").errors
    assert "test_vector: output 'probs' differs from test/expected.npz" in err
    assert "max abs diff" in err


def test_schema_errors_keep_going(tmp_path: Path) -> None:
    m = manifest(name="Bad Name", version="1.0")
    m["output"]["kind"] = "segmentation"
    m["intended_use"] = {"en": "only English"}
    errors = validate_package(write_package(tmp_path / "p", m), "cpu").errors
    text = "\n".join(errors)
    assert "name: must be 2..64" in text
    assert "version: must be a semantic version" in text
    assert "intended_use.fr: required; add it" in text
    assert "output: kind segmentation needs output tensors with roles ['mask']" in text


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    good = write_package(tmp_path / "good")
    bad = write_package(tmp_path / "bad")
    (bad / "model.onnx").write_bytes(b"not onnx")
    res = CliRunner().invoke(app, ["model", "validate", str(good), str(bad), "--providers", "cpu"])
    assert res.exit_code == 1
    assert f"{good}: OK  tiny-classifier 1.0.0" in res.output
    assert "provider CPU" in res.output
    assert f"{bad}: 1 problem(s)" in res.output
    assert "onnxruntime cannot load the model" in res.output


def test_published_schema_is_current() -> None:
    published = json.loads((REPO / "models" / "manifest.schema.json").read_text())
    assert published == json_schema(), "run: cds model schema --out models/manifest.schema.json"


def test_asking_for_cuda_without_gpu_reports_the_real_provider(tmp_path: Path) -> None:
    from cds.inference.session import gpu_runtime_present

    r = validate_package(write_package(tmp_path / "p"), "cuda")
    assert r.ok
    if not gpu_runtime_present():
        assert r.provider == "CPU"
    assert yaml.safe_load((tmp_path / "p" / "manifest.yaml").read_text())["name"]


def test_fetched_model_is_checked_against_the_pinned_sha256(tmp_path: Path) -> None:
    p = write_package(tmp_path / "p", manifest(fetch={"script": "fetch.py", "sha256": "0" * 64}))
    (err,) = validate_package(p, "cpu").errors
    assert "fetch.sha256: model.onnx has SHA-256" in err
    assert "the manifest pins " + "0" * 64 in err
    (p / "model.onnx").unlink()
    errors = validate_package(p, "cpu").errors
    assert f"{p / 'model.onnx'}: missing (fetch it: python {p / 'fetch.py'})" in errors


def test_informational_and_normal_classes_are_never_findings(tmp_path: Path) -> None:
    from cds.findings import ImageRef
    from cds.inference.manifest import parse_manifest
    from cds.inference.postprocess import Outputs, postprocess

    m = manifest()
    m["output"]["labels"][0]["threshold"] = None
    m["output"]["labels"][1]["normal"] = True
    out = parse_manifest(m).output
    images = [ImageRef("1.2", 1)]
    raw = Outputs({"scores": np.array([[0.9, 0.95]], dtype=np.float32)})
    f0, f1 = postprocess(out, raw, images, [], None)  # type: ignore[arg-type]
    assert (f0.score, f0.present) == (np.float32(0.9).item(), False)
    assert (f1.score, f1.present) == (np.float32(0.95).item(), False)
