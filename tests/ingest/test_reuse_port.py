"""issue 19 item 5: several receivers on one DICOM port (``dicom.reuse_port``).

With it, two listeners of the same user bind one port (SO_REUSEPORT) and the kernel
gives each connection to one of them; one stops and the other goes on answering.
Without it, a second listener on a port in use stops the start with an error naming
``dicom.port``. The setting needs a PostgreSQL store and a platform with SO_REUSEPORT.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from cds.audit import AuditEvent, AuditRecord, NullAuditTrail
from cds.config import Settings, load_settings
from cds.errors import ConfigError
from cds.ingest.receiver import Receiver
from cds.ingest.scp import DicomListener
from cds.requestor import PauseSafeAE

from ..conftest import free_port, make_settings
from ..pki import Pki, make_pki

#: the listeners are never handed a C-STORE here (C-ECHO only), and never reach the store
PG = {"backend": "postgresql", "url": "postgresql://cds@127.0.0.1:1/unused"}


class Accepted(NullAuditTrail):
    """Counts the associations a listener accepted (from its audit records)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def record(self, event: AuditEvent, **kwargs: Any) -> AuditRecord:
        if event is AuditEvent.ASSOCIATION_ACCEPTED:
            with self._lock:
                self.count += 1
        return super().record(event, **kwargs)


def listener(settings: Settings) -> tuple[DicomListener, Accepted]:
    accepted = Accepted()
    # the listener keeps the receiver for its C-STORE handler only: C-ECHO never calls it
    return DicomListener(settings, cast(Receiver, None), accepted), accepted


@pytest.fixture
def started() -> Iterator[list[DicomListener]]:
    """Listeners a test starts, stopped after it."""
    listeners: list[DicomListener] = []
    yield listeners
    for one in listeners:
        one.stop()


def echo(port: int) -> int:
    """One association with one C-ECHO; its status (-1: no association)."""
    ae = PauseSafeAE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="CDS")
    if not assoc.is_established:
        return -1
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status) if status else -1


def test_two_listeners_share_one_port_and_one_answers_when_the_other_stops(
    tmp_path: Path, started: list[DicomListener]
) -> None:
    port = free_port()
    pair = [
        listener(make_settings(tmp_path / name, dicom={"port": port, "reuse_port": True}, store=PG))
        for name in ("a", "b")
    ]
    for one, _ in pair:
        started.append(one)
        one.start()
    assert [one.address[1] for one, _ in pair] == [port, port]

    assert [echo(port) for _ in range(40)] == [0x0000] * 40
    counts = [accepted.count for _, accepted in pair]
    # The kernel picks a listener by a hash of each connection's addresses and ports:
    # 40 connections all on one of two comes 1 time in 2**39, so both get some.
    assert sum(counts) == 40
    assert min(counts) > 0, counts

    pair[0][0].stop()  # a node restarted: the port goes on answering
    before = pair[1][1].count
    assert [echo(port) for _ in range(10)] == [0x0000] * 10
    assert pair[1][1].count == before + 10


def test_without_reuse_port_a_port_in_use_stops_the_start_naming_dicom_port(
    tmp_path: Path, started: list[DicomListener]
) -> None:
    port = free_port()
    first, _ = listener(make_settings(tmp_path / "a", dicom={"port": port}))
    started.append(first)
    first.start()

    second, _ = listener(make_settings(tmp_path / "b", dicom={"port": port}))
    started.append(second)
    with pytest.raises(ConfigError) as err:
        second.start()
    assert err.value.errors[0].startswith(f"dicom.port: cannot listen on 127.0.0.1:{port} (")
    assert "dicom.reuse_port: true" in err.value.errors[0]  # how to share one
    assert not second.listening

    # one node with reuse_port cannot join a port held without it either
    third, _ = listener(
        make_settings(tmp_path / "c", dicom={"port": port, "reuse_port": True}, store=PG)
    )
    started.append(third)
    with pytest.raises(ConfigError) as err:
        third.start()
    assert err.value.errors[0].startswith("dicom.port: cannot listen on")
    assert "did not set SO_REUSEPORT" in err.value.errors[0]
    assert first.listening
    assert echo(port) == 0x0000


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_the_tls_port_is_shared_too(tmp_path: Path, pki: Pki, started: list[DicomListener]) -> None:
    port, tls_port = free_port(), free_port()
    tls = {
        "enabled": True,
        "port": tls_port,
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "ca_file": str(pki.ca),
    }

    for name in ("a", "b"):  # without reuse_port, b's start fails on the TLS port
        dicom = {"port": port, "reuse_port": True, "tls": tls}
        one, _ = listener(make_settings(tmp_path / name, dicom=dicom, store=PG))
        started.append(one)
        one.start()
        assert one.tls_address == ("127.0.0.1", tls_port)
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5):
        pass  # the shared TLS port accepts


# --- the setting ----------------------------------------------------------------------
def test_reuse_port_requires_a_postgresql_store(tmp_path: Path) -> None:
    file = tmp_path / "cds.yaml"
    file.write_text(yaml.safe_dump({"dicom": {"reuse_port": True}}))
    with pytest.raises(ConfigError) as err:
        load_settings(file, tmp_path / "home")
    assert len(err.value.errors) == 1
    path, _, why = err.value.errors[0].partition(": ")
    assert path == "dicom.reuse_port"
    assert "store.backend postgresql" in why
    assert "SQLite" in why

    file.write_text(yaml.safe_dump({"dicom": {"reuse_port": True}, "store": PG}))
    assert load_settings(file, tmp_path / "home").dicom.reuse_port is True
    assert Settings().dicom.reuse_port is False  # off unless asked for


def test_reuse_port_is_refused_where_the_platform_has_no_so_reuseport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    file = tmp_path / "cds.yaml"
    file.write_text(yaml.safe_dump({"dicom": {"reuse_port": True}, "store": PG}))
    with pytest.raises(ConfigError) as err:
        load_settings(file, tmp_path / "home")
    assert [e.partition(": ")[0] for e in err.value.errors] == ["dicom.reuse_port"]
    assert "no SO_REUSEPORT" in err.value.errors[0]
    file.write_text(yaml.safe_dump({"store": PG}))  # without it, nothing is asked of it
    assert load_settings(file, tmp_path / "home").dicom.reuse_port is False
