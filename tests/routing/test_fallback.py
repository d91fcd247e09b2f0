"""issue 17 (item 4): a pipeline names fallback objects for sites whose viewer lacks a kind.

``fallback: {GSPS: SC}`` names the kind made in place of one that cannot be made (its
encoder refused it); with ``viewer: ohif`` (a profile from docs/viewers.md), a kind that
viewer does not show is not made and its fallback is, from the start. Each replacement
is said in the job's notes (its objects' outcomes) and by ``cds route explain``; every
error in the routing file is reported by its path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml

from cds.compute import process_series
from cds.demo_study import synthetic_ct
from cds.domain import JobState, StudyState
from cds.errors import EncodingError
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.orchestrator import Node
from cds.requestor import PauseSafeAE
from cds.routing.headers import read_headers
from cds.routing.router import explain_text, route
from cds.routing.rules import RoutingFileError, parse_routing
from cds.routing.viewers import SHOWS, pipeline_kinds

from ..conftest import make_settings

SRC = "routing.yaml"
REPO = Path(__file__).resolve().parents[2]
CT_RULE = {"name": "CT", "match": [{"attribute": "Modality", "equals": "CT"}], "pipelines": ["p"]}


def routing(**pipeline: Any) -> dict[str, Any]:
    return {
        "pipelines": {"p": {"model": "cds-ref-blob-detect", **pipeline}},
        "rules": [CT_RULE],
    }


def errors_of(data: Any) -> list[str]:
    with pytest.raises(RoutingFileError) as info:
        parse_routing(data, SRC)
    return info.value.errors


def test_i17_viewer_profile_replaces_a_kind_it_does_not_show(tmp_path: Path) -> None:
    """OHIF shows no GSPS: the pipeline makes the SC its fallback names instead, and
    route explain says so."""
    rf = parse_routing(routing(results=["GSPS", "SR"], fallback={"GSPS": "SC"}, viewer="ohif"), SRC)
    study = synthetic_ct(tmp_path / "ct", slices=2, size=64)
    headers, _ = read_headers([tmp_path / "ct"])
    plan = route(headers[study.study_uid], rf)
    ((_, p),) = plan.runs
    assert (p.results, p.replaced, p.fallback, p.viewer) == (
        ["SC", "SR"],
        {"GSPS": "SC"},
        {},
        "ohif",
    )
    text = "\n".join(explain_text(plan))
    assert "results SC/SR" in text
    assert "GSPS replaced by SC: viewer ohif does not show GSPS" in text


def test_i17_fallback_without_a_viewer_waits_for_a_failure() -> None:
    """Without a viewer the kind is made as asked; its fallback only if it cannot be."""
    kinds = pipeline_kinds(["GSPS", "SR"], {"GSPS": "SC"}, None)
    assert (kinds.make, kinds.replaced, kinds.fallback) == (["GSPS", "SR"], {}, {"GSPS": "SC"})
    # a fallback made anyway needs no second try
    kinds = pipeline_kinds(["GSPS", "SC"], {"GSPS": "SC"}, None)
    assert kinds.fallback == {}
    # replaced by a kind already asked for: made once
    kinds = pipeline_kinds(["GSPS", "SC", "SR"], {"GSPS": "SC"}, "ohif")
    assert (kinds.make, kinds.replaced) == (["SC", "SR"], {"GSPS": "SC"})


def test_i17_fallback_errors_by_path() -> None:
    assert errors_of(routing(results=["SR"], fallback={"GSPS": "SC"})) == [
        f"{SRC}: pipelines.p.fallback.GSPS: the pipeline does not make GSPS (results: SR)"
    ]
    assert errors_of(routing(results=["GSPS"], fallback={"GSPS": "GSPS"})) == [
        f"{SRC}: pipelines.p.fallback.GSPS: GSPS cannot stand in for itself"
    ]
    assert errors_of(routing(results=["GSPS", "SEG"], fallback={"GSPS": "SEG", "SEG": "SC"})) == [
        f"{SRC}: pipelines.p.fallback.GSPS: SEG has a fallback of its own; fallbacks are not "
        "chained: name the kind to make directly"
    ]
    assert errors_of(routing(results=["SEG"], fallback={"SEG": "GSPS"}, viewer="ohif")) == [
        f"{SRC}: pipelines.p.fallback.SEG: viewer ohif does not show GSPS either "
        "(ohif shows SC, SEG, SR)"
    ]
    assert errors_of(routing(results=["GSPS", "SR"], viewer="ohif")) == [
        f"{SRC}: pipelines.p.viewer: ohif does not show GSPS (ohif shows SC, SEG, SR): name "
        "the kind to make in its place (fallback: {GSPS: ...}) or leave GSPS out of results"
    ]
    (unknown,) = errors_of(routing(results=["SR"], viewer="weasis"))
    assert unknown.startswith(f"{SRC}: pipelines.p.viewer: Input should be 'ohif', ")
    (bad,) = errors_of(routing(results=["SR"], fallback={"SR": "PDF"}))
    assert bad.startswith(f"{SRC}: pipelines.p.fallback.SR: Input should be 'SR', 'SEG'")


def test_i17_viewer_profiles_name_the_kinds_of_docs_viewers_md() -> None:
    """Every profile names only result kinds; the doc's matrix is checked against them by
    integration_tests/test_viewer_matrix.py."""
    assert set(SHOWS) == {"ohif", "orthanc-explorer", "dicomscope"}
    assert all(kinds <= {"SR", "SEG", "GSPS", "SC"} for kinds in SHOWS.values())


@pytest.fixture(scope="module")
def blob_model() -> ModelRunner:
    registry = ModelRegistry([REPO / "models"], "cpu", DeviceSlots(1, 1), warm=False)
    registry.load()
    model = registry.get("cds-ref-blob-detect")
    assert model is not None
    assert model.status == "ready"
    return ModelRunner(model, registry.slots)


def _refuse(*_: object, **__: object) -> None:
    raise ValueError("the GSPS encoder refused (test)")


def test_i17_a_kind_that_cannot_be_made_gets_its_fallback(
    tmp_path: Path, blob_model: ModelRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GSPS encoder fails: the SC its fallback names is made instead (the same SC,
    same UIDs, as when asked for), and the GSPS is no failure of the job any more."""
    files = synthetic_ct(tmp_path / "ct", slices=3, size=128).files
    asked = process_series(blob_model, files, ["SC"], "en")
    monkeypatch.setattr("cds.results.encode.build_gsps", _refuse)
    out = process_series(blob_model, files, ["GSPS", "SR"], "en", fallback=[("GSPS", "SC")])
    assert sorted({str(ds.Modality) for ds in out.objects}) == ["OT", "SR"]
    sc = [str(ds.SOPInstanceUID) for ds in out.objects if ds.Modality == "OT"]
    assert sc == [str(ds.SOPInstanceUID) for ds in asked.objects]
    (gsps,) = [o for o in out.outcomes if o.kind == "GSPS"]
    assert (gsps.made, gsps.failed) == (False, False)
    assert gsps.reason.endswith("; SC made in its place (fallback)"), gsps.reason
    assert gsps.reason.startswith("ValueError"), gsps.reason  # what failed, in words
    made_sc = [o for o in out.outcomes if o.kind == "SC"]
    assert made_sc
    assert all(o.made for o in made_sc)
    assert all(o.reason.startswith("in place of GSPS (pipeline fallback)") for o in made_sc)
    # without a fallback the same failure makes the job partial
    bare = process_series(blob_model, files, ["GSPS", "SR"], "en")
    assert [o.kind for o in bare.outcomes if o.failed] == ["GSPS"]


