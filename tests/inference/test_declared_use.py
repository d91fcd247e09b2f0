"""issue 15: a model never runs outside its declared use (modality, body part,
photometric, slice count, spacing); routing skips the pipeline naming the constraint,
``route explain`` shows it, and the runner refuses whoever calls it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cds.inference import synthetic
from cds.inference.constraints import OutsideDeclaredUse, header_violations
from cds.inference.images import decode
from cds.inference.manifest import InputSpec
from cds.routing.router import SeriesHeader, explain_text, route
from cds.routing.rules import parse_routing

from .analytic import label, load, manifest, threshold_segmenter


def spec(**over: Any) -> InputSpec:
    base: dict[str, Any] = {
        "kind": "volume",
        "modality": ["CT"],
        "body_part": ["HEAD", "brain"],
        "photometric": ["MONOCHROME2"],
        "slices": {"min": 3, "max": 200},
        "pixel_spacing_mm": {"min": 0.4, "max": 1.0},
        "slice_spacing_mm": {"min": 1.0, "max": 5.0},
        "tensor": {"name": "image", "shape": [1, 1, "d", "h", "w"], "layout": "NCDHW"},
    }
    return InputSpec.model_validate(base | over)


HEAD_CT = {
    "Modality": "CT",
    "BodyPartExamined": "Head",
    "PhotometricInterpretation": "MONOCHROME2",
    "PixelSpacing": [0.5, 0.5],
}


def test_a_series_inside_the_declared_use_breaks_nothing() -> None:
    assert header_violations(spec(), HEAD_CT, 40) == []


@pytest.mark.parametrize(
    ("attrs", "count", "reason"),
    [
        ({"Modality": "MR"}, 40, "input.modality: the series' Modality is not one of CT"),
        (
            {"BodyPartExamined": "CHEST"},
            40,
            "input.body_part: BodyPartExamined is not one of HEAD, BRAIN",
        ),
        (
            {"BodyPartExamined": ""},
            40,
            "input.body_part: the series has no BodyPartExamined; the model takes HEAD, BRAIN",
        ),
        (
            {"PhotometricInterpretation": "MONOCHROME1"},
            40,
            "input.photometric: PhotometricInterpretation is not one of MONOCHROME2",
        ),
        ({}, 2, "input.slices: 2 image(s); the model takes 3 to 200"),
        (
            {"PixelSpacing": [0.3, 0.3]},
            40,
            "input.pixel_spacing_mm: PixelSpacing is outside 0.4 to 1 mm",
        ),
        ({"PixelSpacing": None}, 40, "input.pixel_spacing_mm: the series has no PixelSpacing"),
    ],
)
def test_each_constraint_is_named_never_the_value(
    attrs: dict[str, Any], count: int, reason: str
) -> None:
    reasons = header_violations(spec(), HEAD_CT | attrs, count)
    assert reasons == [reason]
    for value in ("MR", "CHEST", "MONOCHROME1", "0.3"):  # the data set's values
        if value in str(attrs.values()):
            assert value not in reason


def test_multiframe_instances_count_their_frames() -> None:
    assert header_violations(spec(), HEAD_CT | {"NumberOfFrames": "100"}, 1) == []
    assert header_violations(spec(), HEAD_CT | {"NumberOfFrames": "100"}, 3) == [
        "input.slices: 300 image(s); the model takes 3 to 200"
    ]


def _volume_runner(tmp: Path, **input_over: Any) -> Any:
    m = manifest(
        name="acme-ct-head",
        kind="volume",
        input_spec={
            "modality": ["CT"],
            "body_part": ["HEAD"],
            "slice_spacing_mm": {"min": 1.0, "max": 3.0},
            "tensor": {"name": "image", "shape": [1, 1, "d", "h", "w"], "layout": "NCDHW"},
            **input_over,
        },
        output={
            "kind": "segmentation",
            "tensors": [
                {
                    "name": "mask",
                    "role": "mask",
                    "shape": [1, "d", "h", "w"],
                    "layout": "NDHW",
                    "encoding": "labelmap",
                    "dtype": "uint8",
                }
            ],
            "labels": [label(1)],
            "results": ["SEG"],
        },
    )
    model = threshold_segmenter(volume=True, output_layout="NDHW", encoding="labelmap")
    return load(model, m, tmp / "m")


def test_the_runner_refuses_a_series_outside_and_never_runs_the_model(tmp_path: Path) -> None:
    runner = _volume_runner(tmp_path)
    calls: list[Any] = []
    real = runner.session.run
    runner.session.run = lambda *a, **k: calls.append(a) or real(*a, **k)
    thick = synthetic.ct_series(np.zeros((4, 8, 8)), "thick", slice_spacing=5.0)
    with pytest.raises(OutsideDeclaredUse) as info:
        runner.run(decode(synthetic.write(thick, tmp_path / "thick")))
    assert info.value.reasons == [
        "input.slice_spacing_mm: neighbouring slices are not 1 to 3 mm apart"
    ]
    chest = synthetic.ct_series(np.zeros((4, 8, 8)), "chest", body_part="CHEST")
    with pytest.raises(OutsideDeclaredUse, match=r"input.body_part: BodyPartExamined is not"):
        runner.run(decode(synthetic.write(chest, tmp_path / "chest")))
    assert calls == []
    head = synthetic.ct_series(np.zeros((4, 8, 8)), "head", slice_spacing=2.0)
    runner.run(decode(synthetic.write(head, tmp_path / "head")))
    assert len(calls) == 1


def test_a_fixed_slice_count_is_a_constraint(tmp_path: Path) -> None:
    runner = _volume_runner(
        tmp_path,
        tensor={"name": "image", "shape": [1, 1, 6, "h", "w"], "layout": "NCDHW"},
    )
    head = synthetic.ct_series(np.zeros((4, 8, 8)), "head4", slice_spacing=2.0)
    with pytest.raises(
        OutsideDeclaredUse,
        match=r"exactly 6 slices \(dimension D\), the "
        r"series has 4",
    ):
        runner.run(decode(synthetic.write(head, tmp_path / "h")))


ROUTING = {
    "destinations": {},
    "pipelines": {"heads": {"model": "acme-ct-head", "results": ["SEG"]}},
    "rules": [
        {
            "name": "all ct",
            "match": [{"attribute": "Modality", "equals": "CT"}],
            "pipelines": ["heads"],
            "select": "all",
        }
    ],
}


def _series(uid: str, body_part: str) -> SeriesHeader:
    attrs = {
        "Modality": "CT",
        "BodyPartExamined": body_part,
        "SeriesNumber": uid[-1],
        "PhotometricInterpretation": "MONOCHROME2",
        "PixelSpacing": [0.5, 0.5],
    }
    return SeriesHeader("1.2.3", uid, attrs, instance_count=40)


def test_routing_skips_what_is_outside_and_explain_says_why() -> None:
    rf = parse_routing(ROUTING)
    uses = {"acme-ct-head": lambda a, n: header_violations(spec(slice_spacing_mm=None), a, n)}
    head, chest = _series("1.2.3.1", "HEAD"), _series("1.2.3.2", "CHEST")
    plan = route([head, chest], rf, datetime(2025, 1, 1), declared_use=uses)
    ((_, p),) = plan.runs
    assert p.status == "run"
    assert p.outside == {"1.2.3.2": "input.body_part: BodyPartExamined is not one of HEAD, BRAIN"}
    text = "\n".join(explain_text(plan))
    assert (
        "not on series #2 CT: outside the declared use of acme-ct-head "
        "(input.body_part: BodyPartExamined is not one of HEAD, BRAIN)" in text
    )
    plan = route([chest], rf, datetime(2025, 1, 1), declared_use=uses)
    ((_, p),) = plan.runs
    assert p.status == (
        "skipped: outside the declared use of acme-ct-head (input.body_part: "
        "BodyPartExamined is not one of HEAD, BRAIN)"
    )
    assert p.status in "\n".join(explain_text(plan))
