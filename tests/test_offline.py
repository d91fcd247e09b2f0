"""issue 5: ``cds process PATH... --out DIR`` routes, infers and encodes DICOM files
offline, with the node's own per-series step, and writes the objects and a
reproducibility record (process.json) to DIR."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import structlog
from typer.testing import CliRunner

from cds.cli import app
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.pipeline import process_series
from cds.results.seg import THICKNESS_FROM_SPACING

from .conftest import DICOM, REPO
from .results.test_seg import dciodvfy_errors

SERIES = DICOM / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
MODELS = REPO / "models"
PATIENT_NAME = "Offline^Secret^Patient"
PATIENT_ID = "PID-OFFLINE-4711"
ROUTING = """
destinations:
  pacs: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}
pipelines:
  bone: {model: cds-ref-ct-bone, results: [SEG, SR], destinations: [pacs]}
  blobs: {model: cds-ref-blob-detect, results: [GSPS], destinations: [pacs]}
rules:
  - name: head CT
    match: [{attribute: Modality, equals: CT}]
    exclude: [{attribute: ImageType, equals: LOCALIZER}]
    select: thinnest
    pipelines: [bone, blobs]
"""
MR_ONLY = ROUTING.replace("equals: CT}", "equals: MR}")


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """The command configures logging for its process; give the next test its own back."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, structlog.get_config())
    try:
        yield
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        structlog.configure(**saved[2])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 slices of a real head CT, with a patient name and ID we can look for."""
    if not SERIES.is_dir():
        pytest.skip(f"test series not found: {SERIES}")
    folder = tmp_path_factory.mktemp("ct")
    for n, src in enumerate(sorted(SERIES.glob("*.dcm"))[:4]):
        ds = pydicom.dcmread(src)
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.save_as(folder / f"slice{n}.dcm")
    return folder


@pytest.fixture(scope="module")
def routing_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("routing") / "routing.yaml"
    f.write_text(ROUTING)
    return f


def cds_process(*args: str | Path) -> tuple[int, str]:
    """Run ``cds process`` in-process; (exit code, stdout + stderr). Never a traceback."""
    result = CliRunner().invoke(app, ["process", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    return result.exit_code, output


def uids(out: Path) -> dict[str, set[str]]:
    """Modality -> SOP Instance UIDs of the objects written under ``out``."""
    found: dict[str, set[str]] = {}
    for f in out.rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert f.name == f"{ds.SOPInstanceUID}.dcm"
        assert f.parent.name == ds.Modality
        found.setdefault(str(ds.Modality), set()).add(str(ds.SOPInstanceUID))
    return found


@pytest.fixture(scope="module")
def routed(study: Path, routing_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    result = CliRunner().invoke(
        app,
        [
            *("process", str(study), "--out", str(out), "--routing", str(routing_file)),
            *("--models", str(MODELS), "--providers", "cpu", "--lang", "en"),
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    # one summary line per object written
    assert result.stdout.count("wrote ") == sum(1 for _ in out.rglob("*.dcm"))
    return out


def test_routed_study_gives_valid_advisory_objects(routed: Path, study: Path) -> None:
    """The routing file's pipelines ran: SEG + SR from ct-bone, GSPS (PR) from blob-detect,
    under DIR/<StudyInstanceUID>/<Modality>/, each one valid for dciodvfy."""
    study_uid = str(pydicom.dcmread(next(study.iterdir())).StudyInstanceUID)
    assert {p.name for p in routed.iterdir()} == {study_uid, "process.json"}
    assert set(uids(routed)) == {"SEG", "SR", "PR"}
    for f in routed.rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        assert ds.StudyInstanceUID == study_uid
        assert str(ds.SeriesDescription).startswith("AI ADVISORY")
        errors, _ = dciodvfy_errors(f)
        assert errors == [], f"{f.parent.name}: {errors}"


def test_process_json_records_inputs_models_and_objects(routed: Path, study: Path) -> None:
    record = json.loads((routed / "process.json").read_text())
    inputs = sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in study.iterdir())
    (st,) = record["studies"]
    by_model = {s["model"]["name"]: s for s in st["series"]}
    assert set(by_model) == {"cds-ref-ct-bone", "cds-ref-blob-detect"}
    bone = by_model["cds-ref-ct-bone"]
    assert bone["inputs"]["sop_instance_uids"] == inputs
    assert bone["model"]["version"] == "1.0.0"
    assert len(bone["model"]["sha256"]) == 64
    assert bone["model"]["provider"] == "CPU"
    assert bone["kinds"] == ["SEG", "SR"]
    assert (bone["rule"], bone["pipeline"]) == ("head CT", "bone")
    assert {o["kind"] for o in bone["objects"]} == {"SEG", "SR"}
    for o in bone["objects"]:
        ds = pydicom.dcmread(routed / o["path"], stop_before_pixels=True)
        assert (str(ds.SOPInstanceUID), str(ds.Modality)) == (o["sop_instance_uid"], o["modality"])
    assert bone["timings"]["inference_s"] >= 0
    assert record["not_produced"] == []
    text = (routed / "process.json").read_text()
    for secret in (PATIENT_NAME, "Offline", PATIENT_ID, str(study)):
        assert secret not in text


def test_same_inputs_same_uids_and_the_node_agrees(
    routed: Path, study: Path, routing_file: Path, tmp_path: Path
) -> None:
    """Deterministic: a second run makes the same SOP Instance UIDs, and so does the
    node's per-series step (process_series, called as pipeline._run_jobs calls it)."""
    code, _ = cds_process(
        study,
        "--out",
        tmp_path / "again",
        "--routing",
        routing_file,
        "--models",
        MODELS,
        "--providers",
        "cpu",
    )
    assert code == 0
    first = uids(routed)
    assert uids(tmp_path / "again") == first
    registry = ModelRegistry([MODELS / "cds-ref-ct-bone"], "cpu", warm=False)
    (model,) = registry.load()
    files = sorted(study.iterdir())
    node = process_series(ModelRunner(model, DeviceSlots(1, 1)), files, ["SEG", "SR"], "en")
    node_uids = {str(ds.Modality): {str(ds.SOPInstanceUID)} for ds in node.objects}
    assert node_uids == {"SEG": first["SEG"], "SR": first["SR"]}


