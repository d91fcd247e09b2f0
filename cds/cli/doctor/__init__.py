"""cds doctor: check an install and say how to fix what fails (issue 23, item 4).

One row per check: the Python and onnxruntime versions, the execution providers that
really work (CUDA usable or not, and why), every model package with its test vector and
golden cases (``cds model validate``'s code path), the configured ports (bindable, or
held by the running node, whose ``/health`` then answers), the home folder and the spool
disk against its watermark, every TLS file (readable, a certificate in date, the key its
pair), the routing file, each destination (C-ECHO for a PACS, HTTP OPTIONS for a DICOMweb
server) and the clock (NTP, where ``timedatectl`` can tell). A failed row says its fix;
any failure exits 1. ``--json`` for machines; ``--lang fr`` in French (``cds.i18n``).
Nothing is sent anywhere but the destinations the routing file names and this node.

``runtime`` checks Python, onnxruntime, providers and models; ``host`` this machine
(ports, disk, TLS files, clock); ``routing`` the routing file and its destinations.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from cds.cli.common import REFUSED, USAGE, ConfigOpt, HomeOpt, fail
from cds.cli.doctor import host, routing, runtime
from cds.cli.doctor.report import Check, Report
from cds.errors import ConfigError
from cds.i18n import check_lang, text

if TYPE_CHECKING:
    from cds.config import Settings
    from cds.i18n import Lang

_NAME_WIDTH = 28


def run_checks(settings: Settings, lang: Lang, timeout_s: float) -> list[Check]:
    """Every check of this install, in order."""
    r = Report(settings, lang, timeout_s)
    runtime.python(r)
    runtime.onnxruntime(r)
    if r.checks[-1].status == "ok":
        runtime.providers(r)
        runtime.models(r)
    host.ports(r)
    host.storage(r)
    rf = routing.routing(r)
    host.tls(r, rf)
    routing.destinations(r, rf)
    host.clock(r)
    return r.checks


def table(checks: list[Check], lang: Lang) -> list[str]:
    """The checks as people read them: check, result, detail and (below) the fix."""
    width = max([_NAME_WIDTH, *(len(c.name) + 1 for c in checks)])
    head = (
        text(lang, "doctor.head_check"),
        text(lang, "doctor.head_result"),
        text(lang, "doctor.head_detail"),
    )
    lines = [f"{head[0]:<{width}} {head[1]:<12} {head[2]}"]
    for c in checks:
        lines.append(f"{c.name:<{width}} {text(lang, f'doctor.{c.status}'):<12} {c.detail}")
        if c.fix:
            lines.append(f"{'':<{width}} {'':<12} {text(lang, 'doctor.fix', fix=c.fix)}")
    failed = sum(c.status == "fail" for c in checks)
    key = "doctor.summary_fail" if failed else "doctor.summary_ok"
    lines.append(text(lang, key, failed=failed, total=len(checks)))
    return lines


def doctor(
    config: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    lang: Annotated[
        str | None, typer.Option("--lang", help="en or fr (default: results.language)")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="seconds per network check")
    ] = 5.0,
) -> None:
    """Check this install and print the fix of each failure (exit 1 on any).

    Runtime, providers, models, ports, disk, TLS files, routing file, destinations, clock."""
    from cds.config import load_settings  # noqa: PLC0415
    from cds.logging import configure_logging  # noqa: PLC0415

    try:
        chosen = check_lang(lang) if lang is not None else None
    except ValueError as exc:
        raise fail(f"--lang: {exc}", USAGE) from None
    try:
        settings = load_settings(config, home)
    except ConfigError as exc:
        shown = chosen or "en"
        raise fail(
            "\n".join([text(shown, "doctor.config_invalid", file=config), *exc.errors]), USAGE
        ) from None
    chosen = chosen or check_lang(settings.results.language)
    configure_logging(settings.log.format, "error")  # stderr: stdout is the table or JSON
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # a refused echo is a row
    checks = run_checks(settings, chosen, timeout)
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        out = {"ok": not failed, "lang": chosen, "checks": [asdict(c) for c in checks]}
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        for line in table(checks, chosen):
            typer.echo(line)
    if failed:
        raise typer.Exit(REFUSED)


def register(app: typer.Typer) -> None:
    """Add ``cds doctor`` to the main app."""
    app.command("doctor")(doctor)
