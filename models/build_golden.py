"""Golden cases of the bundled reference packages: synthetic DICOM in, findings expected.

Called by ``build_reference.py`` (``python models/build_reference.py`` rewrites them).
Each case is a small synthetic series (``cds.inference.synthetic``: no patient data,
UIDs from a fixed seed, the same bytes on every run) whose findings are known from how
it was drawn, never from running cds:

- cds-ref-ct-bone, bone-block: 2 CT slices, 64 x 96 (not square), 0.7 x 0.5 mm; slice 1
  holds a 1000 HU block, rows 20-43, columns 30-69: expected mask (mask.npz); slice 2
  nothing;
- cds-ref-cxr-triage, flat-mono1: CR MONOCHROME1, 96 x 128, a faint ramp: low contrast
  present, score 1 - sigmoid(50 (std - 0.10)) of the min-max image;
- cds-ref-cxr-triage, contrasted: CR MONOCHROME2, 96 x 128, two halves: low contrast
  absent, score ~0;
- cds-ref-blob-detect, one-blob: a CT slice of 128 x 256, 0.8 x 0.4 mm, a 200 HU dome at
  row 64, column 100: one box, the model's 15 x 15 pixels mapped back, centred on it.

``cds model validate`` runs each case end to end and reads the findings back from the
encoded SR, SEG and GSPS (``cds.golden``).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydicom.dataset import Dataset

from cds.inference import synthetic

INPUT = "input"


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez_compressed with fixed dates: the same bytes on every run."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            inner = io.BytesIO()
            np.lib.format.write_array(inner, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            z.writestr(info, inner.getvalue(), compresslevel=9)
    return buf.getvalue()


def _dicom(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


Files = dict[str, bytes]


def _case(expected: dict[str, Any], datasets: list[Dataset], extra: Files | None = None) -> Files:
    files = {f"{INPUT}/image_{n + 1:03d}.dcm": _dicom(ds) for n, ds in enumerate(datasets)}
    head = "# golden case: written by models/build_golden.py (build_reference.py)\n"
    files["expected.yaml"] = (head + yaml.safe_dump(expected, sort_keys=False)).encode()
    files.update(extra or {})
    return files


def bone_block() -> Files:
    hu = np.zeros((2, 64, 96))
    hu[0, 20:44, 30:70] = 1000
    datasets = synthetic.ct_series(hu, "cds-ref-ct-bone/bone-block", spacing=(0.7, 0.5))
    mask = np.zeros((64, 96), dtype=bool)
    mask[20:44, 30:70] = True
    key = f"{datasets[0].SOPInstanceUID}_1"
    expected = {
        "input": INPUT,
        "min_dice": 0.95,
        "findings": [{"label": 0, "present": True, "mask": "mask.npz"}],
    }
    return _case(expected, datasets, {"mask.npz": _npz({key: mask})})


def _triage_score(img: np.ndarray) -> float:
    """P(low contrast) = 1 - sigmoid(50 (s - 0.10)), s the std of the min-max image."""
    x = (img - img.min()) / (img.max() - img.min())
    return float(1.0 - 1.0 / (1.0 + np.exp(-50.0 * (x.std() - 0.10))))


def flat_mono1() -> Files:
    rows, cols = np.mgrid[0:96, 0:128]
    img = 2000 + rows // 4 + (cols // 16) % 2 * 3  # a faint ramp and stripes: low contrast
    img[4:8, 4:8] = 4000  # a small marker at full scale
    ds = synthetic.projection(img, "cds-ref-cxr-triage/flat", photometric="MONOCHROME1")
    expected = {
        "input": INPUT,
        "findings": [
            {
                "label": 0,
                "present": True,
                "score": round(_triage_score(img), 4),
                "score_tolerance": 0.05,
            },
        ],
    }
    return _case(expected, [ds])


def contrasted() -> Files:
    img = np.full((96, 128), 500)
    img[:, 64:] = 3500  # two halves: std 0.5 of the min-max image
    ds = synthetic.projection(img, "cds-ref-cxr-triage/halves", photometric="MONOCHROME2")
    expected = {
        "input": INPUT,
        "findings": [
            {
                "label": 0,
                "present": False,
                "score": round(_triage_score(img), 4),
                "score_tolerance": 0.05,
            },
        ],
    }
    return _case(expected, [ds])


def one_blob() -> Files:
    rows, cols = np.mgrid[0:128, 0:256]
    hu = np.full((1, 128, 256), 30.0)
    # a dome of 200 HU over 3 x 6 pixels of 0.8 x 0.4 mm (round in mm, and round again in
    # the model's 256 x 256): one clear peak at its centre, row 64, column 100
    dome = 1.0 - ((rows - 64) / 3.0) ** 2 - ((cols - 100) / 6.0) ** 2
    hu[0] += 200 * np.clip(dome, 0.0, None)
    ds = synthetic.ct_series(hu, "cds-ref-blob-detect/one-blob", spacing=(0.8, 0.4))[0]
    # the model boxes 15 x 15 of its 256 x 256 pixels around the peak (bilinear resize,
    # aligned corners): 15 x 255/255 = 15 source columns, 15 x 127/255 source rows, centred
    # on the dome's centre (column 100.5, row 64.5 in pixel-edge coordinates)
    half_cols, half_rows = 7.5, 7.5 * 127 / 255
    box = [100.5 - half_cols, 64.5 - half_rows, 100.5 + half_cols, 64.5 + half_rows]
    expected = {
        "input": INPUT,
        "min_iou": 0.9,
        "findings": [
            {
                "label": 0,
                "present": True,
                "boxes": [
                    {"image": str(ds.SOPInstanceUID), "frame": 1, "box": [round(v, 3) for v in box]}
                ],
            },
        ],
    }
    return _case(expected, [ds])


CASES: dict[str, dict[str, Callable[[], Files]]] = {
    "cds-ref-ct-bone": {"golden/bone-block": bone_block},
    "cds-ref-cxr-triage": {"golden/flat-mono1": flat_mono1, "golden/contrasted": contrasted},
    "cds-ref-blob-detect": {"golden/one-blob": one_blob},
}


def build_golden(package: str, dest: Path) -> list[Path]:
    """Write the golden cases of ``package`` under ``dest`` (its package folder)."""
    written = []
    for folder, make in CASES.get(package, {}).items():
        for rel, data in make().items():
            path = dest / folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written.append(path)
    return written
