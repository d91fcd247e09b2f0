"""cds model: validate, list, schema, run — model packages from the command line.

``validate`` checks a package and, when it carries golden cases, runs each end to end
(decode, preprocess, onnxruntime, postprocess, DICOM encoding, findings read back from
the encoded SR/SEG/GSPS): one line per case says what matched and how well; without
golden cases it warns "geometry not verified". ``run`` prints every finding with where
it is, in source pixels (box edges, a mask's bounding box, area and volume): the same
values the result objects carry; ``--preview DIR`` writes each image with its findings
drawn (as the Secondary Capture would show them) as a PNG. Heavy modules (onnxruntime,
highdicom) are imported in the commands, so that ``cds --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from cds.cli.common import REFUSED, USAGE, fail
from cds.config import Settings, load_settings
from cds.errors import CdsError, ConfigError

model_app = typer.Typer(help="Model packages: validate, list, schema, run.", no_args_is_help=True)
_PROVIDERS = ("auto", "tensorrt", "cuda", "cpu")
#: images listed one by one for an image-level score; above, only the highest
_LISTED = 10


def _check_providers(providers: str) -> None:
    if providers not in _PROVIDERS:
        raise fail(f"--providers: must be auto, tensorrt, cuda or cpu, not {providers!r}", USAGE)


@model_app.command("validate")
def model_validate(
    packages: Annotated[list[Path], typer.Argument(help="model package folders")],
    providers: Annotated[str, typer.Option(help="auto, tensorrt, cuda or cpu")] = "auto",
) -> None:
    """Check a package: files, manifest, graph, test vector, golden cases end to end."""
    from cds.golden import run_golden  # noqa: PLC0415
    from cds.inference.validate import validate_package  # noqa: PLC0415

    _check_providers(providers)
    failed = 0
    for pkg in packages:
        r = validate_package(pkg, providers, golden=run_golden)  # type: ignore[arg-type]
        if r.ok:
            diffs = ", ".join(f"{k} {v:.2g}" for k, v in r.test_vector_max_abs_diff.items())
            assert r.manifest is not None
            typer.echo(
                f"{pkg}: OK  {r.manifest.name} {r.manifest.version}  sha256 {r.sha256}  "
                f"provider {r.provider}{' (fell back)' if r.fell_back else ''}  "
                f"test vector max |diff|: {diffs}  ({r.seconds:.2f} s)"
            )
        else:
            failed += 1
            typer.echo(f"{pkg}: {len(r.errors)} problem(s)", err=True)
            for e in r.errors:
                typer.echo(f"  {e}", err=True)
        for line in r.golden:
            typer.echo(f"  {line}")
        for w in r.warnings:
            typer.echo(f"  warning: {w}", err=True)
    if failed:
        raise typer.Exit(1)


@model_app.command("list")
def model_list(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML configuration")
    ] = None,
    home: Annotated[Path | None, typer.Option("--home", help="state folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Load the configured model folders as the node does; show each model's status."""
    from cds.golden import run_golden_once  # noqa: PLC0415
    from cds.inference.registry import ModelRegistry  # noqa: PLC0415

    try:
        settings: Settings = load_settings(config, home)
    except ConfigError as exc:
        raise fail(str(exc), USAGE) from None
    inf = settings.inference
    golden = run_golden_once if inf.golden_at_load else None
    models = ModelRegistry(inf.model_dirs, inf.providers, warm=False, golden=golden).load()
    rows = [
        {
            "name": m.name,
            "version": m.version,
            "status": m.status,
            "provider": m.provider,
            "sha256": m.sha256,
            "path": str(m.path),
            "errors": m.errors,
        }
        for m in models
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        dirs = ", ".join(str(d) for d in inf.model_dirs)
        typer.echo(f"no model packages in {dirs} (inference.model_dirs)")
        return
    typer.echo(f"{'NAME':<28} {'VERSION':<12} {'STATUS':<7} {'PROVIDER':<9} SHA-256 (model.onnx)")
    for m in models:
        typer.echo(
            f"{m.name:<28} {m.version:<12} {m.status:<7} {m.provider or '-':<9} {m.sha256 or '-'}"
        )
        for e in m.errors:
            typer.echo(f"    {e}")


@model_app.command("schema")
def model_schema(
    out: Annotated[Path | None, typer.Option("--out", help="write to this file")] = None,
) -> None:
    """Print (or write) the JSON Schema of manifest.yaml."""
    from cds.inference.manifest import json_schema  # noqa: PLC0415 - lazy: `cds --help` stays fast

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}")


def _image(ref: Any) -> str:
    return f"image {ref.sop_uid} frame {ref.frame}"


