"""issue 7: the 128-byte preamble of every stored or exported file is zeroed
(DICOM preamble polyglots, CVE-2019-11687). Exports: tests/privacy/test_export.py;
results written by the pipeline: tests/test_canary_all.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from cds.orchestrator import Node

POLYGLOT = (b"MZ\x90\x00" + b"#!/bin/sh\necho this preamble runs\nexit 0\n").ljust(128, b"A")


def _polyglot_copy(src: Path, dst: Path) -> Path:
    raw = src.read_bytes()
    assert raw[128:132] == b"DICM"
    dst.write_bytes(POLYGLOT + raw[128:])
    assert dcmread(dst).preamble == POLYGLOT  # a valid DICOM file, and a script
    return dst


def test_received_polyglot_is_stored_with_zeroed_preamble(
    node: Node, tmp_path: Path, corpus: Path
) -> None:
    """DCMTK's storescu sends a file whose preamble is a script; the spooled file's is zeros."""
    storescu = Path("/usr/bin/storescu")
    if not storescu.exists():
        pytest.skip("DCMTK storescu not installed")
    f = _polyglot_copy(corpus / "ct" / "CT_small.dcm", tmp_path / "polyglot.dcm")
    host, port = node.listener.address
    r = subprocess.run(
        [str(storescu), "-aec", node.settings.dicom.ae_title, host, str(port), str(f)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    (stored,) = node.spool.iter_files()
    raw = stored.read_bytes()
    assert raw[:128] == b"\0" * 128
    assert raw[128:132] == b"DICM"


def test_reindexed_polyglot_is_rewritten_with_zeroed_preamble(
    node: Node, tmp_path: Path, corpus: Path
) -> None:
    """A file found in the spool at start (not written by this node) is re-indexed through
    the receiver, which writes it again with a zeroed preamble and drops the stray copy."""
    from cds.requestor import PauseSafeAE

    ae = PauseSafeAE(ae_title="TESTSCU")
    ds = dcmread(corpus / "ct" / "CT_small.dcm")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    host, port = node.listener.address
    a = ae.associate(host, port, ae_title=node.settings.dicom.ae_title)
    assert a.send_c_store(ds).Status == 0
    a.release()
    (stored,) = node.spool.iter_files()
    stray = stored.with_name("stray.dcm")
    shutil.copyfile(stored, stray)
    stray.write_bytes(POLYGLOT + stray.read_bytes()[128:])
    stored.unlink()  # the store still names it: the receiver writes it again
    assert node.reconcile() == 1
    assert not stray.exists()
    assert list(node.spool.iter_files()) == [stored]
    assert stored.read_bytes()[:128] == b"\0" * 128
