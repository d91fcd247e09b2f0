"""issue 7, bad input: bounds on what one instance may cost (dicom.limits), and quarantine.

- a deflated data set inflates through a bounded decompressor: a bomb is refused
  (0xA700) once it passes ``max_inflated_mb``, after that much work and no more;
- sequences nested past ``max_sequence_depth`` are refused (0xC212) by a scan that
  does not recurse, and kept in ``<spool>/quarantine`` with a sidecar that holds
  no patient data; nothing of them reaches the store or ``studies/``;
- a data set over ``max_dataset_mb`` is refused (0xA700), not quarantined.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.association import Association

from cds.audit import AuditEvent
from cds.audit.trail import read_records
from cds.config import Settings
from cds.errors import IngestError
from cds.ingest.instance import (
    STATUS_TOO_DEEP,
    STATUS_TOO_LARGE,
    encode_file_meta,
    inflate,
    read_header,
    sequence_depth,
)
from cds.orchestrator import Node

from ..conftest import make_settings
from .test_scp import CT, connect, ct, encoded, send_raw, stored_files

CANARY = "CANARY^NESTED"
ITEM, ITEM_END, SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
UNDEFINED = 0xFFFFFFFF


def _delim(tag: tuple[int, int], length: int = 0) -> bytes:
    return struct.pack("<HHI", *tag, length)


def nested(levels: int, *, defined: bool = False, implicit: bool = False) -> bytes:
    """``levels`` sequences (ContentSequence), each in the single item of the one above,
    built iteratively: ~36 bytes a level, 1,000 levels make the 36 KB file of issue 7."""
    inner = b""
    for _ in range(levels):
        if defined:
            item = _delim(ITEM, len(inner)) + inner
            head = struct.pack("<HHI", 0x0040, 0xA730, len(item))
            if not implicit:
                head = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, len(item))
            inner = head + item
        else:
            head = struct.pack("<HHI", 0x0040, 0xA730, UNDEFINED)
            if not implicit:
                head = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, UNDEFINED)
            inner = head + _delim(ITEM, UNDEFINED) + inner + _delim(ITEM_END) + _delim(SEQ_END)
    return inner


def header_bytes(ds: Dataset, *, implicit: bool = False) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=False, implicit_vr=implicit, little_endian=True)
    return buf.getvalue()


def nested_instance(levels: int, **kw: bool) -> tuple[Dataset, bytes]:
    ds = ct(PatientName=CANARY)
    del ds.PixelData
    if kw.get("implicit"):
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    data = header_bytes(ds, implicit=kw.get("implicit", False)) + nested(levels, **kw)
    return ds, data


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Node]:
    settings = make_settings(
        tmp_path / "home",
        dicom={"limits": {"max_dataset_mb": 1, "max_inflated_mb": 1, "max_sequence_depth": 16}},
    )
    node = Node(settings)
    node.start()
    yield node
    node.stop()


@pytest.fixture
def lassoc(limited: Node) -> Iterator[Association]:
    a = connect(limited)
    assert a.is_established
    yield a
    a.release()


def quarantined(node: Node) -> list[dict[str, object]]:
    folder = node.spool.quarantine_folder
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# --- the bounded scan, alone --------------------------------------------------


@pytest.mark.parametrize("defined", [False, True])
@pytest.mark.parametrize("implicit", [False, True])
def test_scan_measures_depth_without_recursion(defined: bool, implicit: bool) -> None:
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    assert sequence_depth(nested(5, defined=defined, implicit=implicit), ts, 32) == (5, True)
    # 3,000 levels: past Python's recursion limit, still just a loop
    with pytest.raises(IngestError) as err:
        sequence_depth(nested(3000, defined=defined, implicit=implicit), ts, 500)
    assert err.value.status == STATUS_TOO_DEEP
    assert "dicom.limits.max_sequence_depth (500)" in str(err.value)


def test_scan_matches_the_corpus(corpus: Path) -> None:
    """On real files the scan never finds less nesting than pydicom does."""
    from pydicom import dcmread
    from pynetdicom.dsutils import split_dataset

    def parsed(ds: Dataset, depth: int = 0) -> int:
        return max(
            [depth] + [parsed(i, depth + 1) for e in ds if e.VR == "SQ" for i in e.value]  # shallow
        )

    files = [
        corpus / "sr_seg_reference" / "other" / "test-SR_dcmtk.dcm",
        corpus / "compressed" / "Philips_Achieva_MR_J2K_lossless_GH064.dcm",
        corpus / "sr_seg_reference" / "vendor_rdsr" / "CT-RDSR-Siemens_Flash-TAP-SS.dcm",
        corpus / "ct" / "CT_small.dcm",
    ]
    for path in files:
        meta, offset = split_dataset(path)
        depth, complete = sequence_depth(
            path.read_bytes()[offset:], str(meta.TransferSyntaxUID), 64
        )
        assert complete, path.name
        assert depth >= parsed(dcmread(path)), path.name


def test_read_header_answers_recursion_error_itself() -> None:
    """Belt and braces: the header parse maps pydicom's RecursionError to 0xC212."""
    ds, data = nested_instance(1000)
    meta = encode_file_meta(CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, "X")
    with pytest.raises(IngestError) as err:
        read_header(meta, data)
    assert err.value.status == STATUS_TOO_DEEP


