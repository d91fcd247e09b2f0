"""``cds conformance``: the DICOM conformance statement is generated from the code.

Requirement (issue 24, item 3): the committed docs/conformance.md is what the command
writes (CI catches a stale file), its prose is kept, and what it says is read from the
code: a SOP Class the listener stops accepting leaves the statement.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from typer.testing import CliRunner

from cds.certify import conformance_md
from cds.certify.conformance import Facts, collect
from cds.cli import app
from cds.ingest.scp import DicomListener
from cds.ingest.server import NodeAE

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "conformance.md"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture(scope="module")
def facts() -> Facts:
    return collect()


def test_committed_statement_is_what_cds_conformance_writes(tmp_path: Path) -> None:
    copy = tmp_path / "conformance.md"
    copy.write_text(COMMITTED.read_text(encoding="utf-8"), encoding="utf-8")
    res = CliRunner().invoke(app, ["conformance", "--out", str(copy)])
    assert res.exit_code == 0, res.output
    assert copy.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8"), (
        "docs/conformance.md is stale: run `cds conformance --out docs/conformance.md`"
    )
    assert "up to date" in res.output


def test_check_fails_on_a_stale_file_naming_it(tmp_path: Path) -> None:
    stale = tmp_path / "conformance.md"
    text = COMMITTED.read_text(encoding="utf-8")
    stale.write_text(text.replace("| `dicom.port` | `11112` |", "| `dicom.port` | `104` |"))
    res = CliRunner().invoke(app, ["conformance", "--out", str(stale), "--check"])
    assert res.exit_code == 1
    assert f"{stale}: not up to date" in res.output
    assert "`104`" in stale.read_text(encoding="utf-8")  # --check writes nothing


def test_prose_is_kept_and_generated_parts_replaced(facts: Facts) -> None:
    begin = conformance_md.BEGIN.format(name="scp")
    end = conformance_md.END.format(name="scp")
    text = f"# Ours\n\nWritten by people.\n\n{begin}\nold table\n{end}\n\nMore prose.\n"
    new = conformance_md.update(text, facts)
    assert new.startswith("# Ours\n\nWritten by people.\n\n")
    assert "old table" not in new
    assert "\nMore prose.\n" in new
    assert "Verification SOP Class `1.2.840.10008.1.1` | SCP |" in new
    # the parts the file lacked are appended, each under a heading
    for name in conformance_md.PARTS:
        assert new.count(conformance_md.BEGIN.format(name=name)) == 1


def test_new_file_gets_every_part(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "statement.md"
    res = CliRunner().invoke(app, ["conformance", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert "Comprehensive 3D SR Storage `1.2.840.10008.5.1.4.1.1.88.34`" in text
    assert "Key Object Selection Document Storage" in text
    assert "`POST /dicomweb/studies`" in text


def test_what_is_sent_comes_from_the_objects_made(facts: Facts) -> None:
    sent = {s.sop_class: s for s in facts.sent}
    assert set(sent) == {
        "1.2.840.10008.5.1.4.1.1.88.34",  # SR
        "1.2.840.10008.5.1.4.1.1.66.4",  # SEG
        "1.2.840.10008.5.1.4.1.1.11.1",  # GSPS
        "1.2.840.10008.5.1.4.1.1.7",  # SC
        "1.2.840.10008.5.1.4.1.1.88.59",  # KOS
    }
    assert all(s.charset == "ISO_IR 192" for s in sent.values())
    assert all("1.2.840.10008.1.2" in s.transfer_syntaxes for s in sent.values())


def _restricted_listener(
    original: Callable[[DicomListener], NodeAE],
) -> Callable[[DicomListener], NodeAE]:
    def make(self: DicomListener) -> NodeAE:
        ae = original(self)
        ae.remove_supported_context(Verification)
        ae.add_supported_context(CTImageStorage)
        _config.UNRESTRICTED_STORAGE_SERVICE = False
        return ae

    return make


def test_a_sop_class_the_listener_stops_accepting_leaves_the_statement(
    monkeypatch: pytest.MonkeyPatch, facts: Facts
) -> None:
    before = conformance_md.update(conformance_md.SKELETON, facts)
    assert "`1.2.840.10008.1.1`" in before
    assert f"`{MR_IMAGE_STORAGE}`" in before  # listed: any storage SOP Class is accepted
    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", True)  # restored after
    monkeypatch.setattr(DicomListener, "_make_ae", _restricted_listener(DicomListener._make_ae))
    after = conformance_md.update(conformance_md.SKELETON, collect())
    assert "`1.2.840.10008.1.1`" not in after
    assert f"`{MR_IMAGE_STORAGE}`" not in after
    assert "**any storage SOP Class**" not in after
    assert "CT Image Storage `1.2.840.10008.5.1.4.1.1.2` | SCP |" in after
