"""``cds certify``: the certification kit (issue 24). ``cds certify model PKG --out DIR``
runs a model package's checks, ``cds certify pacs --ae AE --host H --port P --out DIR``
a site's PACS against the running node; each writes ``DIR/report.json`` and
``DIR/report.html``; exit 0 when no check failed, 1 when one did (each named, with its
reasons), 2 for a bad option."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cds.cli.common import REFUSED, USAGE, ConfigOpt, HomeOpt, fail

if TYPE_CHECKING:
    from cds.certify.checks import Check

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
    _mkdir(out)
    results = certify_model(package, out)
    try:
        m = mf.load_manifest(package)
        name, version = m.name, m.version
    except mf.ManifestError:
        name, version = package.name, "?"
    titles = {lang: text(lang, "certify.model_title", name=name, version=version) for lang in LANGS}
    report.write(out, {"kind": "model", "name": name, "version": version}, titles, results)
    _verdict("model", out, results)


def _verdict(kind: str, out: Path, results: list[Check]) -> None:
    """Print each check's status and the report's files; exit 1 naming each failure."""
    from cds.certify import report  # noqa: PLC0415

    for c in results:
        typer.echo(f"{c.status:<15} {c.id}")
    typer.echo(f"report: {out / 'report.html'}, {out / 'report.json'}")
    for c in results:
        if c.status == "warn":
            for line in c.evidence:
                typer.echo(f"cds certify {kind}: warning: {c.id}: {line}", err=True)
    bad = report.failed(results)
    if bad:
        for c in bad:
            for line in c.evidence:
                typer.echo(f"cds certify {kind}: {c.id}: {line}", err=True)
        raise fail(f"cds certify {kind}: {len(bad)} check(s) failed", REFUSED)


def _mkdir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"--out: cannot create the folder {out} ({exc.strerror})", USAGE) from None


def _node(
    node_url: str | None, config: Path | None, home: Path | None, token_file: Path | None
) -> tuple[str, Path | None, str | None]:
    """The node's API URL, its results folder (None: unknown) and the API token."""
    from cds.config import load_settings  # noqa: PLC0415
    from cds.errors import ConfigError  # noqa: PLC0415

    token = None
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise fail(f"--token-file: cannot read {token_file} ({exc.strerror})", USAGE) from None
    if node_url is not None and config is None and home is None:
        if not node_url.startswith(("http://", "https://")):
            raise fail(f"--node-url: {node_url} is not an http:// or https:// URL", USAGE)
        return node_url, None, token
    try:
        settings = load_settings(config, home)
    except ConfigError as exc:
        raise fail(str(exc), USAGE) from None
    if node_url is None:
        http = settings.http
        host = "127.0.0.1" if http.host in ("0.0.0.0", "::", "") else http.host
        scheme = "https" if http.tls_cert_file is not None else "http"
        node_url = f"{scheme}://{host}:{http.port}"
    return node_url, settings.results_path, token


@certify_app.command("pacs")
def certify_pacs_cmd(  # noqa: PLR0917 - a typer command's options
    ae: Annotated[str, typer.Option("--ae", help="the PACS's AE title")],
    host: Annotated[str, typer.Option("--host", help="the PACS's host name or address")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="its DICOM port")],
    out: Annotated[
        Path, typer.Option("--out", file_okay=False, help="folder of report.json and report.html")
    ],
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="our TLS client certificate (PEM)")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="its private key (PEM)")] = None,
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="CA bundle that signs the PACS's certificate")
    ] = None,
    http: Annotated[
        str | None,
        typer.Option("--http", help="the PACS's REST API (Orthanc: http://host:8042), optional"),
    ] = None,
    node_url: Annotated[
        str | None,
        typer.Option("--node-url", help="the cds API (default: from the node's --config/--home)"),
    ] = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="a cds API token (auth mode token)")
    ] = None,
    large: Annotated[
        int, typer.Option("--large", min=0, help="slices (512 x 512) of the large study; 0: skip")
    ] = 40,
    require_iocm: Annotated[
        bool, typer.Option("--require-iocm", help="fail when the PACS ignores IOCM rejection")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="seconds to wait for cds' results")
    ] = 300.0,
) -> None:
    """Certify a PACS with the running node: echo, round trip, IOCM, characters, TLS, size.

    Synthetic test studies (patient CDS^CERTIFY, no patient data) are stored in the
    PACS, which sends one to cds; the results cds makes must come back into the same
    study, be found by C-FIND and retrieved unchanged by C-GET. Run it while the node
    is running; --http lets an Orthanc PACS echo and send by its own REST API."""
    from pydantic import ValidationError  # noqa: PLC0415

    from cds.certify import report  # noqa: PLC0415
    from cds.certify.pacs import PacsOptions, certify_pacs  # noqa: PLC0415
    from cds.certify.pacs_http import HttpProblem, NodeApi  # noqa: PLC0415
    from cds.destinations import Destination, Tls  # noqa: PLC0415
    from cds.i18n import LANGS, text  # noqa: PLC0415

    for name, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key), ("--tls-ca", tls_ca)):
        if path is not None and not path.is_file():
            raise fail(f"{name}: no such file {path}", USAGE)
    if (tls_cert is None) != (tls_key is None):
        raise fail("--tls-cert and --tls-key must be given together", USAGE)
    if http is not None and not http.startswith(("http://", "https://")):
        raise fail(f"--http: {http} is not an http:// or https:// URL", USAGE)
    use_tls = tls_ca is not None or tls_cert is not None
    try:
        pacs = Destination(
            ae_title=ae,
            host=host,
            port=port,
            tls=Tls(enabled=use_tls, ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key),
        )
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors() else "ae"
        raise fail(f"--{field.replace('_title', '')}: {exc.errors()[0]['msg']}", USAGE) from None
    url, results_dir, token = _node(node_url, config, home, token_file)
    _mkdir(out)
    api = NodeApi(url, token)
    try:
        info = api.info()
    except HttpProblem as exc:
        api.close()
        raise fail(f"--node-url: the cds node does not answer: {exc}", REFUSED) from None
    opts = PacsOptions(
        pacs=pacs,
        node=api,
        info=info,
        http=http,
        results_dir=results_dir,
        large=large,
        require_iocm=require_iocm,
        timeout_s=timeout,
    )
    try:
        results = certify_pacs(opts)
    finally:
        api.close()
    values = {"ae": ae, "host": host, "port": port, "node": f"{info.ae_title} {info.version}"}
    titles = {lang: text(lang, "certify.pacs_title", **values) for lang in LANGS}
    subject = {"kind": "pacs", "ae_title": ae, "host": host, "port": str(port),
               "node_ae_title": info.ae_title, "node_version": info.version}  # fmt: skip
    report.write(out, subject, titles, results)
    _verdict("pacs", out, results)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(certify_app, name="certify")
