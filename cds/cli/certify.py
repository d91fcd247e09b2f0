"""``cds certify``: the certification kit (issue 24). ``cds certify model PKG --out DIR``
runs a model package's checks and writes ``DIR/report.json`` and ``DIR/report.html``;
exit 0 when no check failed, 1 when one did (each named, with its reasons), 2 for a bad
option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cds.cli.common import REFUSED, USAGE, fail

certify_app = typer.Typer(help="Prove an integration: a report per check.", no_args_is_help=True)


@certify_app.command("model")
def certify_model_cmd(
    package: Annotated[Path, typer.Argument(help="the model package folder")],
    out: Annotated[
        Path, typer.Option("--out", file_okay=False, help="folder of the report and objects")
    ],
) -> None:
    """Certify a model package: golden cases, determinism, speed, validators.

    Validation and golden cases, determinism, CPU versus GPU, throughput, and every
    object it makes through dciodvfy, dcmpschk and pixelmed's SR validator (when
    installed)."""
    from cds.certify import report  # noqa: PLC0415 - the inference stack loads only here
    from cds.certify.model import certify_model  # noqa: PLC0415
    from cds.i18n import LANGS, text  # noqa: PLC0415
    from cds.inference import manifest as mf  # noqa: PLC0415

    if not (package / mf.MANIFEST_NAME).is_file():
        raise fail(f"PKG: {package}: no {mf.MANIFEST_NAME} (not a model package)", USAGE)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"--out: cannot create the folder {out} ({exc.strerror})", USAGE) from None
    results = certify_model(package, out)
    try:
        m = mf.load_manifest(package)
        name, version = m.name, m.version
    except mf.ManifestError:
        name, version = package.name, "?"
    titles = {lang: text(lang, "certify.model_title", name=name, version=version) for lang in LANGS}
    report.write(out, {"kind": "model", "name": name, "version": version}, titles, results)
    for c in results:
        typer.echo(f"{c.status:<15} {c.id}")
    typer.echo(f"report: {out / 'report.html'}, {out / 'report.json'}")
    bad = report.failed(results)
    if bad:
        for c in bad:
            for line in c.evidence:
                typer.echo(f"cds certify model: {c.id}: {line}", err=True)
        raise fail(f"cds certify model: {len(bad)} check(s) failed", REFUSED)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(certify_app, name="certify")
