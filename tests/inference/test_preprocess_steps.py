"""issue 15: the preprocessing steps do what their formulas say (manifest_input)."""

from __future__ import annotations

import numpy as np
import pytest

from cds.inference import manifest as mf
from cds.inference.preprocess import preprocess

from .test_runtime import stack_of


def spec(
    steps: list[dict[str, object]],
    shape: list[object],
    layout: str = "NCHW",
    dtype: str = "float32",
) -> mf.InputSpec:
    return mf.InputSpec.model_validate(
        {
            "kind": "slice",
            "modality": ["CT"],
            "preprocessing": steps,
            "tensor": {"name": "x", "shape": shape, "layout": layout, "dtype": dtype},
        }
    )


def run(
    pixels: np.ndarray, steps: list[dict[str, object]], shape: list[object], **kw: str
) -> tuple[np.ndarray, list]:
    sp = spec(steps, shape, **kw)
    return preprocess(stack_of(pixels), sp.preprocessing, sp)


def test_percentile_clip_per_image_and_rescaled() -> None:
    x = np.arange(101, dtype=np.float32).reshape(1, 1, 101)
    t, _ = run(x, [{"step": "percentile_clip", "low": 10, "high": 90}], ["n", 1, 1, 101])
    assert (t.min(), t.max()) == (10, 90)
    t, _ = run(
        x, [{"step": "percentile_clip", "low": 10, "high": 90, "rescale": True}], ["n", 1, 1, 101]
    )
    assert (t.min(), t.max()) == (0, 1)
    assert t[0, 0, 0, 50] == pytest.approx(0.5)


def test_per_channel_mean_and_std_after_channels() -> None:
    x = np.full((1, 2, 2), 0.5, np.float32)
    steps = [
        {"step": "channels", "count": 3},
        {
            "step": "normalize",
            "method": "fixed",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
    ]
    t, _ = run(x, steps, ["n", 2, 2, 3], layout="NHWC")
    np.testing.assert_allclose(
        t[0, 0, 0], [(0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.5 - 0.406) / 0.225], rtol=1e-6
    )


def test_minmax_per_series_versus_per_image() -> None:
    x = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0)]).astype(np.float32)
    x[:, 0, 0] = 0
    t, _ = run(x, [{"step": "normalize", "method": "minmax", "per": "series"}], ["n", 1, 2, 2])
    assert t[0, 0, 1, 1] == pytest.approx(1 / 3)
    t, _ = run(x, [{"step": "normalize", "method": "minmax"}], ["n", 1, 2, 2])
    assert t[0, 0, 1, 1] == 1


def test_letterbox_pads_and_its_geometry_skips_the_padding() -> None:
    x = np.ones((1, 10, 20), np.float32)  # 10 rows x 20 columns into 16 x 16
    t, (g,) = run(
        x,
        [
            {
                "step": "resize",
                "size": [16, 16],
                "keep_aspect": True,
                "pad_value": -1,
                "interpolation": "nearest",
            }
        ],
        ["n", 1, 16, 16],
    )
    assert (t[0, 0, :4] == -1).all()  # 8 rows of image, 4 of padding above and below
    assert (t[0, 0, 12:] == -1).all()
    assert (t[0, 0, 4:12] == 1).all()
    assert g.box(0, 4, 16, 12) == (0.0, 0.0, 20.0, 10.0)
    assert g.box(0, 0, 16, 4) == (0.0, 0.0, 20.0, 0.0)  # the padding is off the image


def test_crop_or_pad_centres_and_an_integer_input_is_rounded_and_clipped() -> None:
    x = np.arange(36, dtype=np.float32).reshape(1, 6, 6) * 10
    t, (g,) = run(
        x, [{"step": "crop_or_pad", "size": [2, 8], "value": 7}], ["n", 1, 2, 8], dtype="uint8"
    )
    assert t.dtype == np.uint8
    assert t[0, 0, 0].tolist() == [7, 120, 130, 140, 150, 160, 170, 7]
    assert t[0, 0, 1].tolist() == [7, 180, 190, 200, 210, 220, 230, 7]
    assert g.point(1, 0) == (0.0, 2.0)
