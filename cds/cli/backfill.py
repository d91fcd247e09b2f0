"""``cds backfill``: fetch a date range of an archive's studies through the node.

    cds backfill ARCHIVE --since 2024-01-01 --until 2024-01-31 [--modality CT]
        [--rate 30/min] [--max-associations 2] [--deliver]
    cds backfill status [--json]

ARCHIVE names an entry of the routing file's ``archives``. The node must be running
(with the same ``--config``/``--home``): the archive sends each study to the node's
C-STORE receiver (C-MOVE to ``dicom.ae_title``), or, with ``retrieve: get`` (C-GET) or
from a DICOMweb archive (``dicomweb_url``: QIDO-RS, then WADO-RS), this command stores
what it gets through the node's receiver code into the same spool and store. The node
then routes and runs each study after live ones, and delivers nothing unless
``--deliver``. Killed, the same command goes on where it stopped.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cds.cli.common import PARTIAL, REFUSED, USAGE, ConfigOpt, HomeOpt, fail, open_state_store
from cds.config import Settings, load_settings
from cds.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from cds.destinations import SomeArchive
    from cds.ingest.archive import Retrieved
    from cds.store.backfill import BackfillStatus

STATUS = "status"


def _settings(config: Path | None, home: Path | None) -> Settings:
    try:
        return load_settings(config, home)
    except ConfigError as exc:
        raise fail(str(exc), USAGE) from None


def _date(text: str | None, option: str) -> date:
    if text is None:
        raise fail(f"{option} YYYY-MM-DD is required", USAGE)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise fail(f"{option}: {text!r} is not a date YYYY-MM-DD", USAGE) from None


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def status_line(s: BackfillStatus) -> str:
    c = s.counts
    return (
        f"{s.name}: {s.state}, {c.get('retrieved', 0)}/{s.total - c.get('skipped', 0)} "
        f"retrieved, {c.get('failed', 0)} failed, {c.get('skipped', 0)} skipped, "
        f"{s.processed} processed by the node; ETA {_clock(s.eta_s)} at "
        f"{s.rate_per_min:g}/min{' (results delivered)' if s.deliver else ''}"
    )


def _progress(s: BackfillStatus) -> None:
    if sys.stderr.isatty():  # a progress line on a terminal, rewritten in place
        done = s.total - s.remaining
        width = 30
        filled = width * done // s.total if s.total else width
        bar = "#" * filled + "-" * (width - filled)
        typer.echo(f"\r[{bar}] {done}/{s.total}  ETA {_clock(s.eta_s)} ", err=True, nl=False)


def register(app: typer.Typer) -> None:
    app.command("backfill")(backfill)


def backfill(
    archive: Annotated[
        str, typer.Argument(help="an archive of the routing file, or 'status' to show the runs")
    ],
    *,
    since: Annotated[str | None, typer.Option("--since", help="first study date")] = None,
    until: Annotated[str | None, typer.Option("--until", help="last study date")] = None,
    modality: Annotated[
        str | None, typer.Option("--modality", help="only studies holding this modality")
    ] = None,
    description: Annotated[
        str | None, typer.Option("--description", help="Study Description (wildcards * ?)")
    ] = None,
    rate: Annotated[str, typer.Option("--rate", help="studies per minute: N/min")] = "30/min",
    max_associations: Annotated[
        int, typer.Option("--max-associations", help="retrievals at once")
    ] = 1,
    deliver: Annotated[
        bool, typer.Option("--deliver", help="send the results to the destinations too")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="status: machine-readable")] = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Fetch an archive's studies of a date range, at a rate, for the node to run.

    Live studies go first; results go to the observatory, and to the destinations only
    with --deliver. 'cds backfill status' shows every run."""
    from cds.store.backfill import BackfillLedger  # noqa: PLC0415 (``cds --help`` stays fast)

    settings = _settings(config, home)
    if archive == STATUS:
        store = open_state_store(settings)
        try:
            runs = BackfillLedger(store).status()
        finally:
            store.close()
        if as_json:
            typer.echo(json.dumps([s.as_dict() for s in runs], indent=1))
        else:
            for s in runs:
                typer.echo(status_line(s))
            if not runs:
                typer.echo("no backfill has run")
        return
    raise typer.Exit(_run(settings, archive, since, until, modality, description, rate,
                          max_associations, deliver))  # fmt: skip