def test_other_inputs_other_uids(
    routed: Path, study: Path, routing_file: Path, tmp_path: Path
) -> None:
    """One slice less is another input set: every result object gets new UIDs."""
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for f in sorted(study.iterdir())[:-1]:
        shutil.copy(f, fewer / f.name)
    code, _ = cds_process(
        fewer,
        "--out",
        tmp_path / "out",
        "--routing",
        routing_file,
        "--models",
        MODELS,
        "--providers",
        "cpu",
    )
    assert code == 0
    before, after = uids(routed), uids(tmp_path / "out")
    assert set(after) == set(before)
    for modality in before:
        assert before[modality].isdisjoint(after[modality]), modality


def test_model_bypass_runs_one_model_with_the_kinds_asked(study: Path, tmp_path: Path) -> None:
    """--model skips routing; --results picks the objects; --lang fr writes French."""
    code, output = cds_process(
        study,
        "--out",
        tmp_path,
        "--model",
        "cds-ref-blob-detect",
        "--results",
        "gsps,SR",
        "--models",
        MODELS,
        "--providers",
        "cpu",
        "--lang",
        "fr",
    )
    assert code == 0, output
    assert set(uids(tmp_path)) == {"PR", "SR"}
    for f in tmp_path.rglob("*.dcm"):
        assert str(pydicom.dcmread(f).SeriesDescription).startswith("IA INDICATIF")
    record = json.loads((tmp_path / "process.json").read_text())
    assert record["mode"] == "model"
    (series,) = record["studies"][0]["series"]
    assert series["kinds"] == ["GSPS", "SR"]
    assert PATIENT_NAME not in output


def test_a_past_result_is_reproduced_from_its_record(
    routed: Path, study: Path, tmp_path: Path
) -> None:
    """process.json holds what a rerun needs: the model's hash and the kinds; --sha256
    refuses another build of the model, and the same build remakes the same objects."""
    record = json.loads((routed / "process.json").read_text())
    bone = next(s for s in record["studies"][0]["series"] if s["pipeline"] == "bone")
    sha, kinds = bone["model"]["sha256"], ",".join(bone["kinds"])
    out = tmp_path / "again"
    code, output = cds_process(
        study,
        "--out",
        out,
        "--model",
        "cds-ref-ct-bone",
        "--sha256",
        sha[:12],
        "--results",
        kinds,
        "--models",
        MODELS,
        "--providers",
        "cpu",
    )
    assert code == 0, output
    assert {o["sop_instance_uid"] for o in bone["objects"]} == set().union(*uids(out).values())
    other = ("0" if sha[0] != "0" else "1") + sha[1:]
    code, output = cds_process(
        study,
        "--out",
        tmp_path / "no",
        "--model",
        "cds-ref-ct-bone",
        "--sha256",
        other,
        "--models",
        MODELS,
        "--providers",
        "cpu",
    )
    assert code == 1
    assert f"--sha256: model.onnx of cds-ref-ct-bone in {MODELS / 'cds-ref-ct-bone'}" in output
    assert not (tmp_path / "no").exists()