def test_inflate_is_bounded() -> None:
    bomb = zlib.compress(b"\0" * (64 * 2**20))[2:-4]  # raw deflate, 64 MiB of zeros
    assert len(bomb) < 100_000
    with pytest.raises(IngestError) as err:
        inflate(bomb, 2**20)
    assert err.value.status == STATUS_TOO_LARGE
    assert "max_inflated_mb" in str(err.value)
    assert inflate(zlib.compress(b"abc" * 10)[2:-4], 2**20) == b"abc" * 10
    with pytest.raises(IngestError) as bad:
        inflate(b"\xff\xff\xff garbage", 2**20)
    assert bad.value.status == 0xC210


# --- over C-STORE -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "kw"),
    [
        ("explicit, undefined lengths", {}),
        ("explicit, defined lengths", {"defined": True}),
        ("implicit VR", {"implicit": True}),
    ],
)
def test_1000_nested_sequences_refused_and_quarantined(
    limited: Node, lassoc: Association, tmp_path: Path, kind: str, kw: dict[str, bool]
) -> None:
    """issue 7: the 36 KB file with 1,000 nested sequences: 0xC212 with a comment, kept in
    quarantine with a sidecar (no patient data), nothing stored; association and node live."""
    ds, data = nested_instance(1000, **kw)
    assert 15_000 < len(data) < 40_000, kind  # ~36 KB with undefined lengths
    ts = ImplicitVRLittleEndian if kw.get("implicit") else ExplicitVRLittleEndian
    rsp = send_raw(lassoc, tmp_path, CT, ds.SOPInstanceUID, ts, data)
    assert rsp.Status == STATUS_TOO_DEEP
    assert "max_sequence_depth (16)" in rsp.ErrorComment
    assert stored_files(limited) == []
    assert limited.store.find_instance(ds.SOPInstanceUID) is None

    (side,) = quarantined(limited)
    assert side["status"] == "0xC212"
    assert side["calling_ae"] == "TESTSCU"
    assert side["sop_instance_uid"] == ds.SOPInstanceUID
    assert side["sop_class_uid"] == CT
    kept = limited.spool.quarantine_folder / str(side["file"])
    raw = kept.read_bytes()
    assert raw[:128] == b"\0" * 128
    assert hashlib.sha256(raw[-int(side["size"]) :]).hexdigest() == side["sha256"]
    sidecar_text = json.dumps(side)
    assert "CANARY" not in sidecar_text
    assert "CANARY" not in rsp.ErrorComment
    # and the audit trail says so (a security alert from that AE), without patient data
    alerts = [
        r
        for r in read_records(limited.audit.path)
        if r.event is AuditEvent.SECURITY_ALERT and r.detail.get("what") == "instance quarantined"
    ]
    assert [(r.who, r.detail["status"], r.detail["file"]) for r in alerts] == [
        ("AE:TESTSCU", "0xC212", str(side["file"]).removesuffix(".dcm"))
    ]
    assert "CANARY" not in (limited.audit.path / "audit.jsonl").read_text()

    # the same association goes on; a restart does not index the quarantine
    assert lassoc.send_c_echo().Status == 0x0000
    assert lassoc.send_c_store(ct()).Status == 0x0000
    assert limited.reconcile() == 0
    assert len(stored_files(limited)) == 1


