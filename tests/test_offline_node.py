"""issue 18 item 6: ``cds process`` runs its series through the node's own path
(``cds.offline_node``: the node's series run, the compute seam, the results recorded in
a temporary state store), so a node and ``cds process`` given the same files make the
same objects."""

from __future__ import annotations

import subprocess
import tempfile
import time
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from cds.cli import app
from cds.domain import JobState, StudyState
from cds.inference.registry import ModelRegistry
from cds.inference.session import DeviceSlots
from cds.offline import _Compute
from cds.offline_node import OfflineNode
from cds.orchestrator import Node
from cds.routing.router import PipelinePlan, read_headers

from .conftest import DICOM, REPO, make_settings
from .test_offline import ROUTING

SERIES = DICOM / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
MODELS = REPO / "models"
#: made anew by each run: when the object was made
PER_RUN = {
    "InstanceCreationDate",
    "InstanceCreationTime",
    "ContentDate",
    "ContentTime",
    "PresentationCreationDate",
    "PresentationCreationTime",
    "ContributionDateTime",
}


@pytest.fixture
def files() -> list[Path]:
    if not SERIES.is_dir():
        pytest.skip(f"test series not found: {SERIES}")
    return sorted(SERIES.glob("*.dcm"))[:4]


def _masked(path: Path) -> bytes:
    """The object as written, with ``PER_RUN`` values set to a fixed value of the same
    length, written again: equal bytes mean equal objects but for those values."""

    def mask(ds: Dataset) -> None:
        for el in ds:
            if el.VR == "SQ":
                for item in el.value:
                    mask(item)
            elif el.keyword in PER_RUN and el.value:
                el.value = "1" * len(str(el.value)) if el.VR != "UI" else "1.2"

    ds = pydicom.dcmread(path)
    mask(ds)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _wait_done(node: Node, deadline_s: float = 120) -> str:
    deadline = time.monotonic() + deadline_s
    while True:
        studies = node.store.list_studies()
        if studies and studies[0].state in {StudyState.DONE, StudyState.FAILED}:
            assert studies[0].state is StudyState.DONE
            return studies[0].study_key
        assert time.monotonic() < deadline, studies[0].state if studies else None
        time.sleep(0.1)


def test_a_node_and_cds_process_make_the_same_objects(tmp_path: Path, files: list[Path]) -> None:
    """One CT series sent to a node by DCMTK storescu, and the same files through
    ``cds process`` with the same routing file: the same objects (kinds, SOP Instance
    UIDs, file names, sizes), byte for byte but for the values each run makes anew."""
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    settings = make_settings(
        tmp_path / "home",
        inference={"model_dirs": [str(MODELS)], "providers": "cpu"},
        routing={"file": str(routing)},
    )
    node = Node(settings)
    node.start()
    try:
        host, port = node.listener.address
        sent = subprocess.run(
            ["storescu", "-aet", "TESTSCU", "-aec", settings.dicom.ae_title, host, str(port),
             *map(str, files)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        key = _wait_done(node)
        by_node = node.settings.results_path / key
        jobs = {j.kind: j.state for j in node.store.list_jobs(key)}
    finally:
        node.stop()
    assert set(jobs.values()) == {JobState.DONE}, jobs
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["process", *map(str, files), "--out", str(out), "--routing", str(routing),
         "--models", str(MODELS), "--providers", "cpu"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    by_process = out / study_uid
    made = sorted(p.relative_to(by_node).as_posix() for p in by_node.rglob("*.dcm"))
    assert {m.split("/")[0] for m in made} == {"SEG", "SR", "PR"}
    assert sorted(p.relative_to(by_process).as_posix() for p in by_process.rglob("*.dcm")) == made
    for rel in made:
        a, b = by_node / rel, by_process / rel
        assert a.stat().st_size == b.stat().st_size, rel
        assert _masked(a) == _masked(b), rel


def test_the_series_run_records_as_the_node_and_leaves_no_state(
    tmp_path: Path, files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offline node's series run records the job and its results in its store, as
    the node does; closing it removes the temporary store."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (model,) = ModelRegistry([MODELS / "cds-ref-ct-bone"], "cpu", warm=False).load()
    studies, _ = read_headers(files)
    ((series,),) = studies.values()
    plan = PipelinePlan("bone", model.name, ["SEG", "SR"], [], "run")
    out = tmp_path / "out"
    runner = _Compute({model.name: model}, DeviceSlots(1, 1))
    with OfflineNode(out=out, providers="cpu", lang="en", compute=runner) as node:
        ran = node.run_series("study", plan, model, series)
        assert ran.error is None
        (job,) = node.store.list_jobs("study")
        assert (job.kind, job.state) == ("bone:cds-ref-ct-bone", JobState.DONE)
        rows = node.store.list_results("study")
        assert sorted(r.path for r in rows) == sorted(
            p.relative_to(out).as_posix() for p in out.rglob("*.dcm")
        )
        assert {r.modality for r in rows} == {"SEG", "SR"}
        assert node.store.list_findings("study")
        assert not node.store.list_deliveries()  # no destination in the plan
    assert list((tmp_path / "tmp").iterdir()) == []
