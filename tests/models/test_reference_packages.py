"""Issue 3, reference models: the bundled packages in models/ are valid and reproducible.

For each of cds-ref-ct-bone, cds-ref-cxr-triage and cds-ref-blob-detect: the
manifest loads; the ONNX graph's tensors are the ones the manifest declares;
the test vector passes; MODEL_CARD.md names the model's SHA-256;
models/build_reference.py rebuilds model.onnx byte for byte; and on real images
of the shared corpus each model gives a plausible output.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cds.inference.manifest import Manifest, load_manifest

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
DICOM = REPO.parent / "shared" / "dicom"
PACKAGES = ("cds-ref-ct-bone", "cds-ref-cxr-triage", "cds-ref-blob-detect")
MAX_FILE_BYTES = 20 * 1024 * 1024
ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}

needs_corpus = pytest.mark.skipif(
    not DICOM.is_dir(), reason=f"shared DICOM corpus not found at {DICOM}"
)


def _session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(MODELS / name / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def _run(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    session = _session(name)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": x}), strict=True))


def _manifest(name: str) -> Manifest:
    return load_manifest(MODELS / name)


# --- the packages ------------------------------------------------------------------
@pytest.mark.parametrize("name", PACKAGES)
def test_manifest_loads_and_files_are_small(name: str) -> None:
    m = _manifest(name)
    assert m.name == name
    package = MODELS / name
    files = ["model.onnx", "manifest.yaml", "MODEL_CARD.md", m.test_vector.input]
    files.append(m.test_vector.expected)
    for rel in files:
        path = package / rel
        assert path.is_file(), rel
        assert path.stat().st_size < MAX_FILE_BYTES, rel
    for text in (m.intended_use, m.regulatory_status):
        assert text.en.strip()
        assert text.fr.strip()
    assert "not a medical device" in m.regulatory_status.en.lower()
    assert "pas un dispositif médical" in m.regulatory_status.fr.lower()


def _dims_agree(declared: list[int | str], actual: list[Any]) -> bool:
    if len(declared) != len(actual):
        return False
    for d, a in zip(declared, actual, strict=True):
        free_declared = isinstance(d, str) or d == -1
        free_actual = not isinstance(a, int) or a < 0
        if free_declared != free_actual or (not free_declared and d != a):
            return False
    return True


@pytest.mark.parametrize("name", PACKAGES)
def test_graph_tensors_match_manifest(name: str) -> None:
    m = _manifest(name)
    session = _session(name)
    (x,) = session.get_inputs()
    assert x.name == m.input.tensor.name
    assert _dims_agree(m.input.tensor.shape, x.shape), (m.input.tensor.shape, x.shape)
    assert ORT_DTYPES[x.type] == m.input.tensor.dtype
    outputs = {o.name: o for o in session.get_outputs()}
    assert sorted(outputs) == sorted(t.name for t in m.output.tensors)
    for t in m.output.tensors:
        out = outputs[t.name]
        assert _dims_agree(t.shape, out.shape), (t.name, t.shape, out.shape)
        assert ORT_DTYPES[out.type] == t.dtype


@pytest.mark.parametrize("name", PACKAGES)
def test_model_is_opset_17_without_timestamps(name: str) -> None:
    model = onnx.load(str(MODELS / name / "model.onnx"))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.ir_version == 8
    assert model.producer_name == "cds models/build_reference.py"
    onnx.checker.check_model(model, full_check=True)


@pytest.mark.parametrize("name", PACKAGES)
def test_test_vector_passes(name: str) -> None:
    m = _manifest(name)
    package = MODELS / name
    x = np.load(package / m.test_vector.input, allow_pickle=False)
    expected = np.load(package / m.test_vector.expected, allow_pickle=False)
    assert x.dtype == np.float32
    got = _run(name, x)
    assert sorted(expected.files) == sorted(got)
    for key, want in expected.items():
        assert got[key].shape == want.shape, key
        np.testing.assert_allclose(
            got[key], want, atol=m.test_vector.atol, rtol=m.test_vector.rtol, err_msg=key
        )


@pytest.mark.parametrize("name", PACKAGES)
def test_model_card_names_the_model_sha256(name: str) -> None:
    digest = hashlib.sha256((MODELS / name / "model.onnx").read_bytes()).hexdigest()
    card = (MODELS / name / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert digest in card, f"MODEL_CARD.md of {name} does not name SHA-256 {digest}"


def test_build_script_reproduces_the_packages(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(MODELS / "build_reference.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    for name in PACKAGES:
        m = _manifest(name)
        built, committed = tmp_path / name, MODELS / name
        golden = [p.relative_to(committed) for g in m.golden for p in (committed / g).rglob("*")
                  if p.is_file()]  # fmt: skip
        assert golden, f"{name} ships no golden case"
        for rel in ("model.onnx", m.test_vector.input, *golden):
            assert (built / rel).read_bytes() == (committed / rel).read_bytes(), f"{name}/{rel}"
        # numpy's exp may differ in the last bit between builds of numpy: compare values.
        new = np.load(built / m.test_vector.expected)
        old = np.load(committed / m.test_vector.expected)
        assert sorted(new.files) == sorted(old.files)
        for key in old.files:
            np.testing.assert_allclose(new[key], old[key], rtol=0, atol=1e-6, err_msg=key)


# --- real images (the numpy below does what the manifests' preprocessing says) ------
def _read(path: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:  # e.g. a file with no meta header
        implicit = ds.original_encoding[0]
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        )
    return ds


def _resize(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear, corners aligned."""
    h, w = img.shape
    r = np.linspace(0, h - 1, rows)
    c = np.linspace(0, w - 1, cols)
    r0 = np.minimum(np.floor(r).astype(int), h - 2)
    c0 = np.minimum(np.floor(c).astype(int), w - 2)
    fr, fc = (r - r0)[:, None], (c - c0)[None, :]
    a = img[np.ix_(r0, c0)]
    b = img[np.ix_(r0, c0 + 1)]
    d = img[np.ix_(r0 + 1, c0)]
    e = img[np.ix_(r0 + 1, c0 + 1)]
    out = (a * (1 - fc) + b * fc) * (1 - fr) + (d * (1 - fc) + e * fc) * fr
    return out.astype(np.float32)


