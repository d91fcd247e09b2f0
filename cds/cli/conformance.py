"""``cds conformance``: write the DICOM conformance statement from the code.

The generated parts (tables between ``<!-- cds conformance: begin/end NAME -->``) are
replaced; the prose around them is kept as it is (``cds.certify.conformance_md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cds.cli.common import REFUSED, fail

DEFAULT_OUT = Path("docs/conformance.md")


def conformance(
    out: Annotated[
        Path,
        typer.Option("--out", dir_okay=False, help="the statement to write (its prose is kept)"),
    ] = DEFAULT_OUT,
    check: Annotated[
        bool,
        typer.Option("--check", help="write nothing; exit 1 when the file is not up to date"),
    ] = False,
) -> None:
    """Write the DICOM conformance statement from what the node really supports.

    SOP classes accepted and sent, transfer syntaxes, roles, AE settings, network
    limits, TLS, character sets and DICOMweb STOW-RS."""
    from cds.certify.conformance import collect  # noqa: PLC0415 - runs the reference models
    from cds.certify.conformance_md import SKELETON, update  # noqa: PLC0415

    try:
        current = out.read_text(encoding="utf-8") if out.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"--out: cannot read {out} ({exc})", REFUSED) from None
    new = update(current if current is not None else SKELETON, collect())
    if check:
        if new != current:
            typer.echo(f"{out}: not up to date: run `cds conformance --out {out}`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out}: up to date")
        return
    if new == current:
        typer.echo(f"{out}: up to date")
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(new, encoding="utf-8")
    except OSError as exc:
        raise fail(f"--out: cannot write {out} ({exc.strerror})", REFUSED) from None
    typer.echo(f"{out}: written")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("conformance")(conformance)