def test_nesting_at_the_limit_is_accepted(
    limited: Node, lassoc: Association, tmp_path: Path
) -> None:
    ds, data = nested_instance(16)
    rsp = send_raw(lassoc, tmp_path, CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, data)
    assert rsp.Status == 0x0000
    ds, data = nested_instance(17)
    rsp = send_raw(lassoc, tmp_path, CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, data)
    assert rsp.Status == STATUS_TOO_DEEP


def test_nesting_after_pixel_data_is_found(
    limited: Node, lassoc: Association, tmp_path: Path
) -> None:
    """A header read stops at Pixel Data; a later full read would not: the scan goes on."""
    ds = ct()
    data = encoded(ds) + struct.pack("<HH2sHI", 0xFFFA, 0xFFFA, b"SQ", 0, UNDEFINED)
    data += _delim(ITEM, UNDEFINED) + nested(40) + _delim(ITEM_END) + _delim(SEQ_END)
    rsp = send_raw(lassoc, tmp_path, CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, data)
    assert rsp.Status == STATUS_TOO_DEEP


def test_explicit_declared_implicit_encoded_nesting_is_found(
    limited: Node, lassoc: Association, tmp_path: Path
) -> None:
    """Declared explicit VR, encoded implicit (parsers switch): still measured."""
    ds, data = nested_instance(1000, implicit=True)
    rsp = send_raw(lassoc, tmp_path, CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, data)
    assert rsp.Status == STATUS_TOO_DEEP
    assert len(quarantined(limited)) == 1


@pytest.fixture
def dassoc(limited: Node) -> Iterator[Association]:
    """An association proposing CT in the deflated transfer syntax."""
    from cds.requestor import PauseSafeAE

    ae = PauseSafeAE(ae_title="TESTSCU")
    ae.add_requested_context(CT, DeflatedExplicitVRLittleEndian)
    host, port = limited.listener.address
    a = ae.associate(host, port, ae_title=limited.settings.dicom.ae_title)
    assert a.is_established
    yield a
    a.release()


def _deflated(ds: Dataset, padding: int = 0) -> bytes:
    if padding:
        ds.add_new(0x00091010, "OB", b"\0" * padding)  # private, so nothing reads it
        ds.add_new(0x00090010, "LO", "CDS TEST")
    plain = header_bytes(ds)
    return zlib.compress(plain)[2:-4]


def test_deflate_bomb_refused_and_quarantined(
    limited: Node, dassoc: Association, tmp_path: Path
) -> None:
    """issue 7: a few KB that inflate past max_inflated_mb: 0xA700 with a comment."""
    ds = ct()
    bomb = _deflated(ds, padding=8 * 2**20)
    assert len(bomb) < 20_000
    rsp = send_raw(dassoc, tmp_path, CT, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian, bomb)
    assert rsp.Status == STATUS_TOO_LARGE
    assert "max_inflated_mb (1 MiB)" in rsp.ErrorComment
    assert stored_files(limited) == []
    (side,) = quarantined(limited)
    assert side["status"] == "0xA700"


def test_deflated_within_the_cap_is_stored_as_sent(
    limited: Node, dassoc: Association, tmp_path: Path
) -> None:
    ds = ct()
    small = _deflated(ds, padding=100_000)
    rsp = send_raw(dassoc, tmp_path, CT, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian, small)
    assert rsp.Status == 0x0000
    (path,) = stored_files(limited)
    assert path.read_bytes().endswith(small)  # byte for byte as received
    from pydicom import dcmread

    assert dcmread(path).SOPInstanceUID == ds.SOPInstanceUID


def test_deflated_corpus_file_is_stored(node: Node, tmp_path: Path, corpus: Path) -> None:
    from pydicom import dcmread

    from cds.requestor import PauseSafeAE

    path = next(p for p in corpus.rglob("*.dcm") if _is_deflated(p))
    ds = dcmread(path)
    ae = PauseSafeAE(ae_title="DEFLATE")
    ae.add_requested_context(ds.SOPClassUID, DeflatedExplicitVRLittleEndian)
    host, port = node.listener.address
    a = ae.associate(host, port, ae_title=node.settings.dicom.ae_title)
    try:
        assert a.send_c_store(ds).Status == 0x0000
    finally:
        a.release()


