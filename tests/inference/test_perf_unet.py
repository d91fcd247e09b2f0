"""Issue 19, items 1 and 3: the bundled performance model and the runtime's threads.

cds-ref-perf-unet is a U-Net of real compute (about 3.6 GFLOP per 256 x 256 slice) with
seeded weights, for measuring cds next to a real network: it validates with its golden
case, its build is reproducible, its card says it is not for diagnosis, and no routing
file of cds sends studies to it. The runner postprocesses a segmentation run by run on
a worker thread: its findings are exactly those of one postprocessing of the series.
onnxruntime gets every usable core and does not spin.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from cds.golden import run_golden
from cds.inference.images import decode
from cds.inference.manifest import load_manifest
from cds.inference.postprocess import Outputs, postprocess
from cds.inference.registry import LoadedModel
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots, Session, cpu_threads, usable_cores
from cds.inference.synthetic import ct_series
from cds.inference.validate import validate_package

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "models" / "cds-ref-perf-unet"


def test_perf_unet_validates_with_its_golden_case() -> None:
    report = validate_package(PKG, "cpu", golden=run_golden)
    assert report.ok, report.errors
    assert report.warnings == []
    assert len(report.golden) == 1
    assert ": OK: " in report.golden[0]


def test_perf_unet_is_a_real_network_with_small_seeded_weights() -> None:
    model = onnx.load(str(PKG / "model.onnx"))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 11  # 10 of 3 x 3 and the 1 x 1 head
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    widths = sorted({weights[c.input[1]].shape[0] for c in convs[:-1]})
    assert widths == [16, 32, 64]
    assert (PKG / "model.onnx").stat().st_size < 600_000
    sys.path.insert(0, str(REPO / "models"))
    try:
        import build_reference
    finally:
        sys.path.remove(str(REPO / "models"))
    assert 3.5e9 < build_reference.perf_flops() < 3.8e9


def test_perf_unet_build_is_reproducible_and_named_by_its_card(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "models" / "build_reference.py"), "--out", str(tmp_path),
         "--only", "cds-ref-perf-unet"],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    built = tmp_path / "cds-ref-perf-unet"
    m = load_manifest(PKG)
    golden = [p.relative_to(PKG) for p in (PKG / "golden").rglob("*") if p.is_file()]
    assert golden
    for rel in ("model.onnx", m.test_vector.input, *golden):
        assert (built / rel).read_bytes() == (PKG / rel).read_bytes(), rel
    digest = hashlib.sha256((PKG / "model.onnx").read_bytes()).hexdigest()
    card = (PKG / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert digest in card
    assert "NOT FOR DIAGNOSIS" in card
    assert "not a medical device" in m.regulatory_status.en.lower()
    assert "pas un dispositif médical" in m.regulatory_status.fr.lower()


def test_no_routing_file_of_cds_sends_studies_to_the_perf_unet() -> None:
    for path in [*REPO.glob("deploy/*.yaml"), REPO / "cds" / "demo.py"]:
        assert "cds-ref-perf-unet" not in path.read_text(encoding="utf-8"), path


def test_segmentation_postprocessed_run_by_run_equals_the_whole_series() -> None:
    """Three runs of 2, 2 and 1 slices, 48 x 40 pixels, spacing 0.7 x 0.5 mm."""
    hu = np.zeros((5, 48, 40))
    hu[1, 10:30, 5:25] = 1000
    hu[3, 0:48, 30:40] = 700
    hu[4, 20:22, 20:22] = 320  # near the threshold
    stack = decode(ct_series(hu, "test-perf-unet/runs", spacing=(0.7, 0.5)))
    m = load_manifest(PKG)
    m = m.model_copy(update={"input": m.input.model_copy(update={"batch_size": 2})})
    session = Session(PKG / "model.onnx", "cpu")
    model = LoadedModel(PKG, "ready", m, "0" * 64, "CPU", session=session)
    result = ModelRunner(model, DeviceSlots(1, 1)).run(stack, keep_raw=True)
    whole = Outputs(by_role={"mask": result.raw["mask"]})
    want = postprocess(m.output, whole, result.images, result.geometry, stack)
    assert len(result.findings) == len(want) == 1
    got, exp = result.findings[0], want[0]
    assert (got.score, got.present, got.measurement) == (exp.score, exp.present, exp.measurement)
    assert list(got.per_image) == list(exp.per_image)
    for ref, mask in exp.per_image.items():
        np.testing.assert_array_equal(got.per_image[ref], mask)
    assert set(result.record.timings) == {"preprocess", "inference", "postprocess"}


def test_sessions_take_every_usable_core_without_spinning() -> None:
    threads = cpu_threads()
    assert threads.intra_op == threads.cores == usable_cores() >= 1
    assert (threads.inter_op, threads.spinning) == (1, False)
    assert cpu_threads(3, cores=8).intra_op == 3
    assert cpu_threads(cores=8).intra_op == 8
    assert Session(PKG / "model.onnx", "cpu").threads == threads


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_threads_follow_the_core_count(cores: int) -> None:
    assert cpu_threads(cores=cores).intra_op == cores