def _send(node: Node, files: list[Path]) -> None:
    ae = PauseSafeAE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    host, port = node.listener.address
    assoc = ae.associate(host, port, ae_title="CDS")
    assert assoc.is_established
    for f in files:
        assert assoc.send_c_store(f).Status == 0
    assoc.release()


def test_i17_node_records_the_viewer_fallback_in_the_job(tmp_path: Path) -> None:
    """End to end: a pipeline for an OHIF site asks for GSPS and SR; the node makes SC
    and SR, no GSPS, the job is done and its notes say why."""
    f = tmp_path / "routing.yaml"
    f.write_text(
        "pipelines:\n"
        "  blobs: {model: cds-ref-blob-detect, results: [GSPS, SR], fallback: {GSPS: SC},"
        " viewer: ohif}\n"
        "rules:\n"
        "  - {name: CT, match: [{attribute: Modality, equals: CT}], pipelines: [blobs]}\n"
    )
    settings = make_settings(
        tmp_path / "home",
        inference={"model_dirs": [str(REPO / "models")], "providers": "cpu"},
        routing={"file": str(f)},
    )
    node = Node(settings)
    node.start()
    try:
        _send(node, synthetic_ct(tmp_path / "ct", slices=3, size=128).files)
        deadline = time.monotonic() + 30
        while not (
            (studies := node.store.list_studies())
            and studies[0].state in {StudyState.DONE, StudyState.FAILED}
        ):
            assert time.monotonic() < deadline, "the study was not processed in 30 s"
            time.sleep(0.1)
        (job,) = node.store.list_jobs(studies[0].study_key)
        assert job.state is JobState.DONE, job
        notes = [o.text for o in job.objects]
        assert (
            "GSPS not made: viewer ohif does not show GSPS: SC asked for in its place "
            "(pipeline fallback)" in notes
        ), notes
        folders = {p.parent.name for p in (settings.results_path).rglob("*.dcm")}
        assert folders == {"OT", "SR"}
        for p in settings.results_path.rglob("OT/*.dcm"):
            assert pydicom.dcmread(p, stop_before_pixels=True).BurnedInAnnotation == "YES"
    finally:
        node.stop()


def test_i17_encoding_error_is_not_a_failure_that_falls_back(
    tmp_path: Path, blob_model: ModelRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing to draw is no failure: no fallback is made for it."""

    def nothing(*_: object, **__: object) -> None:
        raise EncodingError("nothing to draw (test)")

    monkeypatch.setattr("cds.results.encode.build_gsps", nothing)
    monkeypatch.setattr("cds.results.encode._has_something_to_draw", lambda _result: False)
    files = synthetic_ct(tmp_path / "ct", slices=2, size=64).files
    out = process_series(blob_model, files, ["GSPS"], "en", fallback=[("GSPS", "SC")])
    assert out.objects == []
    assert [(o.kind, o.made, o.failed) for o in out.outcomes] == [("GSPS", False, False)]


def test_i17_the_example_fallback_validates_once_uncommented() -> None:
    """deploy/routing.example.yaml's commented-out fallback and viewer lines are valid."""
    example = REPO / "deploy" / "routing.example.yaml"
    text = example.read_text(encoding="utf-8")
    lines = [
        line.replace("# ", "", 1) if line.strip().startswith(("# fallback:", "# viewer:")) else line
        for line in text.splitlines()
    ]
    assert sum(a != b for a, b in zip(lines, text.splitlines(), strict=True)) == 2
    rf = parse_routing(yaml.safe_load("\n".join(lines)), str(example))
    p = rf.pipelines["ct-hyperdensity"]
    assert (p.fallback, p.viewer) == ({"GSPS": "SC"}, "ohif")
    assert pipeline_kinds(p.results, p.fallback, p.viewer).make == ["SC", "SR"]
