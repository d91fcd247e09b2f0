"""Issue 7 (audit): records go to an audit repository as RFC 5424 messages over TLS
(RFC 5425 octet counting); while it is down they wait in the trail (the spool) and
go in order, exactly once, when it is back, across a restart of the sender."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cds.audit import AuditEvent, AuditTrail
from cds.audit.syslog import SyslogForwarder
from cds.config import SyslogSettings

from ..conftest import free_port
from ..pki import make_ca, write_pem

HEADER = re.compile(
    rb"^<85>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ cds-test - IHE\+RFC-3881 "
    rb'\[cds@32473 seq="(\d+)" hash="[0-9a-f]{64}"\] \xef\xbb\xbf'
)


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA here)."""
    return write_pem(folder, "repo", *make_ca("audit-repository", ip="127.0.0.1"))


class Repository:
    """A TLS syslog receiver (RFC 5425 framing) that can go down and come back."""

    def __init__(self, port: int, cert: Path, key: str | Path) -> None:
        self.port = port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.messages: list[bytes] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def up(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen()
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self._conns.clear()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                raw, _ = srv.accept()
            except OSError:
                return
            try:
                conn = self.ctx.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except (OSError, ssl.SSLError):
                return
            if not data:
                return
            buf += data
            while b" " in buf:
                length, _, rest = buf.partition(b" ")
                n = int(length)
                if len(rest) < n:
                    break
                with self._lock:
                    self.messages.append(rest[:n])
                buf = rest[n:]

    def seqs(self) -> list[int]:
        with self._lock:
            out = []
            for m in self.messages:
                match = HEADER.match(m)
                assert match, m[:200]
                out.append(int(match.group(1)))
            return out


def wait_until(check: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[Repository, SyslogSettings]]:
    cert, key = make_cert(tmp_path)
    r = Repository(free_port(), cert, key)
    cfg = SyslogSettings(host="127.0.0.1", port=r.port, ca_file=cert, app_name="cds-test")
    yield r, cfg
    r.down()


def forwarder(path: Path, cfg: SyslogSettings) -> SyslogForwarder:
    return SyslogForwarder(
        path, cfg, ae_title="CDS", poll_s=0.2, retry_initial_s=0.05, retry_max_s=0.2
    )


def test_down_spooled_up_in_order_exactly_once_across_a_restart(
    tmp_path: Path, repo: tuple[Repository, SyslogSettings]
) -> None:
    server, cfg = repo
    path = tmp_path / "audit"

    # the repository is down: records wait in the trail
    trail = AuditTrail(path)
    fwd = forwarder(path, cfg)
    trail.add_listener(fwd.kick)
    fwd.start()
    for i in range(5):
        trail.record(AuditEvent.INSTANCES_RECEIVED, who="AE:PACS", study_key=f"s{i}")
    wait_until(lambda: fwd.last_error is not None, what="the sender to notice")
    assert fwd.backlog() == 5
    # the node stops (and restarts) while it is still down
    fwd.stop()
    trail.close()
    trail = AuditTrail(path)
    for i in range(5, 8):
        trail.record(AuditEvent.INSTANCES_SENT, who="system", study_key=f"s{i}")
    fwd = forwarder(path, cfg)
    trail.add_listener(fwd.kick)
    fwd.start()
    time.sleep(0.3)
    assert server.messages == []

    # back: everything, in order, once
    server.up()
    wait_until(lambda: len(server.messages) >= 8, what="the backlog")
    assert server.seqs() == list(range(1, 9))
    assert fwd.backlog() == 0

    # down again while connected, then back: the rest follows, nothing twice
    server.down()
    time.sleep(0.1)
    for i in range(8, 12):
        trail.record(AuditEvent.RESULTS_PRODUCED, who="system", study_key=f"s{i}")
    time.sleep(0.3)
    server.up()
    wait_until(lambda: len(server.messages) >= 12, what="the second backlog")
    time.sleep(0.3)
    fwd.stop()
    trail.close()
    assert server.seqs() == list(range(1, 13))

    # each message carries the record as a DICOM audit message
    body = server.messages[0].split(b"\xef\xbb\xbf", 1)[1]
    root = ET.fromstring(body)  # noqa: S314 - our own output
    assert root.tag == "AuditMessage"
    obj = root.find("ParticipantObjectIdentification")
    assert obj is not None
    assert obj.get("ParticipantObjectID") == "s0"


def test_a_repository_with_an_untrusted_certificate_gets_nothing(
    tmp_path: Path, repo: tuple[Repository, SyslogSettings]
) -> None:
    server, cfg = repo
    other, _ = make_cert(tmp_path / "..")  # another CA than the one configured
    bad = cfg.model_copy(update={"ca_file": other})
    server.up()
    path = tmp_path / "audit"
    trail = AuditTrail(path)
    trail.record(AuditEvent.APPLICATION_START, who="system")
    fwd = forwarder(path, bad)
    with pytest.raises(ssl.SSLError):
        fwd.flush()
    assert fwd.backlog() == 1
    time.sleep(0.2)
    assert server.messages == []
