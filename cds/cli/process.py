"""The ``cds process`` command (registered on the main app by ``register``)."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from cds.cli.common import PARTIAL, REFUSED, USAGE, fail
from cds.config import load_settings
from cds.errors import CdsError, ConfigError
from cds.logging import configure_logging
from cds.routing.rules import RoutingFileError

_PROVIDERS = ("auto", "tensorrt", "cuda", "cpu")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{12,64}$")
_HELP = "\n\n".join(
    [
        "Route, infer and encode DICOM files offline; write the result objects to --out.",
        "The same steps as the node (routing rules, model runs, SR/SEG/GSPS/SC encoding, "
        "result UIDs seeded by the input SOP Instance UIDs), without any network or spool, "
        "with a temporary state store removed at the end: the same inputs and model give "
        "the same objects, with the same UIDs.",
        "Objects go to OUT/<StudyInstanceUID>/<Modality>/<SOPInstanceUID>.dcm; "
        "OUT/process.json records the inputs (SOP Instance UIDs), the model (name, version, "
        "SHA-256, provider), the objects and the timings, without patient data.",
        "Exit status: 0 every object asked was made; 1 bad input (no DICOM, invalid "
        "routing file, unknown model, no rule matched) or nothing made; 2 bad option; "
        "3 some object asked was not made (each is listed).",
    ]
)


class _Stderr:
    """Whatever ``sys.stderr`` is when a log line is written (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _check_together(
    routing: Path | None, model: str | None, results: str | None, sha256: str | None
) -> None:
    """Options that go with --model only, or not with each other."""
    if routing is not None and model is not None:
        raise fail("give --routing or --model, not both", USAGE)
    if results is not None and model is None:
        raise fail(
            "--results goes with --model (a routing file names its pipelines' results)", USAGE
        )
    if sha256 is not None and (model is None or not _SHA_RE.match(sha256)):
        raise fail("--sha256: goes with --model and is 12 to 64 hex digits", USAGE)


def process(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (searched deeply)")],
    *,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="folder for the result objects and process.json")
    ],
    routing: Annotated[
        Path | None,
        typer.Option("--routing", help="routing file (default: routing.file of the config)"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="bypass routing: run this model (manifest name) on every series of a "
            "modality it accepts",
        ),
    ] = None,
    results: Annotated[
        str | None,
        typer.Option(
            "--results",
            help="with --model: result objects to make, e.g. SR,SEG "
            "(SR, SEG, GSPS, SC; default: those the model's manifest declares)",
        ),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option(
            "--sha256",
            help="with --model: the SHA-256 of model.onnx expected (at least its first 12 "
            "hex digits, as in process.json); another build is refused",
        ),
    ] = None,
    models: Annotated[
        list[Path] | None,
        typer.Option("--models", help="model folder, repeatable (default: inference.model_dirs)"),
    ] = None,
    providers: Annotated[
        str | None,
        typer.Option(help="auto, tensorrt, cuda or cpu (default: inference.providers)"),
    ] = None,
    lang: Annotated[
        str | None,
        typer.Option(
            "--lang", help="language of the result objects: en or fr (default: results.language)"
        ),
    ] = None,
    calling_ae: Annotated[
        str, typer.Option("--calling-ae", help="route as if the study came from this AE title")
    ] = "",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML configuration file (see deploy/cds.example.yaml)"
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log every event")] = False,
) -> None:
    """Route, infer and encode DICOM files offline (see ``_HELP``)."""
    from cds import offline  # noqa: PLC0415 - the inference stack loads only for this command
    from cds.inference.session import gpu_ids  # noqa: PLC0415 - as offline

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise fail(str(exc), USAGE) from None
    configure_logging(settings.log.format, "info" if verbose else "warning", stream=_Stderr())  # type: ignore[arg-type]
    inf = settings.inference
    choice = providers or inf.providers
    if choice not in _PROVIDERS:
        raise fail(f"--providers: must be {', '.join(_PROVIDERS)}, not {choice!r}", USAGE)
    language = lang or settings.results.language
    if language not in ("en", "fr"):
        raise fail(f"--lang: must be 'en' or 'fr', not {language!r}", USAGE)
    _check_together(routing, model, results, sha256)
    try:
        kinds = offline.parse_kinds(results) if results is not None else None
    except ValueError as exc:
        raise fail(f"--results: {exc}", USAGE) from None
    file = None if model is not None else (routing or settings.routing.file)
    if model is None and file is None:
        raise fail(
            "no routing file: give --routing FILE or --model NAME, or set routing.file", USAGE
        )
    request = offline.Request(
        paths=paths,
        out=out,
        model_dirs=list(models) if models else list(inf.model_dirs),
        providers=choice,  # type: ignore[arg-type]
        lang=language,
        routing=file,
        model=model,
        kinds=kinds,
        model_sha256=sha256,
        disabled_models=list(settings.routing.disabled_models),
        calling_ae=calling_ae,
        sessions_per_gpu=inf.max_sessions_per_gpu,
        sessions_cpu=inf.max_sessions_cpu,
        gpus=gpu_ids(inf.gpus) if choice != "cpu" else [],
        warm=inf.warm_up,
    )
    try:
        with warnings.catch_warnings():
            # highdicom's warnings quote attribute values, a patient's name among them
            warnings.filterwarnings("ignore", module=r"highdicom(\..*)?$")
            outcome = offline.run(request, typer.echo)
    except RoutingFileError as exc:
        raise fail(
            f"{file}: {len(exc.errors)} error(s)\n  " + "\n  ".join(exc.errors), REFUSED
        ) from None
    except CdsError as exc:
        raise fail(str(exc), REFUSED) from None
    except OSError as exc:  # the output folder: full disk, no permission
        raise fail(f"--out: cannot write under {out}: {exc.strerror or exc}", REFUSED) from None
    record = out / offline.RECORD_NAME
    if not outcome.written and outcome.problems:
        raise fail("\n".join(["nothing was made:", *outcome.problems, f"see {record}"]), REFUSED)
    typer.echo(f"{len(outcome.written)} object(s) written; record: {record}")
    if outcome.problems:
        raise fail("\n".join(["not everything asked was made:", *outcome.problems]), PARTIAL)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("process", help=_HELP)(process)
