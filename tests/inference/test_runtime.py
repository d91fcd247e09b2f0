"""issue 3: preprocessing, the runner (batches, record, determinism) and the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cds.inference import manifest as mf
from cds.inference.images import ImageMeta, ImageStack, decode
from cds.inference.preprocess import preprocess, resize_bilinear, sort_slices
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner, run_series_list
from cds.inference.session import DeviceSlots

from .pkg import expected_probs, manifest, write_package

HEAD_CT = "ct/dcm_qa_ct_GE_HiSpeedDual_series"


def stack_of(pixels: np.ndarray, **meta: object) -> ImageStack:
    defaults: dict[str, object] = {
        "sop_uid": "1.2.3",
        "frame": 1,
        "rows": pixels.shape[1],
        "columns": pixels.shape[2],
        "slope": 1.0,
        "intercept": 0.0,
        "photometric": "MONOCHROME2",
        "pixel_spacing": (0.5, 0.5),
        "orientation": (1, 0, 0, 0, 1, 0),
        "position": (0, 0, 0),
    }
    defaults.update(meta)
    metas = [ImageMeta(**defaults) for _ in range(len(pixels))]  # type: ignore[arg-type]
    s = ImageStack("9.9", "CT", pixels.astype(np.float32), metas)
    s.order, s.flips = list(range(len(metas))), [(False, False)] * len(metas)
    return s


def spec(
    steps: list[dict[str, object]], shape: list[object] | None = None, layout: str = "NCHW"
) -> mf.InputSpec:
    return mf.InputSpec.model_validate(
        {
            "kind": "slice",
            "modality": ["CT"],
            "preprocessing": steps,
            "tensor": {"name": "x", "shape": shape or ["b", 1, "h", "w"], "layout": layout},
        }
    )


def test_modality_lut_then_window() -> None:
    s = stack_of(np.array([[[0, 1000], [1040, 2000]]]), slope=1.0, intercept=-1000.0)
    sp = spec([{"step": "modality_lut"}, {"step": "window", "center": 40, "width": 80}])
    t, _ = preprocess(s, sp.preprocessing, sp)
    assert t.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(t[0, 0], [[0.0, 0.0], [0.5, 1.0]])  # -1000, 0, 40, 1000 HU


def test_monochrome1_is_inverted_unless_the_manifest_says_never() -> None:
    s = stack_of(np.array([[[0, 10], [5, 10]]]), photometric="MONOCHROME1")
    sp = spec([])
    t, _ = preprocess(s, sp.preprocessing, sp)
    np.testing.assert_allclose(t[0, 0], [[10, 0], [5, 0]])
    never = sp.model_copy(update={"invert": "never"})
    t, _ = preprocess(s, never.preprocessing, never)
    np.testing.assert_allclose(t[0, 0], [[0, 10], [5, 10]])


def test_resize_is_bilinear_with_aligned_corners() -> None:
    x = np.array([[[0, 3], [6, 9]]], dtype=np.float32)
    y = resize_bilinear(x, 3, 4)
    np.testing.assert_allclose(y[0, 0], [0, 1, 2, 3])
    np.testing.assert_allclose(y[0, :, 0], [0, 3, 6])
    assert y[0, 2, 3] == 9


def test_normalize_and_channels_nhwc_3() -> None:
    s = stack_of(np.arange(8).reshape(2, 2, 2))
    sp = spec(
        [
            {"step": "normalize", "method": "minmax"},
            {"step": "scale", "factor": 255},
            {"step": "channels", "count": 3},
        ],
        ["b", 2, 2, 3],
        layout="NHWC",
    )
    t, _ = preprocess(s, sp.preprocessing, sp)
    assert t.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(t[0, :, :, 0], [[0, 85], [170, 255]])
    assert np.array_equal(t[..., 0], t[..., 2])


def test_orient_flips_and_geometry_maps_back_to_source() -> None:
    px = np.stack([np.full((4, 4), z, np.float32) for z in (2, 0, 1)])
    px[:, 0, 3] = 100  # top-right marker in source pixels
    s = stack_of(px)
    s.meta = [
        ImageMeta("u", 1, 4, 4, 1, 0, "MONOCHROME2", (1, 1), (-1, 0, 0, 0, 1, 0), (0, 0, z))
        for z in (2, 0, 1)
    ]
    sp = spec(
        [{"step": "orient"}, {"step": "resize", "size": [8, 8], "interpolation": "nearest",
                              "align_corners": False}],
        ["b", 1, 8, 8],
    )  # fmt: skip
    t, geom = preprocess(s, sp.preprocessing, sp)
    assert geom[0].flip_columns
    assert not geom[0].flip_rows
    assert t[0, 0, 0, 0] == 100  # rows run +x: the marker moved to the left
    back = geom[0].mask(t[0, 0], "nearest")
    assert back.shape == (4, 4)
    assert back[0, 3] == 100
    # the marker's model pixels [0, 2) x [0, 2) are source pixel (row 0, column 3)
    assert geom[0].box(0, 0, 2, 2) == (3.0, 0.0, 4.0, 1.0)


def test_volume_slices_are_sorted_along_the_normal() -> None:
    s = stack_of(np.stack([np.full((2, 2), z, np.float32) for z in (2, 0, 1)]))
    s.meta = [
        ImageMeta(f"u{z}", 1, 2, 2, 1, 0, "MONOCHROME2", (1, 1), (1, 0, 0, 0, 1, 0), (0, 0, z))
        for z in (2, 0, 1)
    ]
    sort_slices(s)
    assert [m.sop_uid for m in s.meta] == ["u0", "u1", "u2"]
    assert s.pixels[:, 0, 0].tolist() == [0, 1, 2]
    sort_slices(s, descending=True)
    assert [m.sop_uid for m in s.meta] == ["u2", "u1", "u0"]


def test_resample_spacing_needs_pixel_spacing() -> None:
    from cds.errors import ModelError

    s = stack_of(np.zeros((1, 4, 4)), pixel_spacing=None)
    sp = spec([{"step": "resample_spacing", "spacing_mm": [1, 1]}])
    with pytest.raises(ModelError, match="PixelSpacing"):
        preprocess(s, sp.preprocessing, sp)
    s = stack_of(np.zeros((1, 4, 4)))
    t, geom = preprocess(s, sp.preprocessing, sp)
    assert t.shape == (1, 1, 2, 2)
    assert (geom[0].model_rows, geom[0].rows) == (2, 4)


@pytest.fixture
def runner(tmp_path: Path) -> ModelRunner:
    reg = ModelRegistry([tmp_path / "models"], "cpu")
    write_package(tmp_path / "models" / "tiny")
    (model,) = reg.load()
    assert model.status == "ready", model.errors
    return ModelRunner(model, DeviceSlots(1, 1))


def test_runner_on_a_real_ct_series(runner: ModelRunner, corpus: Path) -> None:
    files = sorted((corpus / HEAD_CT).iterdir())
    stack = decode(files)
    n = len(stack)
    result = runner.run(stack, keep_raw=True)
    rec = result.record
    assert (rec.model, rec.version, rec.provider, rec.images) == (
        "tiny-classifier",
        "1.0.0",
        "CPU",
        n,
    )
    assert rec.series_uids == (stack.series_uid,)
    assert len(rec.sha256) == 64
    assert set(rec.timings) == {"preprocess", "inference", "postprocess"}
    assert result.raw["probs"].shape == (n, 2)
    bright, dark = result.findings
    assert len(bright.per_image) == n
    np.testing.assert_allclose(
        [bright.per_image[r] + dark.per_image[r] for r in result.images], 1, rtol=1e-5
    )
    # the runner's numbers equal the model applied to our own preprocessing
    again = decode(files)
    sp = runner.manifest.input
    t, _ = preprocess(again, sp.preprocessing, sp)
    np.testing.assert_allclose(result.raw["probs"], expected_probs(t), atol=1e-5)


def test_runner_is_deterministic_and_overlaps_series(runner: ModelRunner, corpus: Path) -> None:
    files = sorted((corpus / HEAD_CT).iterdir())
    a, b = run_series_list(runner, [files[:10], files[:10]])
    assert a.raw == b.raw == {}  # the outputs are not kept unless asked
    assert [f.per_image for f in a.findings] == [f.per_image for f in b.findings]


def test_broken_package_is_reported_and_skipped(tmp_path: Path) -> None:
    write_package(tmp_path / "m" / "good")
    bad = write_package(tmp_path / "m" / "bad", manifest(name="bad-one"))
    (bad / "model.onnx").write_bytes(b"garbage")
    models = {m.name: m for m in ModelRegistry([tmp_path / "m"], "cpu").load()}
    assert models["tiny-classifier"].status == "ready"
    assert models["bad-one"].status == "broken"
    assert "onnxruntime cannot load the model" in models["bad-one"].errors[0]


def test_node_health_lists_models(tmp_path: Path) -> None:
    from cds.orchestrator import Node

    from ..conftest import make_settings

    write_package(tmp_path / "m" / "tiny")
    node = Node(
        make_settings(
            tmp_path / "home", inference={"model_dirs": [str(tmp_path / "m")], "providers": "cpu"}
        )
    )
    node.start()
    try:
        (m,) = node.health()["models"]
        assert (m["name"], m["status"], m["provider"]) == ("tiny-classifier", "ready", "CPU")
    finally:
        node.stop()