def finding_lines(result: Any, lang: str = "en") -> list[str]:
    """Every finding of ``result`` and where it is, in source pixels (edges: the top left
    corner of the top left pixel is 0, 0), as the result objects carry it; each label as
    the SR states it: a ``normal`` class whose score reaches its threshold is present
    (the normal state, not a finding), an informational score is no decision."""
    from cds.inference.boxes import edges_of  # noqa: PLC0415 - lazy: `cds --help` stays fast
    from cds.results.text import said, statement  # noqa: PLC0415 - lazy: `cds --help` stays fast

    lines = []
    for f in result.findings:
        state = said(statement(f, result.kind), normal=f.label.normal)
        head = f"  {f.label.display.get(lang)} [{f.label.code.scheme} {f.label.code.value}]: "
        extra = (
            f", area {f.measurement:.1f} mm2"
            if f.measurement and result.kind != "measurement"
            else ""
        )
        extra += f", volume {f.volume_mm3:.1f} mm3" if f.volume_mm3 else ""
        lines.append(f"{head}{state}, score {f.score:.3f}, on {len(f.per_image)} image(s){extra}")
        values = [(ref, v) for ref, v in f.per_image.items() if isinstance(v, float)]
        if len(values) > _LISTED:
            ref, v = max(values, key=lambda rv: rv[1])
            lines.append(f"    highest on {_image(ref)}: {v:.3f}")
            continue
        for ref, where in f.per_image.items():
            if isinstance(where, float):
                lines.append(f"    {_image(ref)}: {where:.3f}")
            elif isinstance(where, np.ndarray):
                r, c = np.nonzero(where)
                if r.size:
                    lines.append(
                        f"    {_image(ref)}: mask {int(r.size)} pixels, bounding box "
                        f"x {c.min()}-{c.max() + 1}, y {r.min()}-{r.max() + 1}"
                    )
            else:
                for box, score in where:
                    x1, y1, x2, y2 = edges_of(box)
                    lines.append(
                        f"    {_image(ref)}: box x {x1:.1f}-{x2:.1f}, y {y1:.1f}-{y2:.1f}, "
                        f"score {score:.3f}"
                    )
    return lines


def _preview(result: Any, files: list[Path], folder: Path, lang: str) -> list[Path]:
    """PNGs of the images with a finding, drawn as the Secondary Capture draws them."""
    from PIL import Image  # noqa: PLC0415 - lazy: `cds --help` stays fast
    from pydicom import dcmread  # noqa: PLC0415 - lazy: `cds --help` stays fast

    from cds.results.sc import render  # noqa: PLC0415 - lazy: `cds --help` stays fast

    by_uid = {str(ds.SOPInstanceUID): ds for ds in (dcmread(f) for f in files)}
    refs = [r for f in result.findings if f.present for r in f.per_image]
    if not refs:  # nothing present: the image a score comes from, else the first
        refs = list(result.images[:1])
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for ref in dict.fromkeys(refs):
        ds = by_uid.get(ref.sop_uid)
        if ds is None:
            continue
        path = folder / f"{ref.sop_uid}_{ref.frame}.png"
        Image.fromarray(render(ds, ref, result, lang)).save(path)
        written.append(path)
    return written


@model_app.command("run")
def model_run(
    package: Annotated[Path, typer.Argument(help="model package folder")],
    series: Annotated[list[Path], typer.Argument(help="DICOM files (one series) or a folder")],
    providers: Annotated[str, typer.Option(help="auto, tensorrt, cuda or cpu")] = "auto",
    preview: Annotated[
        Path | None, typer.Option("--preview", help="write PNG overlays of the findings here")
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="en or fr")] = "en",
) -> None:
    """Run one model on one series; print each finding and where it is (source pixels)."""
    from cds.inference.images import decode  # noqa: PLC0415 - lazy: `cds --help` stays fast
    from cds.inference.registry import LoadedModel, warm_up  # noqa: PLC0415
    from cds.inference.runner import ModelRunner  # noqa: PLC0415 - lazy: `cds --help` stays fast
    from cds.inference.session import DeviceSlots  # noqa: PLC0415 - lazy: `cds --help` stays fast
    from cds.inference.validate import validate_package  # noqa: PLC0415

    _check_providers(providers)
    r = validate_package(package, providers, keep_session=True)  # type: ignore[arg-type]
    if not r.ok:
        raise fail("\n".join([f"{package}: not a valid package", *r.errors]), REFUSED)
    files = sorted(p for s in series for p in ([s] if s.is_file() else s.rglob("*")) if p.is_file())
    try:
        stack = decode(files)
        model = LoadedModel(package, "ready", r.manifest, r.sha256, r.provider, session=r.session)
        warm_up(model)
        result = ModelRunner(model, DeviceSlots(1, 1)).run(stack)
    except CdsError as exc:
        raise fail(f"cannot run the model on the series: {exc}", REFUSED) from None
    rec = result.record
    typer.echo(
        f"{rec.model} {rec.version} (sha256 {rec.sha256[:12]}) on {rec.images} images, "
        f"provider {rec.provider}, {rec.seconds:.3f} s {rec.timings}"
    )
    typer.echo("findings (source pixels; x along a row, y down a column, edges):")
    for line in finding_lines(result, lang):
        typer.echo(line)
    if preview is not None:
        for path in _preview(result, files, preview, lang):
            typer.echo(f"preview: {path}")
