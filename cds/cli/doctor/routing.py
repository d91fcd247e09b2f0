"""The routing file and where results go: each destination answers a C-ECHO (a PACS)
or an HTTP OPTIONS (a DICOMweb server). Nothing is sent anywhere else."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from cds.cli.doctor.report import Report, Status

if TYPE_CHECKING:
    from cds.destinations import SomeDestination
    from cds.routing.rules import RoutingFile


def routing(r: Report) -> RoutingFile | None:
    from cds.routing.rules import RoutingFileError, load_routing  # noqa: PLC0415

    file = r.settings.routing.file
    if file is None:
        r.add("routing", r.t("routing"), "skip", r.t("no_routing"))
        return None
    try:
        rf = load_routing(file)
    except RoutingFileError as exc:
        more = f" (+{len(exc.errors) - 2})" if len(exc.errors) > 2 else ""
        r.add(
            "routing",
            r.t("routing"),
            "fail",
            "; ".join(exc.errors[:2]) + more,
            r.t("fix_routing", file=file),
        )
        return None
    r.add(
        "routing",
        r.t("routing"),
        "ok",
        r.t("routing_ok", file=file, rules=len(rf.rules), destinations=len(rf.destinations)),
    )
    return rf


def destinations(r: Report, routing: RoutingFile | None) -> None:
    if routing is None:
        return
    for name, dest in routing.destinations.items():
        label = r.t("destination", name=name)
        status, detail, fix = _echo(r, dest) if dest.kind == "dimse" else _options(r, dest)
        r.add(f"destination:{name}", label, status, f"{dest.describe()}: {detail}", fix)


def _echo(r: Report, dest: SomeDestination) -> tuple[Status, str, str]:
    from pynetdicom import AE  # noqa: PLC0415
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # noqa: PLC0415

    from cds.delivery.scu import _tls_args  # noqa: PLC0415

    assert dest.kind == "dimse"
    calling = r.settings.delivery.calling_ae_title or r.settings.dicom.ae_title
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = r.timeout_s
    ae.connection_timeout = r.timeout_s
    try:
        kwargs = {"tls_args": tls} if (tls := _tls_args(dest)) is not None else {}
    except (OSError, ssl.SSLError) as exc:
        return "fail", r.t("dest_tls", why=type(exc).__name__), r.t("fix_dest_tls")
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, **kwargs)  # type: ignore[arg-type]
    if assoc.is_rejected:
        return (
            "fail",
            r.t("echo_rejected"),
            r.t("fix_echo_rejected", calling=calling, called=dest.ae_title),
        )
    if not assoc.is_established:
        return "fail", r.t("echo_no_answer"), r.t("fix_echo_no_answer")
    try:
        answer = assoc.send_c_echo()
    finally:
        assoc.release()
    code = int(answer.Status) if answer is not None and "Status" in answer else None
    if code == 0:
        return "ok", r.t("echo_ok"), ""
    return (
        "fail",
        r.t("echo_status", status="-" if code is None else f"0x{code:04X}"),
        r.t("fix_echo_no_answer"),
    )


def _options(r: Report, dest: SomeDestination) -> tuple[Status, str, str]:
    import httpx  # noqa: PLC0415

    assert dest.kind == "dicomweb"
    try:
        auth = dest.auth.header() if dest.auth is not None else None
    except OSError as exc:
        return "fail", r.t("web_auth_file", why=exc.strerror), r.t("fix_web_auth")
    headers = {"Authorization": auth} if auth else {}
    try:
        answer = httpx.options(
            f"{dest.url}/studies", headers=headers, timeout=r.timeout_s, verify=dest.tls.context()
        )
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        return (
            "fail",
            r.t("web_no_answer", why=type(exc).__name__),
            r.t("fix_web_no_answer"),
        )
    code = answer.status_code
    if code in (401, 403):
        return "fail", r.t("web_refused", code=code), r.t("fix_web_auth")
    if code >= 500:
        return "fail", r.t("web_status", code=code), r.t("fix_web_no_answer")
    return "ok", r.t("web_status", code=code), ""
