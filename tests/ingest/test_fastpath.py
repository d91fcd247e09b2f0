"""The receive fast path (cds/ingest/fastpath.py) behaves as pynetdicom does.

Real sockets on 127.0.0.1 free ports; senders are pynetdicom SCUs and DCMTK's
/usr/bin/storescu and /usr/bin/echoscu. These tests prove behaviour, never
timing: bytes arrive exactly, statuses and Error Comments go back, release,
abort, timeouts and malformed PDUs end associations as they should, and
concurrent associations do not mix.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from cds.domain import StoreOutcome
from cds.errors import IngestError, StoreError
from cds.ingest import fastpath
from cds.ingest import spool as spool_module
from cds.ingest.fastpath import dul as fastpath_dul
from cds.ingest.receiver import Receiver
from cds.ingest.spool import STATUS_OUT_OF_RESOURCES, Spool
from cds.orchestrator import Node
from cds.requestor import PauseSafeAE
from cds.store import open_store

from ..conftest import make_settings

CT = "1.2.840.10008.5.1.4.1.1.2"
STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"
needs_dcmtk = pytest.mark.skipif(
    not (os.access(STORESCU, os.X_OK) and os.access(ECHOSCU, os.X_OK)),
    reason="DCMTK (apt-get install dcmtk) not installed",
)


def ct(pixels: int = 16, **attrs: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 4  # the pixel data length does not matter to transport
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = os.urandom(2 * pixels)
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def encoded(ds: Dataset, implicit: bool = False) -> bytes:
    """The data set as pynetdicom's SCU puts it on the wire."""
    data = encode(ds, implicit, True)
    assert data is not None
    return data


@dataclass
class Scp:
    """A storage SCP on a free port, its associations taking the fast path."""

    server: ThreadedAssociationServer
    received: list[tuple[str, bytes]] = field(default_factory=list)
    classes: list[type] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    status: Callable[[Any], Any] = lambda event: 0x0000

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def wait_idle(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.server.active_associations and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.server.active_associations, "association threads still running"


def start_scp(
    max_pdu: int = 16382,
    network_timeout: float = 30,
    acse_timeout: float = 30,
    extra_handlers: list[Any] | None = None,
) -> Scp:
    ae = PauseSafeAE(ae_title="FASTSCP")
    ae.maximum_pdu_size = max_pdu
    ae.network_timeout = network_timeout
    ae.acse_timeout = acse_timeout
    ae.dimse_timeout = 30
    ae.add_supported_context(Verification)
    scp: Scp

    def on_store(event: Any) -> Any:
        scp.classes.append(type(event.assoc))
        scp.received.append(
            (str(event.request.AffectedSOPInstanceUID), event.request.DataSet.getvalue())
        )
        return scp.status(event)

    handlers: list[Any] = [
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_RELEASED, lambda e: scp.events.append("released")),
        (evt.EVT_ABORTED, lambda e: scp.events.append("aborted")),
        *(extra_handlers or []),
    ]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    assert isinstance(server, ThreadedAssociationServer)
    fastpath.install(server)
    scp = Scp(server)
    return scp


@pytest.fixture(autouse=True)
def _unrestricted(monkeypatch: pytest.MonkeyPatch) -> None:
    # as cds.ingest.scp configures it: any storage SOP Class is accepted
    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", True)


@pytest.fixture
def scp() -> Iterator[Scp]:
    s = start_scp()
    yield s
    s.server.shutdown()


