"""Issue 2: the whole shared corpus (except malformed/) is received and stored as sent.

Two senders:

- DCMTK ``dcmsend`` through a recording relay. dcmsend re-encodes what it
  reads (explicit lengths for sequences, trailing padding dropped, Implicit VR
  and Big Endian files sent as Explicit VR Little Endian), so its data sets are
  compared with the bytes it actually put on the wire.
- pynetdicom sending each file's own data set bytes unchanged, in the file's
  own transfer syntax: here the spooled data set must equal the source file's.

In both cases the API counts must match the distinct SOP Instance, Series and
Study UIDs of the accepted files, computed with pydicom.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import UID

from integration_tests.conftest import CdsNode
from integration_tests.support import (
    CORPUS,
    SECONDARY_CAPTURE,
    VERIFICATION,
    WireRecorder,
    nodelay,
    require_dcmtk,
    run_tool,
    send_raw_store,
    split_part10,
    spooled_file_for,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS}"),
]

#: DICOMDIRs: Media Storage Directory Storage is no storage SOP Class, so the
#: node rejects its presentation context; smuggled in as another SOP Class, the
#: data set is refused (no Study Instance UID).
DICOMDIRS = {
    "other/dicomdir_study/DICOMDIR",
    "other/dicomdir_study/DICOMDIR-bigEnd",
    "other/dicomdir_study/DICOMDIR-empty.dcm",
    "other/dicomdir_study/DICOMDIR-implicit",
    "other/dicomdir_study/DICOMDIR-nooffset",
    "other/dicomdir_study/DICOMDIR-nopatient",
    "other/dicomdir_study/DICOMDIR-reordered",
    "other/dicomdir_study/TINY_ALPHA/DICOMDIR",
}

#: corpus files whose data set has no SOP Class/Instance UID: DCMTK will not send
#: them ("<not sent>" in its report). They are sent raw by pynetdicom instead.
NOT_SENDABLE_BY_DCMTK = {
    "charset/chrSQEncoding.dcm",  # only a sequence; UIDs are in the File Meta alone
    "charset/chrSQEncoding1.dcm",
    *DICOMDIRS,
}

#: corpus files whose data set the node must refuse, with the status it must answer
REFUSED = {
    # no (0020,000D) Study Instance UID in the data set
    "compressed/JPEGLSNearLossless_16.dcm": 0xC220,
    "charset/chrSQEncoding.dcm": 0xC220,
    "charset/chrSQEncoding1.dcm": 0xC220,
    **dict.fromkeys(DICOMDIRS, 0xC220),  # when sent as Secondary Capture
}


def corpus_files() -> list[str]:
    return sorted(
        p.relative_to(CORPUS).as_posix()
        for p in CORPUS.rglob("*")
        if p.is_file() and p.relative_to(CORPUS).parts[0] != "malformed" and p.name != "README.md"
    )


@dataclass(frozen=True)
class SourceFile:
    rel: str
    dataset: bytes  # data set bytes after the File Meta (the whole file without one)
    transfer_syntax: str
    sop_class_uid: str  # for the C-STORE request: File Meta, else the data set
    sop_uid: str
    study_uid: str
    series_uid: str

    @classmethod
    def read(cls, rel: str) -> SourceFile:
        path = CORPUS / rel
        meta, dataset = split_part10(path.read_bytes())
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        fm = ds.file_meta if meta else None
        if fm is not None and fm.get("TransferSyntaxUID"):
            ts = str(fm.TransferSyntaxUID)
        else:  # no File Meta: the encoding pydicom detected
            implicit, little = ds.original_encoding
            ts = (
                "1.2.840.10008.1.2"
                if implicit
                else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
            )
        sop_class = str((fm.get("MediaStorageSOPClassUID") if fm else None) or ds.SOPClassUID)
        sop_uid = str(
            ds.get("SOPInstanceUID") or (fm.get("MediaStorageSOPInstanceUID") if fm else "")
        )
        return cls(
            rel,
            dataset,
            ts,
            sop_class,
            sop_uid,
            str(ds.get("StudyInstanceUID", "")),
            str(ds.get("SeriesInstanceUID", "")),
        )


def parse_dcmsend_report(text: str) -> list[dict[str, str]]:
    """The per-instance blocks of ``dcmsend --create-report-file``, in sending order."""
    records = []
    for block in text.split("\n\n"):
        rec = {}
        for line in block.splitlines():
            if " : " in line:
                key, value = line.split(" : ", 1)
                rec[key.strip()] = value.strip()
        if "Filename" in rec:
            records.append(rec)
    return records


def send_files_raw(node: CdsNode, files: list[SourceFile]) -> dict[str, pydicom.Dataset | None]:
    """Send each file's data set bytes unchanged (own SOP Class and transfer syntax).

    Returns each file's C-STORE status, or None where the node rejected the
    presentation context (so nothing could be sent).
    """
    from cds.requestor import PauseSafeAE

    statuses: dict[str, pydicom.Dataset | None] = {}
    pairs = sorted({(f.sop_class_uid, f.transfer_syntax) for f in files})
    for start in range(0, len(pairs), 120):  # at most 128 presentation contexts per association
        chunk = pairs[start : start + 120]
        ae = PauseSafeAE(ae_title="RAWSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        for sop_class, ts in chunk:
            ae.add_requested_context(UID(sop_class), [UID(ts)])
        ae.add_requested_context(VERIFICATION)
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
        assert assoc.is_established
        nodelay(assoc)
        try:
            cx_of = {
                (str(cx.abstract_syntax), str(cx.transfer_syntax[0])): cx.context_id
                for cx in assoc.accepted_contexts
            }
            for msg_id, f in enumerate(files, start=1):
                key = (f.sop_class_uid, f.transfer_syntax)
                if key not in chunk:
                    continue
                if key not in cx_of:
                    statuses[f.rel] = None
                    continue
                statuses[f.rel] = send_raw_store(
                    assoc,
                    context_id=cx_of[key],
                    sop_class_uid=f.sop_class_uid,
                    sop_uid=f.sop_uid,
                    dataset=f.dataset,
                    message_id=msg_id,
                )
                assert assoc.is_established, f"association lost after {f.rel}"
        finally:
            assoc.release()
    return statuses


def expected_counts(files: list[SourceFile]) -> tuple[int, int, set[str]]:
    sops = {f.sop_uid for f in files}
    series = {f.series_uid for f in files}
    return len(sops), len(series), {f.study_uid for f in files}


def assert_api_counts(node: CdsNode, accepted: list[SourceFile]) -> None:
    n_sops, n_series, study_uids = expected_counts(accepted)
    api = node.studies()
    assert {s["study_instance_uid"] for s in api} == study_uids
    assert len(api) == len(study_uids)
    assert sum(s["instance_count"] for s in api) == n_sops
    assert sum(s["series_count"] for s in api) == n_series


def test_i2_r2_dcmsend_corpus_stored_as_sent(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """issue 2, req. 2: dcmsend of the whole corpus: each data set stored byte for byte as sent.

    Refused exactly: REFUSED (failure status + Error Comment on the wire);
    DCMTK itself does not send NOT_SENDABLE_BY_DCMTK (sent raw below).
    """
    dcmsend = require_dcmtk("dcmsend")
    node = node_factory()
    recorder = WireRecorder(node.dicom_port)
    report_path = tmp_path / "dcmsend-report.txt"
    folders = sorted(p.name for p in CORPUS.iterdir() if p.is_dir() and p.name != "malformed")
    result = run_tool(
        [
            dcmsend,
            "-v",
            "--read-file",  # also files without File Meta
            "--no-uid-checks",  # let the node judge UIDs
            "--decompress-never",
            "--scan-directories",
            "--recurse",
            "--no-halt",
            "-aec",
            node.ae_title,
            "--create-report-file",
            str(report_path),
            "127.0.0.1",
            str(recorder.port),
            *folders,
        ],
        timeout=300,
        cwd=CORPUS,
    )
    recorder.close()
    assert result.returncode == 0, result.stdout[-3000:]
    records = parse_dcmsend_report(report_path.read_text())

    # every corpus file was considered by dcmsend, once
    assert sorted(r["Filename"] for r in records) == corpus_files(), (
        "dcmsend did not consider every corpus file exactly once"
    )
    not_sent = {r["Filename"] for r in records if r["DIMSE Status"] == "<not sent>"}
    assert not_sent == NOT_SENDABLE_BY_DCMTK

    # the wire: one C-STORE-RQ per sent record, in order, and the response to it
    exchanges = [(req, rsp) for req, rsp in recorder.exchanges() if req.command.CommandField == 1]
    sent = [r for r in records if r["DIMSE Status"] != "<not sent>"]
    assert len(exchanges) == len(sent)

    refused: dict[str, int] = {}
    accepted: list[SourceFile] = []
    verbatim = 0
    for rec, (req, rsp) in zip(sent, exchanges, strict=True):
        rel = rec["Filename"]
        status = int(rsp.Status)
        assert rec["DIMSE Status"].lower().startswith(f"0x{status:04x}"), (rel, rec)
        if status != 0x0000:
            refused[rel] = status
            assert str(rsp.get("ErrorComment", "")).strip(), f"{rel}: failure without comment"
            continue
        sop_uid = str(req.command.AffectedSOPInstanceUID)
        assert req.dataset is not None
        stored = spooled_file_for(node.home, sop_uid, req.dataset)
        assert stored is not None, f"{rel}: no spool file for the data set sent"
        assert split_part10(stored.read_bytes())[1] == req.dataset, f"{rel}: bytes differ"
        meta = pydicom.dcmread(stored, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == rec["Network Xfer"].split()[0], rel
        assert meta.MediaStorageSOPInstanceUID == sop_uid
        src = SourceFile.read(rel)
        verbatim += src.dataset == req.dataset
        accepted.append(src)

    assert refused == {k: v for k, v in REFUSED.items() if k not in NOT_SENDABLE_BY_DCMTK}
    # for the record: how many data sets dcmsend sent exactly as they are in the files
    print(f"dcmsend sent {verbatim} of {len(accepted)} accepted data sets verbatim")

    # what DCMTK would not send goes raw: refused with a status and a comment
    raw = send_files_raw(node, [SourceFile.read(rel) for rel in sorted(NOT_SENDABLE_BY_DCMTK)])
    assert {rel for rel, st in raw.items() if st is None} == DICOMDIRS
    assert_refused_with_comment({rel: st for rel, st in raw.items() if st is not None}, REFUSED)
    as_sc = send_files_raw(
        node,
        [replace(SourceFile.read(rel), sop_class_uid=SECONDARY_CAPTURE) for rel in DICOMDIRS],
    )
    assert_refused_with_comment(as_sc, REFUSED)

    assert_api_counts(node, accepted)
    assert_cli_lists_the_same(node)
    assert node.health().status_code == 200
    assert not node.log_problems()


def assert_refused_with_comment(
    statuses: dict[str, pydicom.Dataset | None], expected: dict[str, int]
) -> None:
    for rel, st in statuses.items():
        assert st is not None, f"{rel}: presentation context rejected"
        assert st.get("Status") == expected[rel], (rel, st)
        assert str(st.get("ErrorComment", "")).strip(), f"{rel}: failure without Error Comment"


def assert_cli_lists_the_same(node: CdsNode) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cds",
            "studies",
            "--home",
            str(node.home),
            "--json",
            "--limit",
            "1000",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cli = {s["study_key"]: s for s in json.loads(out.stdout)}
    api = {s["study_key"]: s for s in node.studies()}
    assert cli.keys() == api.keys()
    for key, s in api.items():
        for field in ("study_instance_uid", "series_count", "instance_count", "modalities"):
            assert cli[key][field] == s[field], (key, field)


def test_i2_r2_corpus_data_sets_byte_identical_to_source_files(
    node_factory: Callable[..., CdsNode],
) -> None:
    """issue 2, req. 2: each corpus data set, sent unchanged in its own transfer syntax, is
    spooled byte-identical to the source file (after the File Meta)."""
    node = node_factory()
    files = [SourceFile.read(rel) for rel in corpus_files()]
    statuses = send_files_raw(node, files)
    assert statuses.keys() == {f.rel for f in files}
    assert {rel for rel, st in statuses.items() if st is None} == DICOMDIRS

    refused = {rel: st for rel, st in statuses.items() if st is not None and st.Status != 0x0000}
    assert refused.keys() == REFUSED.keys() - DICOMDIRS
    assert_refused_with_comment(refused, REFUSED)
    refused.update(dict.fromkeys(DICOMDIRS))

    accepted = [f for f in files if f.rel not in refused]
    for f in accepted:
        stored = spooled_file_for(node.home, f.sop_uid, f.dataset)
        assert stored is not None, f"{f.rel}: no spool file named after its data set"
        assert split_part10(stored.read_bytes())[1] == f.dataset, f"{f.rel}: bytes differ"
        meta = pydicom.dcmread(stored, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == f.transfer_syntax, f.rel

    assert_api_counts(node, accepted)
    assert node.health().status_code == 200
    assert not node.log_problems()