def _run(  # noqa: PLR0917 (the command's options, checked here)
    settings: Settings,
    name: str,
    since: str | None,
    until: str | None,
    modality: str | None,
    description: str | None,
    rate: str,
    max_associations: int,
    deliver: bool,
) -> int:
    # heavy imports only when a backfill runs
    from cds.audit import AuditTrail, cli_actor  # noqa: PLC0415
    from cds.errors import CdsError  # noqa: PLC0415
    from cds.ingest.archive import ArchiveError, StudyQuery  # noqa: PLC0415
    from cds.ingest.backfill import Backfill, Ports, parse_rate  # noqa: PLC0415
    from cds.keyfile import load_or_create_key  # noqa: PLC0415
    from cds.logging import study_key  # noqa: PLC0415
    from cds.store.backfill import BackfillLedger, BackfillSpec  # noqa: PLC0415

    start, end = _date(since, "--since"), _date(until, "--until")
    try:
        query = StudyQuery(start, end, modality, description)
        per_min = parse_rate(rate)
    except ValueError as exc:
        raise fail(str(exc), USAGE) from None
    if max_associations < 1:
        raise fail("--max-associations: at least 1", USAGE)
    target = _archive(settings, name)
    secret = load_or_create_key(settings.home / "node.key", create=False)
    if secret is None:
        raise fail(f"no node key in {settings.home}: has the node run with this --home?", REFUSED)
    store = open_state_store(settings)
    audit = AuditTrail(settings.audit_path)
    try:
        client, retrieve, ops = _client(settings, name, target, (store, secret, audit))
        spec = BackfillSpec(
            archive=name, since=start.isoformat(), until=end.isoformat(),
            modality=modality or "", description=description or "", rate_per_min=per_min,
            max_associations=max_associations, deliver=deliver,
        )  # fmt: skip
        ports = Ports(
            ledger=BackfillLedger(store), archive=client, audit=audit,
            study_key=lambda uid: study_key(secret, uid), retrieve=retrieve,
            who=cli_actor(), where=_where(target), query_op=ops[0], retrieve_op=ops[1],
        )  # fmt: skip
        final = Backfill(spec, query, ports, progress=_progress).run()
    except ArchiveError as exc:
        raise fail(f"backfill {name}: {exc}", REFUSED) from None
    except CdsError as exc:  # the store went away: the run resumes from where it stopped
        raise fail(f"backfill {name} stopped: {exc}", REFUSED) from None
    finally:
        store.close()
        audit.close()
    if sys.stderr.isatty():
        typer.echo("", err=True)
    typer.echo(status_line(final))
    return PARTIAL if final.counts.get("failed", 0) else 0


def _client(
    settings: Settings, name: str, target: SomeArchive, node: tuple[Any, bytes, Any]
) -> tuple[Any, Callable[[str], Retrieved], tuple[str, str]]:
    """(the archive's client, how one study is fetched, (query, retrieve) protocol)."""
    from cds.destinations import DicomWebArchive  # noqa: PLC0415
    from cds.ingest.archive import ArchiveClient  # noqa: PLC0415
    from cds.ingest.archive_web import WADO_AE, WebArchiveClient  # noqa: PLC0415

    timeout_s = settings.delivery.timeout_s
    if isinstance(target, DicomWebArchive):
        web = WebArchiveClient(name, target, timeout_s)
        web_sink = _part_sink(_receiver_sink(settings, *node, WADO_AE))
        return web, lambda uid: web.get_study(uid, web_sink), ("QIDO-RS", "WADO-RS")
    dimse = ArchiveClient(target, settings.dicom.ae_title, timeout_s, name)
    if target.retrieve == "get":
        get_sink = _receiver_sink(settings, *node, target.ae_title)
        return dimse, lambda uid: dimse.get_study(uid, get_sink), ("C-FIND", "C-GET")
    own = settings.dicom.ae_title
    return dimse, lambda uid: dimse.move_study(uid, own), ("C-FIND", "C-MOVE")