def requestor(calling: str = "TESTSCU") -> PauseSafeAE:
    ae = PauseSafeAE(ae_title=calling)
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    ae.add_requested_context(CT, ImplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    return ae


def associate(scp: Scp) -> Association:
    assoc = requestor().associate("127.0.0.1", scp.port, ae_title="FASTSCP")
    assert assoc.is_established
    return assoc


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def write_series(folder: Path, count: int, pixels: int = 4096) -> dict[str, bytes]:
    """Part 10 files for storescu; returns SOP Instance UID -> data set bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(count):
        ds = ct(pixels=pixels, InstanceNumber=i + 1)
        ds.file_meta.MediaStorageSOPClassUID = CT
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"IM{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        raw = path.read_bytes()
        (group_length,) = struct.unpack("<I", raw[140:144])
        out[str(ds.SOPInstanceUID)] = raw[144 + group_length :]
    return out


# --- wiring ----------------------------------------------------------------------
def test_accepted_associations_use_the_fast_path(scp: Scp) -> None:
    assoc = associate(scp)
    assert assoc.send_c_store(ct()).Status == 0x0000
    assoc.release()
    assert scp.classes == [fastpath.FastAssociation]


def test_node_listener_installs_the_fast_path(tmp_path: Path) -> None:
    node = Node(make_settings(tmp_path / "home"))
    node.start()
    try:
        server = node.listener._server
        assert server is not None
        assert server.RequestHandlerClass is fastpath.FastRequestHandler
    finally:
        node.stop()


def test_install_refuses_another_pynetdicom_series(
    scp: Scp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    with pytest.raises(RuntimeError, match=r"pynetdicom 3\.0\.4 internals, found 3\.1\.0"):
        fastpath.install(scp.server)


# --- C-ECHO and C-STORE ------------------------------------------------------------
def test_c_echo_from_pynetdicom(scp: Scp) -> None:
    assoc = associate(scp)
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


@needs_dcmtk
def test_c_echo_from_echoscu_release_and_abort(scp: Scp) -> None:
    for extra in ([], ["--abort"]):
        res = subprocess.run(
            [ECHOSCU, "-aec", "FASTSCP", *extra, "--repeat", "3", "127.0.0.1", str(scp.port)],
            env=dcmtk_env(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert res.returncode == 0, res.stderr.decode()
    scp.wait_idle()
    assert scp.events == ["released", "aborted"]


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_c_store_data_sets_arrive_byte_for_byte(scp: Scp, implicit: bool) -> None:
    datasets = [ct(pixels=n) for n in (1, 7, 8191, 8192, 70_000)]  # 1 to many PDUs each
    assoc = associate(scp)
    for ds in datasets:
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert scp.received == [(ds.SOPInstanceUID, encoded(ds, implicit)) for ds in datasets]


@needs_dcmtk
@pytest.mark.parametrize("max_pdu", [4096, 16382, 262144, 0])
def test_storescu_series_arrives_byte_for_byte(tmp_path: Path, max_pdu: int) -> None:
    sent = write_series(tmp_path / "series", 6, pixels=40_000)
    scp = start_scp(max_pdu=max_pdu)
    try:
        res = subprocess.run(
            [
                STORESCU,
                "-aec",
                "FASTSCP",
                "127.0.0.1",
                str(scp.port),
                "+sd",
                str(tmp_path / "series"),
            ],
            env=dcmtk_env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert res.returncode == 0, res.stderr.decode()
        scp.wait_idle()
        assert dict(scp.received) == sent
        assert scp.events == ["released"]
    finally:
        scp.server.shutdown()


def test_a_pdu_larger_than_the_preallocation_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # max PDU 0 = unlimited: pynetdicom sends the whole data set in one PDU
    monkeypatch.setattr(fastpath_dul, "_PREALLOC_MAX", 64 * 1024)
    scp = start_scp(max_pdu=0)
    try:
        ds = ct(pixels=200_000)
        assoc = associate(scp)
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        assert scp.received == [(ds.SOPInstanceUID, encoded(ds))]
    finally:
        scp.server.shutdown()


# --- statuses ----------------------------------------------------------------------
def _failure(code: int, comment: str | None) -> Dataset:
    status = Dataset()
    status.Status = code
    if comment is not None:
        status.ErrorComment = comment
    return status


@pytest.mark.filterwarnings("ignore:Failed to encode value:UserWarning")
@pytest.mark.parametrize(
    ("returned", "code", "comment"),
    [
        (0xA700, 0xA700, None),
        (_failure(0xA700, "spool disk low: 3 MiB free, watermark 1024 MiB"), 0xA700, None),
        (_failure(0xC222, "odd"), 0xC222, "odd"),
        (_failure(0xB000, None), 0xB000, None),
        (_failure(0xC210, "cannot parse data set: value '\u2026'"), 0xC210, None),
    ],
    ids=["int", "comment-even", "comment-odd", "dataset-status-only", "non-ascii-comment"],
)
def test_failure_statuses_reach_the_sender_with_their_error_comment(
    scp: Scp, returned: Any, code: int, comment: str | None
) -> None:
    scp.status = lambda event: returned
    expected_comment = returned.get("ErrorComment") if isinstance(returned, Dataset) else None
    assoc = associate(scp)
    rsp = assoc.send_c_store(ct())
    assert rsp.Status == code
    if expected_comment is not None and expected_comment.isascii():
        assert rsp.ErrorComment == expected_comment
    elif expected_comment is None:
        assert "ErrorComment" not in rsp
    else:  # pynetdicom's own path encodes it in the default character repertoire
        assert "ErrorComment" in rsp
    # the association is still usable after a failure
    scp.status = lambda event: 0x0000
    assert assoc.send_c_store(ct()).Status == 0x0000
    assoc.release()


def test_a_handler_exception_answers_0xC211(scp: Scp) -> None:
    def boom(event: Any) -> Any:
        raise RuntimeError("handler failed")

    scp.status = boom
    assoc = associate(scp)
    assert assoc.send_c_store(ct()).Status == 0xC211
    assoc.release()


@pytest.mark.parametrize(
    ("status", "comment"),
    [(0x0000, None), (0xA700, "spool disk full"), (0xC211, "x"), (0xFF00, None)],
)
@pytest.mark.parametrize("uid_length", [0, 1])
def test_the_direct_response_equals_pynetdicoms_encoding(
    status: int, comment: str | None, uid_length: int
) -> None:
    req = C_STORE()
    req.MessageID = 7
    req.AffectedSOPClassUID = CT  # odd length: padded
    req.AffectedSOPInstanceUID = "1.2.3.4" + "5" * uid_length
    returned: Any = _failure(status, comment) if comment is not None else status

    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = req.MessageID
    rsp.AffectedSOPInstanceUID = req.AffectedSOPInstanceUID
    rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
    rsp = StorageServiceClass(None).validate_status(returned, rsp)  # type: ignore[arg-type]
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    (p_data,) = list(msg.encode_msg(1, 0))
    ((_, stock),) = p_data.presentation_data_value_list

    assert b"\x03" + (fastpath.encode_c_store_rsp(req, returned) or b"") == stock


# --- release, abort, timeouts -------------------------------------------------------
def test_release_by_the_requestor(scp: Scp) -> None:
    assoc = associate(scp)
    assoc.send_c_store(ct())
    assoc.release()
    assert assoc.is_released
    scp.wait_idle()
    assert scp.events == ["released"]


def test_abort_by_the_requestor(scp: Scp) -> None:
    assoc = associate(scp)
    assoc.send_c_store(ct())
    assoc.abort()
    scp.wait_idle()
    assert scp.events == ["aborted"]


def test_abort_by_the_acceptor_reaches_the_requestor(scp: Scp) -> None:
    assoc = associate(scp)
    assert wait_for(lambda: bool(scp.server.active_associations))
    scp.server.active_associations[0].abort()
    assert wait_for(lambda: assoc.is_aborted)
    scp.wait_idle()


@needs_dcmtk
def test_storescu_abort(tmp_path: Path, scp: Scp) -> None:
    sent = write_series(tmp_path / "series", 3)
    res = subprocess.run(
        [
            STORESCU,
            "-aec",
            "FASTSCP",
            "--abort",
            "127.0.0.1",
            str(scp.port),
            "+sd",
            str(tmp_path / "series"),
        ],
        env=dcmtk_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode()
    scp.wait_idle()
    assert dict(scp.received) == sent
    assert scp.events == ["aborted"]


def test_an_idle_association_is_aborted_after_the_network_timeout() -> None:
    scp = start_scp(network_timeout=0.5)
    try:
        assoc = associate(scp)
        assert wait_for(lambda: assoc.is_aborted, timeout=5)
        scp.wait_idle()
        assert scp.events == ["aborted"]
    finally:
        scp.server.shutdown()


def test_a_silent_connection_is_closed_after_the_acse_timeout() -> None:
    scp = start_scp(acse_timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", scp.port), timeout=5) as s:
            assert s.recv(1) == b""  # closed by the server, no A-ASSOCIATE-RQ sent
        scp.wait_idle()
    finally:
        scp.server.shutdown()


def test_a_half_sent_pdu_is_dropped_after_the_network_timeout(tmp_path: Path) -> None:
    # the node's hardened server gives every socket a read timeout
    settings = make_settings(tmp_path / "home", dicom={"network_timeout_s": 0.5})
    node = Node(settings)
    node.start()
    try:
        host, port = node.listener.address
        assoc = requestor().associate(host, port, ae_title=settings.dicom.ae_title)
        assert assoc.is_established
        sock = assoc.dul.socket
        assert sock is not None
        sock.send(b"\x04\x00\x00\x00\x10\x00" + b"\x00" * 10)  # 4096 bytes promised, 10 sent
        assert wait_for(lambda: not assoc.is_established, timeout=5)
        assert wait_for(lambda: node.listener.active_associations() == 0, timeout=5)
    finally:
        node.stop()


# --- malformed input -----------------------------------------------------------------
@pytest.mark.parametrize(
    "pdv_items",
    [b"\x00\x00\x00\x01\x01", b"\x00\x00\x00\x09\x01\x03ab", b"\x00\x00\x00"],
    ids=["item-too-short", "item-past-the-end", "truncated-item-header"],
)
def test_a_malformed_p_data_aborts_the_association(scp: Scp, pdv_items: bytes) -> None:
    assoc = associate(scp)
    sock = assoc.dul.socket
    assert sock is not None
    sock.send(struct.pack(">BBL", 0x04, 0, len(pdv_items)) + pdv_items)
    assert wait_for(lambda: assoc.is_aborted)
    scp.wait_idle()
    assert scp.events == ["aborted"]


def test_an_unknown_pdu_type_aborts_the_association(scp: Scp) -> None:
    assoc = associate(scp)
    sock = assoc.dul.socket
    assert sock is not None
    sock.send(b"\x09\x00\x00\x00\x00\x02ab")
    assert wait_for(lambda: assoc.is_aborted)
    scp.wait_idle()


# --- the shortcuts step aside when someone listens ------------------------------------
def test_the_p_data_shortcut_steps_aside_for_a_pdu_handler() -> None:
    pdus: list[str] = []
    scp = start_scp(
        extra_handlers=[(evt.EVT_PDU_RECV, lambda e: pdus.append(type(e.pdu).__name__))]
    )
    try:
        ds = ct(pixels=20_000)
        assoc = associate(scp)
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        assert scp.received == [(ds.SOPInstanceUID, encoded(ds))]
        assert pdus.count("P_DATA_TF") >= 3  # command + a data set over 2+ PDUs
    finally:
        scp.server.shutdown()


def test_standard_logging_handlers_bound_only_when_they_would_log(scp: Scp) -> None:
    bound: list[bool] = []
    logger = logging.getLogger("pynetdicom")

    def record(event: Any) -> int:
        bound.append(bool(event.assoc.get_handlers(evt.EVT_DIMSE_RECV)))
        return 0x0000

    scp.status = record
    saved = logger.level
    try:
        for level in (logging.WARNING, logging.INFO):
            logger.setLevel(level)
            assoc = associate(scp)
            assert assoc.send_c_store(ct()).Status == 0x0000
            assoc.release()
    finally:
        logger.setLevel(saved)
    assert bound == [False, True]
    assert len(scp.received) == 2


# --- concurrency ---------------------------------------------------------------------
def test_concurrent_associations_do_not_mix(tmp_path: Path, scp: Scp) -> None:
    per_sender = 8
    sent: dict[str, bytes] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def sender() -> None:
        try:
            assoc = associate(scp)
            for _ in range(per_sender):
                ds = ct(pixels=30_000)
                with lock:
                    sent[str(ds.SOPInstanceUID)] = encoded(ds)
                assert assoc.send_c_store(ds).Status == 0x0000
            assoc.release()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    dcmtk: subprocess.Popen[bytes] | None = None
    if shutil.which(STORESCU):
        sent.update(write_series(tmp_path / "series", 5))
        dcmtk = subprocess.Popen(
            [
                STORESCU,
                "-aec",
                "FASTSCP",
                "127.0.0.1",
                str(scp.port),
                "+sd",
                str(tmp_path / "series"),
            ],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if dcmtk is not None:
        assert dcmtk.wait(timeout=60) == 0
    assert not errors
    scp.wait_idle()
    assert dict(scp.received) == sent
    assert len(scp.received) == len(sent)
    assert scp.events.count("released") == len(threads) + (dcmtk is not None)


@needs_dcmtk
def test_the_node_stores_what_storescu_sends(tmp_path: Path) -> None:
    sent = write_series(tmp_path / "series", 4)
    settings = make_settings(tmp_path / "home")
    node = Node(settings)
    node.start()
    try:
        host, port = node.listener.address
        res = subprocess.run(
            [
                STORESCU,
                "-aec",
                settings.dicom.ae_title,
                host,
                str(port),
                "+sd",
                str(tmp_path / "series"),
            ],
            env=dcmtk_env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert res.returncode == 0, res.stderr.decode()
        stored = {}
        for path in node.spool.iter_files():
            ds = dcmread(path)
            raw = path.read_bytes()
            (group_length,) = struct.unpack("<I", raw[140:144])
            stored[str(ds.SOPInstanceUID)] = raw[144 + group_length :]
        assert stored == sent
    finally:
        node.stop()


# --- the spool's spare files ------------------------------------------------------------
def _spares(root: Path) -> list[Path]:
    return sorted((root / "spare").iterdir())


def test_spool_writes_fill_spares_made_ahead(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 0)
    sp.open()
    first = Spool.relative_path("sk", "rk", "1.2.3.1", "ab" * 32)
    sp.write(first, b"META", b"DATA1")  # no spare yet: made on the spot, in tmp/
    assert wait_for(lambda: len(_spares(tmp_path)) == spool_module._SPARES_KEPT)
    spare = _spares(tmp_path)
    assert all(p.stat().st_size == 0 and p.suffix == ".part" for p in spare)
    second = Spool.relative_path("sk", "rk", "1.2.3.2", "cd" * 32)
    sp.write(second, b"META", b"DATA2")
    for rel, data in ((first, b"DATA1"), (second, b"DATA2")):
        assert (tmp_path / rel).read_bytes() == b"\0" * 128 + b"DICM" + b"META" + data
    assert list((tmp_path / "tmp").iterdir()) == []


def test_spool_open_drops_spares_left_by_a_crash(tmp_path: Path) -> None:
    (tmp_path / "spare").mkdir(parents=True)
    (tmp_path / "spare" / "x.part").write_bytes(b"")
    Spool(tmp_path, 0).open()
    assert _spares(tmp_path) == []


def test_spool_write_survives_a_spare_removed_behind_its_back(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 0)
    sp.open()
    sp.write(Spool.relative_path("sk", "rk", "1.2.3.1", "ab" * 32), b"M", b"D")
    assert wait_for(lambda: len(_spares(tmp_path)) == spool_module._SPARES_KEPT)
    for p in _spares(tmp_path):
        p.unlink()
    rel = Spool.relative_path("sk", "rk", "1.2.3.2", "cd" * 32)
    sp.write(rel, b"M", b"D2")
    assert (tmp_path / rel).read_bytes().endswith(b"MD2")


def test_spool_write_into_a_spare_is_durable_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = Spool(tmp_path, 0)
    sp.open()
    sp.write(Spool.relative_path("sk", "rk", "1.2.3.1", "ab" * 32), b"M", b"D")
    assert wait_for(lambda: len(_spares(tmp_path)) == spool_module._SPARES_KEPT)
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append(f"replace {src}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    rel = Spool.relative_path("sk", "rk", "1.2.3.2", "cd" * 32)
    sp.write(rel, b"M", b"D")
    spare_dir = str(tmp_path / "spare")
    assert calls[0].startswith(f"fsync {spare_dir}/")
    assert calls[0].endswith(".part")
    assert calls[1].startswith(f"replace {spare_dir}/")
    assert calls[2] == f"fsync {(tmp_path / rel).parent}"


# --- write first, commit after the checks (spool.begin + receiver) ----------------------
def _temporaries(root: Path) -> list[Path]:
    return [p for folder in ("tmp", "spare") for p in (root / folder).iterdir() if p.stat().st_size]


def test_a_pending_file_is_durable_only_on_commit_and_gone_on_discard(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 0)
    sp.open()
    rel = Spool.relative_path("sk", "rk", "1.2.3", "ab" * 32)
    with sp.begin(b"META", b"DATA") as pending:
        assert not (tmp_path / rel).exists()
        assert len(_temporaries(tmp_path)) == 1  # written, not yet in place
        pending.commit(rel)
    assert (tmp_path / rel).read_bytes() == b"\0" * 128 + b"DICM" + b"META" + b"DATA"
    with sp.begin(b"META", b"OTHER"):
        pass  # not committed: discarded
    assert _temporaries(tmp_path) == []
    assert list((tmp_path / "studies").rglob("*.dcm")) == [tmp_path / rel]


def test_a_full_disk_while_writing_is_reported_by_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = Spool(tmp_path, 0)
    sp.open()

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    pending = sp.begin(b"M", b"D")  # no error yet: reported where write() reported it
    monkeypatch.undo()
    with pytest.raises(IngestError) as err, pending:
        pending.commit(Spool.relative_path("sk", "rk", "1.2.3", "ab" * 32))
    assert err.value.status == STATUS_OUT_OF_RESOURCES
    assert _temporaries(tmp_path) == []


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    settings = make_settings(tmp_path / "home")
    spool = Spool(settings.spool_path, 0)
    spool.open()
    store = open_store(settings)
    yield Receiver(settings, spool, store, b"k" * 32)
    store.close()


def _receive(rx: Receiver, ds: Dataset, sop_uid: str | None = None) -> Any:
    return rx.receive(
        sop_class_uid=CT,
        sop_uid=sop_uid or str(ds.SOPInstanceUID),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        dataset=encoded(ds),
        calling_ae="TESTSCU",
    )


def test_receiver_stores_then_ignores_an_identical_resend_without_writing(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = ct()
    assert _receive(receiver, ds).outcome is StoreOutcome.NEW
    begun: list[int] = []
    real_begin = Spool.begin

    def spy(self: Spool, meta: bytes, data: bytes) -> Any:
        begun.append(len(data))
        return real_begin(self, meta, data)

    monkeypatch.setattr(Spool, "begin", spy)
    assert _receive(receiver, ds).outcome is StoreOutcome.DUPLICATE
    assert begun == []
    changed = ct()
    changed.SOPInstanceUID = ds.SOPInstanceUID
    changed.StudyInstanceUID = ds.StudyInstanceUID
    changed.SeriesInstanceUID = ds.SeriesInstanceUID
    assert _receive(receiver, changed).outcome is StoreOutcome.REPLACED
    assert len(begun) == 1
    assert len(list(receiver._spool.iter_files())) == 2


def test_receiver_refusal_leaves_no_file(receiver: Receiver) -> None:
    with pytest.raises(IngestError) as err:
        _receive(receiver, ct(), sop_uid="1.2.3.4")
    assert err.value.status == 0xC222  # SOP Instance UID differs from the request
    assert list(receiver._spool.iter_files()) == []
    assert _temporaries(receiver._spool.root) == []


def test_receiver_reports_a_header_problem_before_a_full_disk(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        if len(data) > 100:  # the data set, not a wake-up byte or a log line
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(IngestError) as err:
        _receive(receiver, ct(), sop_uid="1.2.3.4")
    assert err.value.status == 0xC222  # as when the file was written after the checks
    with pytest.raises(IngestError) as err:
        _receive(receiver, ct())
    assert err.value.status == STATUS_OUT_OF_RESOURCES


def test_receiver_reports_a_header_problem_before_a_store_failure(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(sop_uid: str) -> Any:
        raise StoreError("state store error: disk I/O error")

    monkeypatch.setattr(receiver._store, "find_instance", down)
    with pytest.raises(IngestError) as err:
        _receive(receiver, ct(), sop_uid="1.2.3.4")
    assert err.value.status == 0xC222
    with pytest.raises(StoreError):
        _receive(receiver, ct())
    assert list(receiver._spool.iter_files()) == []
    assert _temporaries(receiver._spool.root) == []
