"""``cds certify model PKG --out DIR``: a model package's certification, check by check.

1. ``validate``: everything ``cds model validate`` checks (manifest, files, graph, test
   vector) and the golden cases end to end (``cds.golden.run_golden``), on the CPU;
2. ``determinism``: each golden case's input through ``cds process``'s path twice, into
   ``DIR/runs/1`` and ``DIR/runs/2``; every file must be byte for byte the same;
3. ``cpu_gpu``: the test vector on the GPU against the CPU, within the manifest's
   ``test_vector`` tolerance, when a GPU is really used (else not applicable);
4. ``throughput``: images per second of the whole per-series path on this machine;
5. ``dciodvfy``, ``dcmpschk``, ``pixelmed_sr``: every object of run 1 through the
   validators (``cds.certify.checks``), not run when a tool is missing.

Nothing is sent anywhere; the objects stay in ``DIR/runs``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from cds.certify import checks
from cds.certify.checks import Check
from cds.certify.emit import GoldenInput, golden_inputs, process, written_files
from cds.errors import CdsError, ModelError
from cds.golden import run_golden
from cds.inference import manifest as mf
from cds.inference.images import decode
from cds.inference.registry import LoadedModel
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots, Session, gpu_runtime_present, visible_gpus
from cds.inference.validate import validate_package
from cds.results.encode import encode

RUNS = "runs"
NOTHING_TO_ENCODE = "nothing to encode"
#: throughput: at least this many rounds, and at least this long
_MIN_ROUNDS = 3
_MIN_SECONDS = 1.0


def _validate(package: Path) -> tuple[Check, mf.Manifest | None, Session | None, str]:
    report = validate_package(package, "cpu", keep_session=True, golden=run_golden)
    evidence = [*report.golden, *report.errors, *report.warnings]
    if report.sha256:
        evidence.insert(0, f"model.onnx SHA-256 {report.sha256}, provider {report.provider}")
    for name, diff in report.test_vector_max_abs_diff.items():
        evidence.append(f"test vector: output {name!r} max abs diff {diff:.3g}")
    status: checks.Status = "pass" if report.ok else "fail"
    return Check("validate", status, evidence), report.manifest, report.session, report.sha256 or ""


def _runs(package: Path, m: mf.Manifest, cases: list[GoldenInput], out: Path) -> list[str]:
    """Each case through ``cds process`` into ``out/<n>/<case index>``, twice; problems."""
    problems = []
    for n in ("1", "2"):
        run_dir = out / RUNS / n
        if run_dir.exists():
            shutil.rmtree(run_dir)  # ours, from an earlier certification into DIR
        for i, case in enumerate(cases):
            try:
                outcome = process(package, m, [case.folder], run_dir / str(i), lang=case.language)
            except CdsError as exc:
                problems.append(f"run {n}, {case.where}: {exc}")
                continue
            # a kind with nothing to encode is not made, and said so: no failure (README)
            problems += [
                f"run {n}, {case.where}: {p}"
                for p in outcome.problems
                if NOTHING_TO_ENCODE not in p
            ]
    return problems


#: attributes that say when an object was made: the one thing two runs may differ in
TIME_OF_CREATION = frozenset(
    (
        "InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
        "ContributionDateTime", "DateOfSecondaryCapture", "TimeOfSecondaryCapture",
        "PresentationCreationDate", "PresentationCreationTime",
    )
)  # fmt: skip


def differing_attributes(a: Dataset, b: Dataset) -> set[str]:
    """Keywords (or tags) of the elements whose values differ, at any depth."""
    out: set[str] = set()
    for tag in sorted(set(a.keys()) | set(b.keys())):
        x, y = a.get(tag), b.get(tag)
        elem = x if x is not None else y
        name = (elem.keyword if elem is not None else "") or str(tag)
        if x is None or y is None:
            out.add(name)
        elif x.VR == "SQ" and y.VR == "SQ":
            if len(x.value) != len(y.value):
                out.add(name)
            for i, j in zip(x.value, y.value, strict=False):
                out |= differing_attributes(i, j)
        elif x.value != y.value:
            out.add(name)
    return out


def _determinism(out: Path, problems: list[str]) -> Check:
    one, two = out / RUNS / "1", out / RUNS / "2"
    a = {p.relative_to(one).as_posix(): p for p in one.rglob("*.dcm") if p.is_file()}
    b = {p.relative_to(two).as_posix(): p for p in two.rglob("*.dcm") if p.is_file()}
    evidence = list(problems)
    if not a:
        return Check("determinism", "fail", [*evidence, "no object was made"])
    ok = not problems
    same = stamped = 0
    for k in sorted(a):
        if k not in b:
            ok = False
            evidence.append(f"{k}: made by run 1 only")
        elif a[k].read_bytes() == b[k].read_bytes():
            same += 1
        else:
            diff = differing_attributes(dcmread(a[k]), dcmread(b[k]))
            if diff <= TIME_OF_CREATION:
                stamped += 1
                continue
            ok = False
            evidence.append(
                f"{k}: differs between runs/1 and runs/2 in "
                + ", ".join(sorted(diff - TIME_OF_CREATION))
            )
    for k in sorted(set(b) - set(a)):
        ok = False
        evidence.append(f"{k}: made by run 2 only")
    evidence.append(
        f"{len(a)} object(s), same paths and SOP Instance UIDs in runs/1 and runs/2: "
        f"{same} byte for byte identical, {stamped} identical except the time they were "
        f"made ({', '.join(sorted(TIME_OF_CREATION))})"
    )
    return Check("determinism", "pass" if ok else "fail", evidence)


def _cpu_gpu(package: Path, m: mf.Manifest, cpu: Session) -> Check:
    gpus = visible_gpus() if gpu_runtime_present() else ()
    if not gpus:
        return Check("cpu_gpu", "not_applicable", ["not applicable: no GPU"])
    try:
        gpu = Session(package / mf.MODEL_NAME, "cuda")
    except ModelError as exc:
        return Check("cpu_gpu", "fail", [f"a GPU is present but the model cannot load: {exc}"])
    if gpu.provider_short == "CPU":
        return Check(
            "cpu_gpu",
            "not_applicable",
            [f"not applicable: no GPU provider ({len(gpus)} GPU(s) visible, onnxruntime "
             f"runs on {gpu.provider})"],
        )  # fmt: skip
    tv = m.test_vector
    x = np.load(package / tv.input, allow_pickle=False).astype(m.input.tensor.dtype)
    names = [t.name for t in m.output.tensors]
    feeds = {m.input.tensor.name: x}
    evidence = [
        f"GPU provider {gpu.provider} ({gpu.device}); tolerance atol {tv.atol}, rtol {tv.rtol}"
    ]
    ok = True
    for name, c, g in zip(names, cpu.run(feeds, names), gpu.run(feeds, names), strict=True):
        c64, g64 = np.asarray(c, np.float64), np.asarray(g, np.float64)
        diff = float(np.max(np.abs(c64 - g64))) if c64.size else 0.0
        within = c64.shape == g64.shape and bool(np.allclose(g64, c64, atol=tv.atol, rtol=tv.rtol))
        ok &= within
        evidence.append(f"output {name!r}: max abs diff GPU vs CPU {diff:.3g}: "
                        + ("within" if within else "outside") + " the tolerance")  # fmt: skip
    return Check("cpu_gpu", "pass" if ok else "fail", evidence)


def _throughput(
    package: Path, m: mf.Manifest, session: Session, sha256: str, cases: list[GoldenInput]
) -> Check:
    files = [sorted(p for p in c.folder.rglob("*") if p.is_file()) for c in cases]
    model = LoadedModel(package, "ready", m, sha256, session.provider_short, session=session)
    runner = ModelRunner(model, DeviceSlots(1, 1))
    images = rounds = 0
    t0 = time.perf_counter()
    while rounds < _MIN_ROUNDS or time.perf_counter() - t0 < _MIN_SECONDS:
        for case, series in zip(cases, files, strict=True):
            stack = decode(series)
            result = runner.run(stack)
            sources = [dcmread(f) for f in series]
            encode(sources, result, m, m.output.results, case.language, seed="certify")
            images += len(series)
        rounds += 1
    seconds = time.perf_counter() - t0
    rate = images / seconds
    return Check(
        "throughput",
        "pass",
        [
            f"{images} image(s) in {seconds:.2f} s: {rate:.1f} images/s (decode, preprocess, "
            f"inference, postprocess, encode; provider {session.provider_short}, "
            f"{os.cpu_count()} CPU core(s))"
        ],
        {"images_per_second": round(rate, 1)},
    )


def _validators(out: Path) -> list[Check]:
    root = out / RUNS / "1"
    files = written_files(root)
    modality = {f: str(dcmread(f, stop_before_pixels=True).Modality) for f in files}
    pr = [f for f in files if modality[f] == "PR"]
    sr = [f for f in files if modality[f] == "SR"]
    return [
        checks.tool_check("dciodvfy", "dciodvfy", checks.dciodvfy(files), root, "object"),
        checks.tool_check("dcmpschk", "dcmpschk", checks.dcmpschk(pr), root, "presentation state"),
        checks.tool_check(
            "pixelmed_sr",
            checks.pixelmed_missing() or "pixelmed",
            checks.pixelmed_sr(sr),
            root,
            "SR",
        ),
    ]


def certify_model(package: Path, out: Path) -> list[Check]:
    """Every check of the package, in order; the objects are left in ``out/runs``."""
    validate, m, session, sha256 = _validate(package)
    results = [validate]
    if m is None or session is None:
        skipped = ("determinism", "cpu_gpu", "throughput", "dciodvfy", "dcmpschk", "pixelmed_sr")
        return results + [
            Check(c, "not_run", ["not run: the package does not load"]) for c in skipped
        ]
    try:
        cases = golden_inputs(package, m)
    except ValueError as exc:
        cases, validate.status = [], "fail"
        validate.evidence.append(str(exc))
    if not cases:
        none = ["not applicable: the package has no golden case (no DICOM input to run)"]
        results.append(Check("determinism", "not_applicable", none))
        results.append(_cpu_gpu(package, m, session))
        rest = ("throughput", "dciodvfy", "dcmpschk", "pixelmed_sr")
        results += [Check(c, "not_applicable", none) for c in rest]
        return results
    results.append(_determinism(out, _runs(package, m, cases, out)))
    results.append(_cpu_gpu(package, m, session))
    results.append(_throughput(package, m, session, sha256, cases))
    results += _validators(out)
    return results
