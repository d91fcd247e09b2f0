"""issue 15: the vendor is named as the algorithm's manufacturer (cds as the encoder),
its coding scheme is declared, the NHWC min-max classifier scores what it should, and
result UIDs change with everything the content depends on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from cds.inference import manifest as mf
from cds.inference import readback as rb
from cds.inference import synthetic
from cds.inference.images import decode
from cds.results.encode import encode

from .analytic import label, load, manifest, mean_classifier, run_e2e, threshold_segmenter


def classifier_manifest() -> mf.Manifest:
    """The vendor's first model: NHWC, 3 channels, per-image min-max, logits (softmax)."""
    return manifest(
        name="acme-cxr-classifier",
        kind="projection",
        input_spec={
            "modality": ["CR", "DX"],
            "photometric": ["MONOCHROME2"],
            "tensor": {"name": "image", "shape": ["n", 20, 20, 3], "layout": "NHWC"},
            "preprocessing": [
                {
                    "step": "resize",
                    "size": [20, 20],
                    "interpolation": "nearest",
                    "align_corners": False,
                },
                {"step": "normalize", "method": "minmax"},
                {"step": "channels", "count": 3},
            ],
        },
        output={
            "kind": "classification",
            "tensors": [
                {
                    "name": "logits",
                    "role": "scores",
                    "shape": ["n", 2],
                    "layout": "NC",
                    "activation": "softmax",
                }
            ],
            "labels": [label(0, "Mostly dark"), label(1, "Mostly bright")],
            "results": ["SR"],
        },
    )


def _texts(items: Any) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _texts(item.get("ContentSequence", []))


def test_the_nhwc_minmax_classifier_scores_what_its_input_says(tmp_path: Path) -> None:
    img = np.full((40, 40), 100.0)
    img[:, :10] = 3000  # a quarter of the image at the maximum: min-max mean 0.25
    ds = synthetic.projection(img, "cls", photometric="MONOCHROME2")
    files = synthetic.write([ds], tmp_path / "in")
    runner = load(mean_classifier(20), classifier_manifest(), tmp_path / "m")
    result, objects = run_e2e(runner, files, ["SR"], tmp_path)
    p_bright = 1 / (1 + np.exp(16 * 0.25))  # softmax(8 (m - 0.5) (-1, 1)), m = 0.25
    dark, bright = result.findings
    assert bright.score == pytest.approx(p_bright, abs=1e-6)
    assert dark.score == pytest.approx(1 - p_bright, abs=1e-6)
    assert (dark.present, bright.present) == (True, False)
    groups = {g.code: g for g in rb.sr_groups(objects["SR"])}
    assert groups[("99ACME", "ACME-0")].present is True
    assert groups[("99ACME", "ACME-0")].probability == pytest.approx(1 - p_bright, abs=1e-6)
    assert groups[("99ACME", "ACME-1")].present is False


def _segmenter(tmp: Path, threshold: float = 0.5) -> Any:
    m = manifest(
        name="acme-seg",
        kind="slice",
        input_spec={
            "modality": ["CT"],
            "tensor": {"name": "image", "shape": ["n", 1, "h", "w"], "layout": "NCHW"},
            "preprocessing": [
                {"step": "modality_lut"},
                {"step": "window", "center": 150, "width": 300},
            ],
        },
        output={
            "kind": "segmentation",
            "tensors": [
                {"name": "mask", "role": "mask", "shape": ["n", 1, "h", "w"], "layout": "NCHW"}
            ],
            "labels": [label(0, "Dense region", threshold)],
            "results": ["SEG", "SR", "GSPS"],
        },
    )
    model = threshold_segmenter(volume=False, output_layout="NCHW", encoding="probabilities")
    return load(model, m, tmp)


def _series(tmp: Path) -> list[Path]:
    hu = np.zeros((2, 24, 32))
    hu[:, 4:12, 6:20] = 300
    return synthetic.write(synthetic.ct_series(hu, "uids"), tmp / "in")


def test_the_vendor_is_the_algorithms_manufacturer_and_cds_the_encoder(tmp_path: Path) -> None:
    _, objects = run_e2e(
        _segmenter(tmp_path / "m"), _series(tmp_path), ["SEG", "SR", "GSPS"], tmp_path
    )
    for kind, obj in objects.items():
        assert obj.Manufacturer == "cds", kind
        vendors = [str(i.Manufacturer) for i in obj.ContributingEquipmentSequence]
        assert vendors.count("ACME Imaging") == 1, (kind, vendors)
        schemes = {
            str(i.CodingSchemeDesignator): i
            for i in obj.get("CodingSchemeIdentificationSequence", [])
        }
        if kind != "PR":  # the GSPS holds no finding code
            assert schemes["99ACME"].CodingSchemeResponsibleOrganization == "ACME Imaging"
            assert "99CDS" not in schemes
    manufacturers = {
        str(i.ConceptNameCodeSequence[0].CodeMeaning): str(i.get("TextValue", ""))
        for i in _texts(objects["SR"].ContentSequence)
        if "Manufacturer" in str(i.ConceptNameCodeSequence[0].CodeMeaning)
    }
    assert manufacturers == {
        "Algorithm Manufacturer": "ACME Imaging",
        "Device Observer Manufacturer": "ACME Imaging",
    }
    seg_algorithm = objects["SEG"].SegmentSequence[0].SegmentAlgorithmName
    assert seg_algorithm == "acme-seg"


def _uids(runner: Any, files: list[Path], lang: str = "en", seed: str = "s") -> dict[str, str]:
    result = runner.run(decode(files))
    sources = [dcmread(f) for f in files]
    objects, _ = encode(sources, result, runner.manifest, ["SEG", "SR", "GSPS"], lang, seed=seed)
    return {str(o.Modality): f"{o.SeriesInstanceUID}/{o.SOPInstanceUID}" for o in objects}


def test_uids_change_with_the_content_and_only_with_it(tmp_path: Path) -> None:
    files = _series(tmp_path)
    runner = _segmenter(tmp_path / "a")
    first = _uids(runner, files)
    assert set(first) == {"SEG", "SR", "PR"}
    assert _uids(runner, files) == first  # the same inputs: the same UIDs
    assert _uids(_segmenter(tmp_path / "b"), files) == first  # the same model elsewhere
    for kind, uid in _uids(_segmenter(tmp_path / "c", threshold=0.6), files).items():
        assert uid.split("/")[1] != first[kind].split("/")[1], f"threshold: {kind}"
    for kind, uid in _uids(runner, files, lang="fr").items():
        assert uid.split("/")[1] != first[kind].split("/")[1], f"language: {kind}"
    for kind, uid in _uids(runner, files[:1]).items():
        assert uid.split("/")[1] != first[kind].split("/")[1], f"inputs: {kind}"
