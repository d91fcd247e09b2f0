"""This machine: the configured ports (bindable, or held by the running node, whose
``/health`` then answers), the home folder, the spool disk against its watermark, the
TLS files (readable, certificates in date, each key its certificate's), the clock."""

from __future__ import annotations

import datetime
import errno
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds.cli.doctor.report import Report, Status, existing, user

if TYPE_CHECKING:
    from cds.routing.rules import RoutingFile

#: a certificate expiring within this many days is a warning
CERT_WARN_DAYS = 30


def ports(r: Report) -> None:
    """Each port the node listens on can be bound here, or is held by the running node
    (then its ``/health`` is a row of its own)."""
    s = r.settings
    ports = [("dicom", "dicom.port", s.dicom.host, s.dicom.port)]
    if s.dicom.tls.enabled:
        ports.append(("dicom_tls", "dicom.tls.port", s.dicom.host, s.dicom.tls.port))
    ports.append(("http", "http.port", s.http.host, s.http.port))
    shared = s.dicom.reuse_port  # the DICOM ports, shared with the store's other nodes
    errors = [_bind(host, port, shared and key != "http") for key, _, host, port in ports]
    busy = any(e is not None and e.errno == errno.EADDRINUSE for e in errors)
    health = _health(r) if busy else None
    for (key, field, host, port), err in zip(ports, errors, strict=True):
        where, name = f"{host}:{port}", r.t("port", field=field)
        if err is None:
            r.add(f"port:{key}", name, "ok", r.t("port_free", where=where))
        elif err.errno == errno.EADDRINUSE and health and _held_by_node(key, port, health[1]):
            r.add(f"port:{key}", name, "ok", r.t("port_node", where=where))
        elif err.errno == errno.EADDRINUSE:
            why, fix = r.t("port_taken", where=where), r.t("fix_port_taken", port=port, field=field)
            r.add(f"port:{key}", name, "fail", why, fix)
        elif err.errno == errno.EACCES:
            why, fix = r.t("port_denied", where=where), r.t("fix_port_denied", field=field)
            r.add(f"port:{key}", name, "fail", why, fix)
        else:
            why, fix = f"{where}: {err.strerror or err}", r.t("fix_port_host", field=field)
            r.add(f"port:{key}", name, "fail", why, fix)
    if health:
        code, body = health
        status = str(body.get("status"))
        problems = "; ".join(
            f"{p.get('model')}: {p.get('reason')}" for p in body.get("problems", [])
        )
        verdict: Status = "ok" if status == "ok" else "warn" if code < 500 else "fail"
        detail = r.t("node_health", status=status, code=code)
        r.add(
            "node",
            r.t("node"),
            verdict,
            detail + (f": {problems}" if problems else ""),
            r.t("fix_node"),
        )


def _health(r: Report) -> tuple[int, dict[str, Any]] | None:
    """The running node's ``/health`` (on this node's own HTTP port), if it answers."""
    import httpx  # noqa: PLC0415

    http = r.settings.http
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(http.host, http.host)
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if http.tls_cert_file is not None else "http"
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # our own node, loopback
    try:
        answer = httpx.get(f"{scheme}://{host}:{http.port}/health", timeout=r.timeout_s, verify=ctx)
        body = answer.json()
    except (httpx.HTTPError, ValueError):
        return None
    return (answer.status_code, body) if isinstance(body, dict) and "status" in body else None