def test_a_kind_not_made_is_listed_and_exits_3(study: Path, tmp_path: Path) -> None:
    """Air only (no bone): the SR is made, the SEG has nothing to encode; exit 3 says so."""
    air = tmp_path / "air"
    air.mkdir()
    ds = pydicom.dcmread(sorted(study.iterdir())[0])
    ds.PixelData = bytes(len(ds.PixelData))  # raw 0 = -1024 HU with this intercept
    ds.save_as(air / "air.dcm")
    out = tmp_path / "out"
    code, output = cds_process(
        air,
        "--out",
        out,
        "--model",
        "cds-ref-ct-bone",
        "--results",
        "SEG,SR",
        "--models",
        MODELS,
        "--providers",
        "cpu",
    )
    assert code == 3, output
    assert "SEG not produced" in output
    assert set(uids(out)) == {"SR"}
    record = json.loads((out / "process.json").read_text())
    (series,) = record["studies"][0]["series"]
    assert list(series["not_produced"]) == ["SEG"]
    (problem,) = record["not_produced"]
    assert "SEG not produced" in problem


def test_a_pipeline_whose_model_is_missing_is_listed(study: Path, tmp_path: Path) -> None:
    """As on the node, a routed model that is not loaded is skipped, and said so."""
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING.replace("model: cds-ref-blob-detect", "model: cds-ref-gone"))
    out = tmp_path / "out"
    code, output = cds_process(
        study, "--out", out, "--routing", routing, "--models", MODELS, "--providers", "cpu"
    )
    assert code == 3, output
    assert "cds-ref-gone: skipped: model not loaded (no such package in" in output
    assert set(uids(out)) == {"SEG", "SR"}
    record = json.loads((out / "process.json").read_text())
    statuses = {s["model"]["name"]: s["status"] for s in record["studies"][0]["series"]}
    assert statuses["cds-ref-ct-bone"] == "done"
    assert statuses["cds-ref-gone"].startswith("skipped: model not loaded")


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("empty folder", "empty (no file)"),
        ("not DICOM", "notes.txt: not readable as DICOM"),
        ("invalid routing", "rules.0.pipelines"),
        ("unknown model", "--model: unknown model 'no-such-model'"),
        ("model for another modality", "cds-ref-cxr-triage takes Modality CR, DX"),
        ("kind the model does not make", "--results: cds-ref-ct-bone makes SEG, SR, SC, not GSPS"),
        ("no rule matched", "no rule matched any of the 1 series"),
    ],
)
def test_bad_input_is_refused_with_a_message(
    case: str, expect: str, study: Path, tmp_path: Path
) -> None:
    inputs: Path = study
    extra: list[str | Path] = ["--routing", tmp_path / "routing.yaml"]
    (tmp_path / "routing.yaml").write_text(ROUTING)
    if case == "empty folder":
        inputs = tmp_path / "empty"
        inputs.mkdir()
    elif case == "not DICOM":
        inputs = tmp_path / "notes.txt"
        inputs.write_text("not a DICOM file\n")
    elif case == "invalid routing":
        (tmp_path / "routing.yaml").write_text(
            "rules: [{name: x, match: [{attribute: Modality, equals: CT}]}]\n"
        )
    elif case == "unknown model":
        extra = ["--model", "no-such-model"]
    elif case == "model for another modality":
        extra = ["--model", "cds-ref-cxr-triage"]
    elif case == "kind the model does not make":
        extra = ["--model", "cds-ref-ct-bone", "--results", "GSPS"]
    elif case == "no rule matched":
        (tmp_path / "routing.yaml").write_text(MR_ONLY)
    out = tmp_path / "out"
    code, output = cds_process(inputs, "--out", out, "--models", MODELS, *extra)
    assert code == 1, output
    assert expect in output
    if case == "invalid routing":
        assert str(tmp_path / "routing.yaml") in output
    assert not out.exists()  # refused before anything is written


