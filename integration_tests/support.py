"""Plain helpers for the integration tests (no pytest fixtures here).

- where the DCMTK tools and the shared corpus are;
- how to split a Part 10 file into File Meta and data set bytes;
- a raw C-STORE over a pynetdicom association (for bytes DCMTK will not send);
- ``WireRecorder``: a TCP relay that keeps every byte a sender puts on the
  wire, and ``dimse_messages`` to cut that stream back into DIMSE messages;
- synthetic CT instances with fresh UIDs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the shared test corpus, ``../shared/dicom`` from the repository root
CORPUS = (REPO_ROOT / ".." / "shared" / "dicom").resolve()

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
VERIFICATION = "1.2.840.10008.1.1"

# --- tools ---------------------------------------------------------------


def _is_dcmtk(path: str) -> bool:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "dcmtk" in (out.stdout + out.stderr).lower()


@functools.cache
def find_dcmtk(name: str) -> str | None:
    """Path of a DCMTK tool: /usr/bin first (``storescu`` on PATH may be pynetdicom's)."""
    candidates = [f"/usr/bin/{name}"]
    found = shutil.which(name)
    if found:
        candidates.append(found)
    for c in candidates:
        if os.access(c, os.X_OK) and _is_dcmtk(c):
            return c
    return None


def require_dcmtk(name: str) -> str:
    """Path of a DCMTK tool, or skip the test saying what is missing."""
    import pytest

    path = find_dcmtk(name)
    if path is None:
        pytest.skip(
            f"DCMTK {name} not installed (looked in /usr/bin and PATH; "
            "pyenv's storescu/echoscu shims are pynetdicom apps, not DCMTK)"
        )
    return path


def run_tool(
    args: list[str], timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool with TCP_NODELAY=1; stdout and stderr merged into ``.stdout``."""
    return subprocess.run(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=tool_env(),
        cwd=cwd,
        check=False,
    )


def dcmsend(
    port: int, called_ae: str, files: list[Path], *extra: str, calling_ae: str = "DCMSEND"
) -> subprocess.CompletedProcess[str]:
    """One DCMTK dcmsend run (one association) sending ``files`` as they are."""
    return run_tool(
        [
            require_dcmtk("dcmsend"),
            "-v",
            "--decompress-never",
            "-aet",
            calling_ae,
            "-aec",
            called_ae,
            *extra,
            "127.0.0.1",
            str(port),
            *(str(f) for f in files),
        ]
    )


def tool_env() -> dict[str, str]:
    """Environment for DCMTK and Orthanc processes."""
    return {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    """A TCP port on the loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- files -----------------------------------------------------------------


def split_part10(raw: bytes) -> tuple[bytes, bytes]:
    """(preamble + File Meta, data set) of a Part 10 file; ``(b"", raw)`` without 'DICM'.

    Uses the File Meta group length at offset 140 (element (0002,0000) starts at 132).
    """
    if raw[128:132] != b"DICM":
        return b"", raw
    if raw[132:138] != b"\x02\x00\x00\x00UL":
        raise ValueError("File Meta does not start with (0002,0000) UL group length")
    (group_len,) = struct.unpack("<I", raw[140:144])
    end = 144 + group_len
    return raw[:end], raw[end:]


def sha12(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def spooled_files(home: Path, sop_uid: str) -> list[Path]:
    """Every spooled version of one SOP Instance under ``home``."""
    return sorted((home / "spool" / "studies").glob(f"*/*/{sop_uid}.*.dcm"))


def spooled_file_for(home: Path, sop_uid: str, dataset: bytes) -> Path | None:
    """The spool file holding exactly ``dataset`` for ``sop_uid`` (content-addressed name)."""
    hits = list((home / "spool" / "studies").glob(f"*/*/{sop_uid}.{sha12(dataset)}.dcm"))
    return hits[0] if len(hits) == 1 else None


# --- raw DIMSE -------------------------------------------------------------


def nodelay(assoc: object) -> None:
    """TCP_NODELAY on a pynetdicom requestor's socket (it sets none: Nagle costs ~40 ms)."""
    sock = assoc.dul.socket.socket  # type: ignore[attr-defined]
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def send_raw_store(
    assoc: object,
    *,
    context_id: int,
    sop_class_uid: str,
    sop_uid: str,
    dataset: bytes,
    message_id: int,
) -> Dataset:
    """Send ``dataset`` bytes unchanged in a C-STORE request; return the status Dataset.

    pynetdicom's ``send_c_store`` re-encodes a Dataset, so this mirrors its
    body with a raw ``BytesIO`` data set. An empty Dataset means no response.
    """
    from pynetdicom.dimse_primitives import C_STORE

    req = C_STORE()
    req.MessageID = message_id
    req.Priority = 0x0002
    # malformed files may carry UIDs pynetdicom would refuse: skip its validation
    req._affected_sop_class_uid = UID(sop_class_uid)
    req._affected_sop_instance_uid = UID(sop_uid)
    req.DataSet = BytesIO(dataset)

    a = assoc  # pynetdicom.association.Association
    a._reactor_checkpoint.clear()  # type: ignore[attr-defined]
    while not a._is_paused:  # type: ignore[attr-defined]
        time.sleep(0.0001)
    try:
        a.dimse.send_msg(req, context_id)  # type: ignore[attr-defined]
        _, rsp = a.dimse.get_msg(block=True)  # type: ignore[attr-defined]
    finally:
        a._reactor_checkpoint.set()  # type: ignore[attr-defined]
    if rsp is None:
        return Dataset()
    return a._check_received_status(rsp)  # type: ignore[attr-defined,no-any-return]


# --- wire capture ----------------------------------------------------------


@dataclass
class Connection:
    to_node: bytearray = field(default_factory=bytearray)
    to_sender: bytearray = field(default_factory=bytearray)
    threads: list[threading.Thread] = field(default_factory=list)


class WireRecorder:
    """A TCP relay in front of the node that records both directions of every connection.

    DCMTK re-encodes what it reads (explicit lengths, trailing padding dropped,
    Implicit VR files sent as Explicit VR), so "byte-identical" is checked
    against what the sender put on the wire, taken from here.
    """

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self._target = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self.port = int(self._listener.getsockname()[1])
        self.connections: list[Connection] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection()
            self.connections.append(conn)
            for src, dst, buf in (
                (client, upstream, conn.to_node),
                (upstream, client, conn.to_sender),
            ):
                t = threading.Thread(target=self._pump, args=(src, dst, buf), daemon=True)
                conn.threads.append(t)
                t.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, buf: bytearray) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                with contextlib.suppress(OSError):
                    s.shutdown(how)

    def close(self, timeout: float = 10.0) -> None:
        self._listener.close()
        for conn in self.connections:
            for t in conn.threads:
                t.join(timeout)

    def exchanges(self) -> list[tuple[DimseMessage, Dataset]]:
        """Every request sent through the relay with the response to it, in order."""
        out = []
        for conn in self.connections:
            responses = {
                int(m.command.MessageIDBeingRespondedTo): m.command
                for m in dimse_messages(bytes(conn.to_sender))
                if m.command.CommandField & 0x8000
            }
            for m in dimse_messages(bytes(conn.to_node)):
                if not m.command.CommandField & 0x8000:
                    out.append((m, responses[int(m.command.MessageID)]))
        return out


@dataclass
class DimseMessage:
    context_id: int
    command: Dataset
    dataset: bytes | None


def dimse_messages(stream: bytes) -> list[DimseMessage]:
    """Cut one direction of an association's byte stream into DIMSE messages."""
    from pynetdicom.dsutils import decode

    out: list[DimseMessage] = []
    cmd = bytearray()
    data = bytearray()
    pending: tuple[int, Dataset] | None = None  # command waiting for its data set
    pos = 0
    while pos + 6 <= len(stream):
        pdu_type = stream[pos]
        (length,) = struct.unpack(">I", stream[pos + 2 : pos + 6])
        body = stream[pos + 6 : pos + 6 + length]
        pos += 6 + length
        if pdu_type != 0x04:  # only P-DATA-TF carries messages
            continue
        i = 0
        while i + 6 <= len(body):
            (item_len,) = struct.unpack(">I", body[i : i + 4])
            cx_id, header = body[i + 4], body[i + 5]
            fragment = body[i + 6 : i + 4 + item_len]
            i += 4 + item_len
            if header & 0x01:  # command fragment
                cmd.extend(fragment)
                if header & 0x02:
                    command = decode(BytesIO(bytes(cmd)), True, True)
                    cmd.clear()
                    if command.get("CommandDataSetType", 0x0101) == 0x0101:
                        out.append(DimseMessage(cx_id, command, None))
                    else:
                        pending = (cx_id, command)
            else:
                data.extend(fragment)
                if header & 0x02:
                    if pending is None:
                        raise ValueError("data set without a command")
                    out.append(DimseMessage(pending[0], pending[1], bytes(data)))
                    pending = None
                    data.clear()
    return out


# --- synthetic data --------------------------------------------------------


def write_ct_series(
    folder: Path,
    count: int,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    rows: int = 64,
) -> list[tuple[Path, str]]:
    """Write ``count`` small CT instances with fresh UIDs; return (path, SOP Instance UID)."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    out = []
    for n in range(1, count + 1):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.PatientName = "SYNTHETIC^INTEGRATION"
        ds.PatientID = "IT-0001"
        ds.Modality = "CT"
        ds.SeriesNumber = 1
        ds.InstanceNumber = n
        ds.ImagePositionPatient = [0.0, 0.0, float(n)]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = rows
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = (n % 4096).to_bytes(2, "little") * (rows * rows)
        path = folder / f"ct_{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append((path, sop_uid))
    return out


def write_bone_study(
    folder: Path, description: str = "SYNTHETIC", count: int = 12
) -> tuple[list[Path], str]:
    """A small synthetic CT study in which ``cds-ref-ct-bone`` finds bone (so it makes a
    SEG and an SR): a dense block in every slice, and the geometry a SEG needs.
    Returns the files and the Study Instance UID."""
    files = [p for p, _ in write_ct_series(folder, count)]
    frame_of_reference = generate_uid()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyDescription = description
        ds.FrameOfReferenceUID = frame_of_reference
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.8, 0.8]
        ds.SliceThickness = 1.0
        pixels = ds.pixel_array.copy()
        pixels[20:40, 20:40] = 1500
        ds.PixelData = pixels.tobytes()
        ds.save_as(f)
    return files, str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


#: identifying attributes a sender may forward encoded as UN (VR unknown), issue 16
UN_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "BodyPartExamined",
)


def write_un_series(
    folder: Path, paddings: list[bytes], keywords: tuple[str, ...] = UN_KEYWORDS
) -> tuple[list[Path], str]:
    """One small CT series, one instance per padding, whose ``keywords`` are encoded as
    UN (explicit VR little endian), each value followed by its instance's padding (made
    even with a NUL), as Orthanc forwards data converted from implicit VR without the
    dictionary. Returns the files and the Study Instance UID."""
    files = [p for p, _ in write_ct_series(folder, len(paddings), rows=8)]
    saved = pydicom.config.replace_un_with_known_vr
    pydicom.config.replace_un_with_known_vr = False  # else pydicom writes the known VR
    try:
        for f, padding in zip(files, paddings, strict=True):
            ds = pydicom.dcmread(f)
            ds.BodyPartExamined = "CHEST"
            for kw in keywords:
                raw = str(ds[kw].value).encode("ascii") + padding
                ds.add_new(ds[kw].tag, "UN", raw + b"\0" * (len(raw) % 2))
            ds.save_as(f)
    finally:
        pydicom.config.replace_un_with_known_vr = saved
    study = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    return files, str(study)