def _bind(host: str, port: int, reuse_port: bool = False) -> OSError | None:
    """None when ``host:port`` can be bound (as the node's listeners bind it: with
    ``dicom.reuse_port``, alongside the other nodes sharing it), else why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as exc:
            return exc
    return None


def _held_by_node(key: str, port: int, body: dict[str, Any]) -> bool:
    """Whether the running node's ``/health`` says it holds ``port`` (its DICOM ports;
    the HTTP port is the one that answered)."""
    dicom = body.get("dicom") or {}
    if key == "http":
        return True
    return bool(dicom.get("listening")) and port in (dicom.get("port"), dicom.get("tls_port"))


def storage(r: Report) -> None:
    s = r.settings
    home = s.home
    nearest = existing(home)
    if nearest is None or not os.access(nearest, os.W_OK | os.X_OK):
        r.add(
            "home",
            r.t("home"),
            "fail",
            r.t("home_not_writable", path=home),
            r.t("fix_home", path=home, user=user()),
        )
    else:
        r.add("home", r.t("home"), "ok", str(home))
    spool = existing(s.spool_path)
    if spool is None:
        r.add(
            "spool",
            r.t("spool"),
            "fail",
            str(s.spool_path),
            r.t("fix_home", path=s.spool_path, user=user()),
        )
        return
    free_mb = shutil.disk_usage(spool).free // 2**20
    detail = r.t("spool_free", free=free_mb, path=s.spool_path, watermark=s.spool.min_free_mb)
    status: Status = (
        "fail"
        if free_mb < s.spool.min_free_mb
        else "warn"
        if free_mb < 2 * s.spool.min_free_mb
        else "ok"
    )
    r.add("spool", r.t("spool"), status, detail, r.t("fix_spool"))


def tls(r: Report, routing: RoutingFile | None) -> None:
    """Every TLS file the configuration and the routing file name: (field, path, kind,
    the certificate a key must pair with)."""
    s = r.settings
    files: list[tuple[str, Path | None, str, Path | None]] = []
    if s.dicom.tls.enabled:
        t = s.dicom.tls
        files += [
            ("dicom.tls.cert_file", t.cert_file, "cert", None),
            ("dicom.tls.key_file", t.key_file, "key", t.cert_file),
            ("dicom.tls.ca_file", t.ca_file, "cert", None),
        ]
    h = s.http
    files += [
        ("http.tls_cert_file", h.tls_cert_file, "cert", None),
        ("http.tls_key_file", h.tls_key_file, "key", h.tls_cert_file),
    ]
    if (y := s.audit.syslog) is not None:
        files += [
            ("audit.syslog.ca_file", y.ca_file, "cert", None),
            ("audit.syslog.cert_file", y.cert_file, "cert", None),
            ("audit.syslog.key_file", y.key_file, "key", y.cert_file),
        ]
    for name, dest in routing.destinations.items() if routing is not None else ():
        d, at = dest.tls, f"destinations.{name}.tls"
        files += [
            (f"{at}.ca_file", d.ca_file, "cert", None),
            (f"{at}.cert_file", d.cert_file, "cert", None),
            (f"{at}.key_file", d.key_file, "key", d.cert_file),
        ]
    named = [(f, p, k, c) for f, p, k, c in files if p is not None]
    if not named:
        r.add("tls", "TLS", "skip", r.t("no_tls"))
    for field, path, kind, cert in named:
        assert path is not None
        status, detail, fix = _tls_file(r, field, path, kind, cert)
        r.add(f"tls:{field}", f"TLS {field}", status, detail, fix)


def _tls_file(  # noqa: PLR0911 - one return per verdict on the file
    r: Report, field: str, path: Path, kind: str, cert: Path | None
) -> tuple[Status, str, str]:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import load_pem_private_key  # noqa: PLC0415

    try:
        data = path.read_bytes()
    except OSError as exc:
        return (
            "fail",
            r.t("tls_unreadable", path=path, why=exc.strerror),
            r.t("fix_tls_read", path=path, user=user()),
        )
    if kind == "key":
        try:
            load_pem_private_key(data, None)
        except (ValueError, TypeError):
            return "fail", r.t("tls_bad_key", path=path), r.t("fix_tls_key", field=field)
        if cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            try:
                ctx.load_cert_chain(str(cert), str(path))
            except (ssl.SSLError, OSError):
                return (
                    "fail",
                    r.t("tls_mismatch", path=path, cert=cert),
                    r.t("fix_tls_key", field=field),
                )
        return "ok", str(path), ""
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        return "fail", r.t("tls_bad_cert", path=path), r.t("fix_tls_cert", field=field)
    now = datetime.datetime.now(datetime.UTC)
    ends = min(c.not_valid_after_utc for c in chain)
    day = ends.strftime("%Y-%m-%d")
    if ends < now:
        return (
            "fail",
            r.t("tls_expired", path=path, day=day),
            r.t("fix_tls_cert", field=field),
        )
    if any(c.not_valid_before_utc > now for c in chain):
        return "fail", r.t("tls_not_yet", path=path), r.t("fix_tls_cert", field=field)
    if ends - now < datetime.timedelta(days=CERT_WARN_DAYS):
        return (
            "warn",
            r.t("tls_expires", path=path, day=day),
            r.t("fix_tls_cert", field=field),
        )
    return "ok", r.t("tls_valid", path=path, day=day), ""


def clock(r: Report) -> None:
    name, now = (
        r.t("clock"),
        datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    tool = shutil.which("timedatectl")
    if tool is None:
        r.add("clock", name, "skip", r.t("clock_unchecked", now=now, why="timedatectl"))
        return
    try:
        done = subprocess.run(
            [tool, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=r.timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        r.add("clock", name, "skip", r.t("clock_unchecked", now=now, why=type(exc).__name__))
        return
    value = done.stdout.strip()
    if done.returncode != 0 or value not in ("yes", "no"):
        why = (done.stderr.strip().splitlines() or ["timedatectl"])[0]
        r.add("clock", name, "skip", r.t("clock_unchecked", now=now, why=why))
    elif value == "yes":
        r.add("clock", name, "ok", r.t("clock_synced", now=now))
    else:
        r.add("clock", name, "fail", r.t("clock_not_synced", now=now), r.t("fix_clock"))
