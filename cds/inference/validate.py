"""Check a model package: files, manifest, ONNX graph vs declared tensors and layouts,
test vector, and golden cases end to end.

Every problem is reported with the file and the path at fault; nothing stops
at the first one that can be checked independently. Golden cases (``cds.golden``,
handed in by ``cds model validate``) run the whole path: decode, preprocess,
onnxruntime, postprocess, DICOM encoding, and the findings read back from the encoded
objects;
a package without them is valid but gets the warning "geometry not verified".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cds.errors import ModelError
from cds.inference import manifest as mf
from cds.inference.manifest_checks import check_manifest
from cds.inference.session import ProviderChoice, Session

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


@dataclass
class Report:
    package: Path
    manifest: mf.Manifest | None = None
    sha256: str | None = None
    provider: str | None = None
    fell_back: bool = False
    errors: list[str] = field(default_factory=list)
    test_vector_max_abs_diff: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    session: Session | None = None
    warnings: list[str] = field(default_factory=list)
    #: one line per golden case: what was compared and how well
    golden: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dims_match(declared: list[int | str], actual: list[Any]) -> bool:
    if len(declared) != len(actual):
        return False
    for d, a in zip(declared, actual, strict=True):
        free_d = isinstance(d, str) or d == -1
        free_a = not isinstance(a, int) or a is None or a < 0
        if free_d or free_a:
            continue
        if d != a:
            return False
    return True


def _check_tensor(
    where: str, spec: mf.InputTensor | mf.OutputTensor, graph: dict[str, Any], errors: list[str]
) -> None:
    node = graph.get(spec.name)
    if node is None:
        errors.append(
            f"{where}.name: model.onnx has no tensor {spec.name!r} (it has {sorted(graph)})"
        )
        return
    if not _dims_match(spec.shape, list(node.shape)):
        errors.append(
            f"{where}.shape: declares {spec.shape}, model.onnx {spec.name!r} has {list(node.shape)}"
        )
    dtype = _ORT_DTYPES.get(node.type, node.type)
    if dtype != spec.dtype:
        errors.append(f"{where}.dtype: declares {spec.dtype}, model.onnx {spec.name!r} is {dtype}")


def check_graph(m: mf.Manifest, session: Session, source: str) -> list[str]:
    """The declared tensors against model.onnx: names, shapes, dtypes, and the layouts
    against the graph's fixed dimensions (``check_manifest`` with the graph's shapes)."""
    errors: list[str] = []
    inputs = {i.name: i for i in session.inputs()}
    outputs = {o.name: o for o in session.outputs()}
    _check_tensor(f"{source}: input.tensor", m.input.tensor, inputs, errors)
    if len(inputs) != 1:
        errors.append(f"{source}: input.tensor: model.onnx has {len(inputs)} inputs, cds feeds one")
    for i, t in enumerate(m.output.tensors):
        _check_tensor(f"{source}: output.tensors[{i}]", t, outputs, errors)
    if errors:
        return errors
    graph = {name: list(node.shape) for name, node in {**inputs, **outputs}.items()}
    return [f"{source}: {e}" for e in check_manifest(m, graph)]


def run_test_vector(
    m: mf.Manifest, session: Session, package: Path, source: str, report: Report
) -> list[str]:
    tv = m.test_vector
    errors: list[str] = []
    try:
        x = np.load(package / tv.input, allow_pickle=False)
        expected = np.load(package / tv.expected, allow_pickle=False)
    except (OSError, ValueError) as exc:
        return [f"{source}: test_vector: cannot read ({exc})"]
    names = [t.name for t in m.output.tensors]
    missing = [n for n in names if n not in expected.files]
    if missing:
        return [f"{source}: test_vector.expected: {tv.expected} lacks arrays {missing}"]
    try:
        got = session.run({m.input.tensor.name: x.astype(m.input.tensor.dtype)}, names)
    except Exception as exc:  # onnxruntime raises its own types
        return [f"{source}: test_vector.input: the model cannot run it: {exc}"]
    for name, out in zip(names, got, strict=True):
        want = expected[name]
        if np.shape(out) != want.shape:
            errors.append(
                f"{source}: test_vector: output {name!r} has shape "
                f"{list(np.shape(out))}, expected {list(want.shape)}"
            )
            continue
        diff = float(np.max(np.abs(np.asarray(out, np.float64) - want))) if want.size else 0.0
        report.test_vector_max_abs_diff[name] = diff
        if not np.allclose(out, want, atol=tv.atol, rtol=tv.rtol):
            errors.append(
                f"{source}: test_vector: output {name!r} differs from {tv.expected} "
                f"(max abs diff {diff:.3g} > atol {tv.atol}, rtol {tv.rtol})"
            )
    return errors


def _check_files(package: Path, report: Report, src: str) -> bool:
    """Files the package needs; the SHA-256 pinned by a fetch step. False: stop here."""
    onnx_path = package / mf.MODEL_NAME
    fetch = report.manifest.fetch if report.manifest is not None else None
    for name in (mf.MODEL_NAME, mf.CARD_NAME):
        if not (package / name).is_file():
            how = (
                f" (fetch it: python {package / fetch.script})"
                if name == mf.MODEL_NAME and fetch is not None
                else ""
            )
            report.errors.append(f"{package / name}: missing{how}")
    if report.manifest is not None:
        for key in ("input", "expected"):
            rel = getattr(report.manifest.test_vector, key)
            if not (package / rel).is_file():
                report.errors.append(f"{src}: test_vector.{key}: file {rel} missing")
    if onnx_path.is_file():
        report.sha256 = sha256_file(onnx_path)
        if fetch is not None and report.sha256 != fetch.sha256:
            report.errors.append(
                f"{src}: fetch.sha256: model.onnx has SHA-256 {report.sha256}, the manifest "
                f"pins {fetch.sha256}"
            )
            return False
    return True


#: runs a package's golden cases: (package, manifest, session, model SHA-256, manifest path)
#: -> (lines to show, errors). ``cds.golden.run_golden``: it encodes result objects, a
#: stage above this one, so it is handed in rather than imported.
GoldenRunner = Callable[[Path, mf.Manifest, Session, str, str], tuple[list[str], list[str]]]


def _golden(
    package: Path, report: Report, session: Session, src: str, run_golden: GoldenRunner
) -> None:
    assert report.manifest is not None
    if not report.manifest.golden:
        report.warnings.append(
            f"{src}: golden: no golden cases: geometry not verified (add golden cases: "
            "docs/vendor-guide.md)"
        )
        return
    lines, errors = run_golden(package, report.manifest, session, report.sha256 or "", src)
    report.golden.extend(lines)
    report.errors.extend(errors)


def validate_package(
    package: Path,
    providers: ProviderChoice = "auto",
    keep_session: bool = False,
    *,
    golden: GoldenRunner | None = None,
    device_id: int | None = None,
) -> Report:
    """Everything ``cds model validate`` checks; the report lists every problem.

    ``golden``: the runner of the package's golden cases end to end
    (``cds.golden.run_golden``); without it they are not run (the node's loading skips
    them: they were run by ``cds model validate``). ``device_id``: the GPU id its session
    is made on (``DeviceSlots.place``; default: onnxruntime's)."""
    t0 = time.perf_counter()
    report = Report(package=package)
    src = str(package / mf.MANIFEST_NAME)
    if not package.is_dir():
        report.errors.append(f"{package}: not a folder")
        return report
    try:
        report.manifest = mf.load_manifest(package)
    except mf.ManifestError as exc:
        report.errors.extend(exc.errors)
    onnx_path = package / mf.MODEL_NAME
    if not _check_files(package, report, src):
        report.seconds = time.perf_counter() - t0
        return report
    if report.manifest is None or not onnx_path.is_file():
        report.seconds = time.perf_counter() - t0
        return report
    try:
        session = Session(onnx_path, providers, device_id=device_id)
    except ModelError as exc:
        report.errors.append(str(exc))
        report.seconds = time.perf_counter() - t0
        return report
    report.provider, report.fell_back = session.provider_short, session.fell_back
    graph_errors = check_graph(report.manifest, session, src)
    report.errors.extend(graph_errors)
    if not graph_errors and not any("test_vector" in e for e in report.errors):
        report.errors.extend(run_test_vector(report.manifest, session, package, src, report))
    if report.ok and golden is not None:
        _golden(package, report, session, src, golden)
    elif report.ok:
        report.warnings.append(
            f"{src}: golden: none run: geometry not verified end to end (add golden cases)"
        )
    if keep_session:
        report.session = session
    report.seconds = time.perf_counter() - t0
    return report