def _ct_tensor(paths: list[Path], center: float, width: float) -> np.ndarray:
    images = []
    for path in paths:
        ds = _read(path)
        hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
        windowed = np.clip((hu - (center - width / 2)) / width, 0, 1)
        images.append(_resize(windowed, 256, 256))
    return np.stack(images)[:, None]


def _real_ct() -> list[Path]:
    """A vertebra (CT_small) and five slices of a head CT (skull)."""
    series = sorted((DICOM / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").glob("*.dcm"))
    return [DICOM / "ct" / "CT_small.dcm", *series[::6]]


@needs_corpus
def test_bone_mask_on_real_ct_covers_a_plausible_fraction() -> None:
    mask = _run("cds-ref-ct-bone", _ct_tensor(_real_ct(), 300, 1000))["mask"]
    assert mask.shape[1:] == (1, 256, 256)
    assert np.all((mask >= 0) & (mask <= 1))
    fraction = (mask >= 0.5).mean(axis=(1, 2, 3))
    assert np.all((fraction > 0.01) & (fraction < 0.60)), fraction


def _radiographs() -> list[Path]:
    return sorted(
        p for p in (DICOM / "cr_dx").iterdir() if p.is_file() and p.name != "headers_only"
    )


@needs_corpus
def test_triage_scores_real_radiographs_as_probabilities() -> None:
    images = []
    for path in _radiographs():
        ds = _read(path)
        px = _resize(apply_modality_lut(ds.pixel_array, ds).astype(np.float64), 224, 224)
        lo, hi = px.min(), px.max()
        images.append((px - lo) / max(hi - lo, 1e-6))
    assert len(images) >= 4  # RG1, RG3, CR-MONO1, NIH, the veterinary DX
    x = np.stack(images)[:, None].astype(np.float32)
    scores = _run("cds-ref-cxr-triage", x)["scores"]
    assert scores.shape == (len(images), 2)
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(scores[:, 1] >= 0.5), scores  # real clinical radiographs are not flat
    labels = _manifest("cds-ref-cxr-triage").output.labels
    assert [lb.normal for lb in labels] == [False, True]  # "adequate" is never a finding
    # MONOCHROME1 or MONOCHROME2 makes no difference: std(1 - x) == std(x).
    inverted = _run("cds-ref-cxr-triage", (1 - x).astype(np.float32))["scores"]
    np.testing.assert_allclose(inverted, scores, atol=1e-4)


@needs_corpus
def test_blob_detector_boxes_lie_inside_real_ct_slices() -> None:
    m = _manifest("cds-ref-blob-detect")
    k = m.output.tensors[0].shape[1]
    x = _ct_tensor(_real_ct(), 40, 400)
    out = _run("cds-ref-blob-detect", x)
    boxes, scores = out["boxes"], out["box_scores"]
    assert boxes.shape == (len(x), k, 4)
    assert scores.shape == (len(x), k)
    assert np.all((boxes >= 0) & (boxes <= 255))
    assert np.all(boxes[..., 2] >= boxes[..., 0])
    assert np.all(boxes[..., 3] >= boxes[..., 1])
    assert np.all(boxes[..., 2:] - boxes[..., :2] <= 14)  # 15 x 15 boxes, clipped at edges
    assert np.all(boxes == np.round(boxes))
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    assert np.all(scores[:, 0] >= 0.5)  # a head CT has at least one bright focal structure
    # The peak is 7 pixels inside the box's unclipped side; peaks are >= 8 pixels apart
    # (row or column), plateaus of equal response included.
    peaks = np.where(boxes[..., :2] > 0, boxes[..., :2] + 7, boxes[..., 2:] - 7)
    for p in peaks:
        apart = np.abs(p[:, None] - p[None]).max(axis=-1) + np.eye(len(p)) * 256
        assert apart.min() >= 8, p