def _is_deflated(path: Path) -> bool:
    head = path.read_bytes()[:400]
    return DeflatedExplicitVRLittleEndian.encode() in head


def test_dataset_over_max_dataset_mb_refused_not_quarantined(
    limited: Node, lassoc: Association, tmp_path: Path
) -> None:
    ds = ct()
    ds.add_new(0x00091010, "OB", b"\1" * (2 * 2**20))
    ds.add_new(0x00090010, "LO", "CDS TEST")
    rsp = send_raw(lassoc, tmp_path, CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, encoded(ds))
    assert rsp.Status == STATUS_TOO_LARGE
    assert "max_dataset_mb (1 MiB)" in rsp.ErrorComment
    assert stored_files(limited) == []
    assert quarantined(limited) == []


def test_limits_are_settings() -> None:
    s = Settings()
    assert s.dicom.limits.max_sequence_depth == 32
    for bad in (0, 129):
        with pytest.raises(ValueError, match="max_sequence_depth"):
            Settings(dicom={"limits": {"max_sequence_depth": bad}})  # type: ignore[arg-type]


@pytest.mark.parametrize("defined", [False, True])
def test_deepest_allowed_nesting_survives_every_later_read(defined: bool) -> None:
    """What passes at the highest max_sequence_depth allowed (128) is read in full, walked,
    printed and written again by pydicom (recursive) without a RecursionError: no later
    stage (assembly, routing, pipelines, API, export) can be crashed by what ingest let in."""
    from pydicom import dcmread

    ds, data = nested_instance(128, defined=defined)
    assert sequence_depth(data, ExplicitVRLittleEndian, 128) == (128, True)
    meta = encode_file_meta(CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, "X")
    read = dcmread(BytesIO(b"\0" * 128 + b"DICM" + meta + data))
    assert sum(1 for _ in read.iterall()) > 128
    assert str(read)
    read.save_as(BytesIO())


def test_quarantine_is_bounded(tmp_path: Path) -> None:
    """Past max_quarantine_mb only sidecars are written: a flood cannot fill the disk."""
    from cds.ingest.spool import Spool

    spool = Spool(tmp_path / "spool", 0)
    spool.open()
    kw = {
        "reason": "r",
        "status": 0xC212,
        "calling_ae": "X",
        "sop_class_uid": CT,
        "sop_uid": "1.2.3",
        "max_bytes": 100_000,
    }
    names = [spool.quarantine(b"", b"\0" * 40_000, **kw) for _ in range(4)]  # type: ignore[arg-type]
    sides = [json.loads((spool.quarantine_folder / f"{n}.json").read_text()) for n in names]
    assert [s["file"] is not None for s in sides] == [True, True, False, False]
    assert len(list(spool.quarantine_folder.glob("*.dcm"))) == 2
    assert list(spool.iter_files()) == []


def test_check_file_bounds_files_read_from_disk(tmp_path: Path, corpus: Path) -> None:
    """For tools that read files rather than receive them (cds process): the same bounds."""
    from cds.ingest.instance import check_file

    bounds = {"max_inflated_bytes": 2**20, "max_sequence_depth": 16}
    check_file((corpus / "ct" / "CT_small.dcm").read_bytes(), **bounds)
    ds, data = nested_instance(1000)
    meta = encode_file_meta(CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, "X")
    with pytest.raises(IngestError) as err:
        check_file(b"\0" * 128 + b"DICM" + meta + data, **bounds)
    assert err.value.status == STATUS_TOO_DEEP
    with pytest.raises(IngestError) as no_meta:
        check_file(data, **bounds)
    assert no_meta.value.status == STATUS_TOO_DEEP
    bomb = zlib.compress(header_bytes(ct()) + b"\0" * (4 * 2**20))[2:-4]
    meta = encode_file_meta(CT, "1.2.3", DeflatedExplicitVRLittleEndian, "X")
    with pytest.raises(IngestError) as big:
        check_file(b"\0" * 128 + b"DICM" + meta + bomb, **bounds)
    assert big.value.status == STATUS_TOO_LARGE