def test_bad_option_exits_2_and_a_real_process_prints_no_traceback(
    study: Path, tmp_path: Path
) -> None:
    code, output = cds_process(
        study, "--out", tmp_path, "--model", "cds-ref-ct-bone", "--results", "SEG,XR"
    )
    assert code == 2
    assert "--results" in output
    assert "'SEG,XR'" in output
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cds",
            "process",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
            "--model",
            "cds-ref-ct-bone",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert f"no such file or folder: {tmp_path / 'missing'}" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_hostile_local_file_is_skipped_before_it_is_parsed(tmp_path: Path) -> None:
    """issue 7: ``cds process`` and ``cds route explain`` read local files that did not come
    through ingest: the ingest bounds apply to them too. A file of 1,000 nested sequences
    (pydicom would raise RecursionError parsing it) is skipped with the reason; the other
    files are processed."""
    from cds.config import IngestLimits
    from cds.ingest.instance import encode_file_meta
    from cds.routing.router import read_headers

    from .ingest.test_limits import nested_instance

    ds, data = nested_instance(1000)
    meta = encode_file_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID), "1.2.840.10008.1.2.1", "T")
    hostile = tmp_path / "in" / "deep.dcm"
    hostile.parent.mkdir()
    hostile.write_bytes(b"\0" * 128 + b"DICM" + meta + data)
    good = tmp_path / "in" / "ct.dcm"
    shutil.copy(DICOM / "ct" / "CT_small.dcm", good)
    studies, skipped = read_headers([tmp_path / "in"], limits=IngestLimits())
    assert len(studies) == 1
    (line,) = skipped
    assert line.startswith(f"{hostile}: refused (")
    assert "max_sequence_depth" in line or "nest" in line


def test_a_file_without_preamble_is_processed_not_a_crash(tmp_path: Path) -> None:
    """A routed file without the 128-byte preamble and 'DICM' (an old CR, no File Meta)
    is read in the encoding routing found, and its SR is made and valid, where the run
    used to stop with a traceback."""
    src = DICOM / "cr_dx" / "CR-MONO1-10-chest"
    if not src.exists():
        pytest.skip("shared DICOM corpus missing")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["process", str(src), "--routing", str(REPO / "deploy" / "routing.example.yaml"),
         "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code in (0, 3), res.output  # 3: the SC had nothing to draw
    assert "Traceback" not in res.output
    ((entry,),) = [st["series"] for st in json.loads((out / "process.json").read_text())["studies"]]
    assert entry["status"] == "done", entry
    assert [o["kind"] for o in entry["objects"]] == ["SR"], entry
    for f in out.rglob("*.dcm"):
        assert dciodvfy_errors(f)[0] == [], f


def test_a_series_with_invalid_uids_is_skipped_by_name_and_the_others_made(
    study: Path, tmp_path: Path
) -> None:
    """issue 16: a source the node refuses at receive (0xC221: UIDs not valid) is skipped
    as the node skips it, the message naming the file and the attributes, never their
    values, on the console and in process.json; the other series are made, and each
    object's notes (what its encoder did differently) are in process.json."""
    bad = DICOM / "malformed" / "bad_sequence.dcm"
    if not bad.exists():
        pytest.skip("shared DICOM corpus missing")
    folder = tmp_path / "in"
    folder.mkdir()
    for f in sorted(study.iterdir()):  # located slices stating no slice thickness
        ds = pydicom.dcmread(f)
        del ds.SliceThickness
        ds.save_as(folder / f.name)
    (folder / "sub").mkdir()
    shutil.copy(bad, folder / "sub" / bad.name)
    out = tmp_path / "out"
    code, output = cds_process(
        *(folder, "--out", out, "--model", "cds-ref-ct-bone", "--results", "SEG,SR"),
        *("--models", MODELS, "--providers", "cpu"),
    )
    assert code == 3, output  # not everything asked was made
    assert f"{folder / 'sub' / bad.name}: skipped: StudyInstanceUID, SeriesInstanceUID" in output
    assert "0xC221" in output
    assert set(uids(out)) == {"SEG", "SR"}  # the good series' objects
    text = (out / "process.json").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom says the UIDs are not valid
        values = pydicom.dcmread(bad, stop_before_pixels=True, force=True)
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = str(values[kw].value).strip("\x00 ")
        assert value not in text
        assert value not in output
    record = json.loads(text)
    series = {s["status"]: s for st in record["studies"] for s in st["series"]}
    refused = next(s for status, s in series.items() if status.startswith("skipped"))
    assert refused["status"] == (
        "skipped: StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID of input file "
        "sub/bad_sequence.dcm not valid"
    )
    assert refused["series_instance_uid"] is None
    assert any("sub/bad_sequence.dcm" in p for p in record["not_produced"])
    made = series["done"]
    seg = next(o for o in made["objects"] if o["kind"] == "SEG")
    assert THICKNESS_FROM_SPACING in seg["notes"]
    assert f"SEG: {THICKNESS_FROM_SPACING}" in made["encoder_notes"]
    assert all("notes" in o for o in made["objects"])