def _where(target: SomeArchive) -> str:
    """The archive's host:port, for the audit trail."""
    from cds.destinations import DicomWebArchive  # noqa: PLC0415
    from cds.ingest.archive_web import address  # noqa: PLC0415

    if isinstance(target, DicomWebArchive):
        return address(target.dicomweb_url)
    return f"{target.host}:{target.port}"


def _archive(settings: Settings, name: str) -> SomeArchive:
    """The routing file's archive ``name``; USAGE naming the field otherwise."""
    from cds.routing.rules import RoutingFileError, load_routing  # noqa: PLC0415

    if settings.routing.file is None:
        raise fail("no routing file (routing.file): archives are defined there", USAGE)
    try:
        rf = load_routing(settings.routing.file)
    except RoutingFileError as exc:
        raise fail("\n".join(exc.errors), USAGE) from None
    target = rf.archives.get(name)
    if target is None:
        known = ", ".join(sorted(rf.archives)) or "none"
        raise fail(f"{settings.routing.file}: archives.{name}: no such archive ({known})", USAGE)
    return target


def _receiver_sink(
    settings: Settings, store: Any, secret: bytes, audit: Any, calling_ae: str
) -> Callable[[str, str, str, bytes], int]:
    """C-GET and WADO-RS: each instance through the node's receiver code (the checks,
    spool and store of a C-STORE or a STOW-RS part), recorded as from ``calling_ae``."""
    from cds.errors import IngestError, StoreError  # noqa: PLC0415
    from cds.ingest.instance import STATUS_PROCESSING_FAILURE  # noqa: PLC0415
    from cds.ingest.receiver import Receiver, store_unavailable  # noqa: PLC0415
    from cds.ingest.spool import Spool  # noqa: PLC0415
    from cds.logging import get_logger  # noqa: PLC0415

    # the node's spool, not opened: opening it drops the running node's partial writes
    spool = Spool(settings.spool_path, settings.spool.min_free_mb * 2**20)
    receiver = Receiver(settings, spool, store, secret, audit=audit)

    def sink(sop_class_uid: str, sop_uid: str, ts: str, dataset: bytes) -> int:
        """The status a C-STORE of this instance would be answered with (as STOW-RS)."""
        try:
            receiver.receive(
                sop_class_uid=sop_class_uid, sop_uid=sop_uid, transfer_syntax_uid=ts,
                dataset=dataset, calling_ae=calling_ae,
            )  # fmt: skip
        except IngestError as exc:
            return exc.status
        except StoreError as exc:
            return store_unavailable(exc).status
        except Exception as exc:  # a bug fails this instance, not the run
            get_logger("cds.backfill").error(
                "ingest.handler_failed", error_type=type(exc).__name__, calling_ae=calling_ae
            )
            return STATUS_PROCESSING_FAILURE
        return 0x0000

    return sink


def _part_sink(sink: Callable[[str, str, str, bytes], int]) -> Callable[[bytes], int]:
    """WADO-RS: each PS3.10 part split as a STOW-RS part is (``read_part10``: the UIDs
    of its File Meta, the data set after it), then to ``sink``."""
    from cds.api.dicomweb import Part, read_part10  # noqa: PLC0415
    from cds.delivery.dicomweb import DICOM  # noqa: PLC0415
    from cds.errors import IngestError  # noqa: PLC0415

    def part_sink(raw: bytes) -> int:
        try:
            p10 = read_part10(Part(DICOM, raw))
        except IngestError as exc:
            return exc.status
        return sink(p10.sop_class_uid, p10.sop_uid, p10.transfer_syntax_uid, p10.dataset)

    return part_sink
