"""The ``cds demo``  command (registered on the main app by ``register``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer


def _until_ctrl_c() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("stopping ...")


def demo(
    *,
    keep: Annotated[
        bool, typer.Option("--keep", help="keep Orthanc and the node running until Ctrl-C")
    ] = False,
    slices: Annotated[int, typer.Option(min=1, max=1000, help="slices of the CT")] = 40,
    size: Annotated[int, typer.Option(min=32, max=1024, help="rows = columns")] = 128,
    models: Annotated[
        Path | None,
        typer.Option(help="folder with cds-ref-ct-bone and cds-ref-blob-detect (default ./models)"),
    ] = None,
    lang: Annotated[str, typer.Option(help="language of the result objects: en or fr")] = "en",
    no_orthanc: Annotated[
        bool, typer.Option("--no-orthanc", help="do not use Orthanc even if installed")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the results")] = 180,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            file_okay=False,
            help="copy the result files into this folder, kept after the demo "
            "(everything else is removed at the end)",
        ),
    ] = None,
) -> None:
    """The whole round trip on this machine, from a throw-away PACS and back.

    A synthetic CT (patient DEMO^CDS) goes from a throw-away Orthanc (the PACS) to a cds
    node, the reference models run, and the advisory results (SEG, SR, GSPS, SC) come back
    into the same study in Orthanc."""
    from cds.demo import run_demo  # noqa: PLC0415 - the node stack loads only for this command

    if lang not in ("en", "fr"):
        typer.echo(f"--lang: must be 'en' or 'fr', not {lang!r}", err=True)
        raise typer.Exit(2)
    outcome = run_demo(
        typer.echo,
        slices=slices,
        size=size,
        models=models,
        lang=lang,
        timeout=timeout,
        orthanc=not no_orthanc,
        wait_forever=_until_ctrl_c if keep else None,
        out=out,
    )
    if not outcome.ok:
        for problem in outcome.problems:
            typer.echo(f"cds demo: {problem}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("demo")(demo)
