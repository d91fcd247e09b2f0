"""issue 2: after a power loss the spool is the truth: unknown spooled files are re-indexed."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian

from cds.config import Settings
from cds.ingest.instance import encode_file_meta
from cds.ingest.spool import Spool
from cds.orchestrator import Node, load_secret

from .ingest.test_scp import CT, ct, encoded


def test_reconcile_indexes_spooled_files_missing_from_store(settings: Settings) -> None:
    # A file durably spooled whose store record was lost (e.g. power loss).
    settings.home.mkdir(parents=True)
    ds = ct()
    data = encoded(ds)
    spool = Spool(settings.spool_path, 0)
    spool.open()
    rel = Spool.relative_path("orphan", "orphan", ds.SOPInstanceUID, "0" * 64)
    spool.write(rel, encode_file_meta(CT, ds.SOPInstanceUID, ExplicitVRLittleEndian, "MOD"), data)

    node = Node(settings)
    node.start()
    try:
        (s,) = node.store.list_studies()
        assert s.study_uid == ds.StudyInstanceUID
        assert s.instance_count == 1
        assert s.calling_ae == "MOD"
        # a second start finds nothing new to index
        assert node.reconcile() == 0
    finally:
        node.stop()


def test_secret_is_created_once_private(tmp_path: Path) -> None:
    a = load_secret(tmp_path)
    assert load_secret(tmp_path) == a
    assert len(a) == 32
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600
