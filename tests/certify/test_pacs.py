"""issue 24, item 1: the parts of ``cds certify pacs`` that need no PACS (its texts in
both languages, the synthetic studies, the comparison of a retrieved result with what
cds sent, the warning status in the report, bad options). The whole command runs
against Orthanc in integration_tests/test_certify_pacs.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from typer.testing import CliRunner

from cds.certify import report
from cds.certify.checks import Check
from cds.certify.pacs import CHECKS, class_name
from cds.certify.pacs_data import compare
from cds.certify.pacs_study import (
    FRENCH_SERIES,
    FRENCH_STUDY,
    PATIENT_NAME,
    charset_study,
    routed_study,
)
from cds.cli import app
from cds.i18n import LANGS, text


def test_every_check_has_a_title_and_a_requirement_in_both_languages() -> None:
    for lang in LANGS:
        assert text(lang, "certify.status_warn")
        assert "{ae}" not in text(lang, "certify.pacs_title", ae="P", host="h", port=1, node="n")
        for cid in CHECKS:
            assert text(lang, f"certify.{cid}")
            assert text(lang, f"certify.{cid}_req")


def test_test_studies_hold_no_patient_data_and_valid_utf8_texts(tmp_path: Path) -> None:
    routed = routed_study(tmp_path / "r", slices=3)
    assert len(routed.files) == 3
    ds = dcmread(routed.files[0])
    assert str(ds.PatientName) == PATIENT_NAME
    assert ds.PatientBirthDate == ""
    assert ds.AccessionNumber == ""
    assert "CDS CERTIFY TEST" in ds.PatientComments
    # LO holds at most 64 characters; the texts need more than Latin-1
    assert len(FRENCH_STUDY) <= 64
    assert len(FRENCH_SERIES) <= 64
    with pytest.raises(UnicodeEncodeError):
        FRENCH_STUDY.encode("latin-1")
    cs = charset_study(tmp_path / "c")
    back = dcmread(cs.files[0])
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert back.StudyDescription == FRENCH_STUDY
    assert back.SeriesDescription == FRENCH_SERIES


def _sent(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A result file where the node writes it: <results>/<study_key>/<Modality>/<uid>.dcm."""
    src = routed_study(tmp_path / "s", slices=1).files[0]
    ds = dcmread(src)
    folder = tmp_path / "results" / "key1" / "CT"
    folder.mkdir(parents=True)
    ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    row = {
        "modality": "CT",
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "sop_class_uid": str(ds.SOPClassUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
    }
    return tmp_path / "results", row


def _encoded(path: Path) -> bytes:
    """The data set's bytes after the file meta, as a C-GET delivers them."""
    ds = dcmread(path)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return buf.getvalue()


def test_a_retrieved_result_is_compared_with_what_cds_sent(tmp_path: Path) -> None:
    results, row = _sent(tmp_path)
    (path,) = results.rglob("*.dcm")
    ds = dcmread(path)
    same, how = compare(results, row, ds, _encoded(path))
    assert same, how
    assert "byte-identical to what cds sent" in how
    changed = dcmread(path)
    changed.SeriesDescription = "changed by the PACS"
    same, how = compare(results, row, changed, b"other bytes")
    assert not same
    assert how == "C-GET: attributes differ from what cds sent: SeriesDescription"
    # without the node's results folder: its UIDs against the API's, and it says so
    same, how = compare(None, row, ds, b"")
    assert same
    assert "--config/--home" in how
    same, how = compare(None, {**row, "sop_class_uid": "1.2.3"}, ds, b"")
    assert not same


def test_a_warning_is_reported_but_does_not_fail_the_run(tmp_path: Path) -> None:
    results = [
        Check("pacs_echo_out", "pass", ["cds (CDS) -> P@h:104: C-ECHO status 0000"]),
        Check("pacs_iocm", "warn", ["the PACS does not act on IOCM rejection"]),
    ]
    titles = {lang: text(lang, "certify.pacs_title", ae="P", host="h", port=104, node="CDS")
              for lang in LANGS}  # fmt: skip
    report.write(tmp_path, {"kind": "pacs"}, titles, results)  # type: ignore[arg-type]
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["passed"] is True
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "not met (warning)" in page
    assert "non satisfait (avertissement)" in page
    assert "PACS P at h:104" in page
    assert "PACS P sur h:104" in page


def test_class_names_say_the_uid_and_its_name() -> None:
    assert class_name("1.2.840.10008.5.1.4.1.1.7") == (
        "1.2.840.10008.5.1.4.1.1.7 (Secondary Capture Image Storage)"
    )
    assert class_name("1.2.3.4") == "1.2.3.4"


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--tls-cert", "__FILE__"], "--tls-cert and --tls-key must be given together"),
        (["--tls-ca", "/nonexistent/ca.pem"], "--tls-ca: no such file /nonexistent/ca.pem"),
        (["--http", "pacs:8042"], "--http: pacs:8042 is not an http:// or https:// URL"),
        (["--node-url", "127.0.0.1:1"], "--node-url: 127.0.0.1:1 is not an http:// or https://"),
    ],
)
def test_bad_options_are_refused_naming_the_option(
    tmp_path: Path, extra: list[str], said: str
) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x", encoding="utf-8")
    extra = [str(cert) if x == "__FILE__" else x for x in extra]
    base = ["certify", "pacs", "--ae", "P", "--host", "127.0.0.1", "--port", "104"]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "o"), *extra])
    assert res.exit_code == 2, res.output
    assert said in res.output


def test_a_node_that_does_not_answer_is_named(tmp_path: Path) -> None:
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    base = ["certify", "pacs", "--ae", "P", "--host", "127.0.0.1", "--port", "104"]
    res = CliRunner().invoke(app, [*base, "--node-url", url, "--out", str(tmp_path / "o")])
    assert res.exit_code == 1, res.output
    assert f"--node-url: the cds node does not answer: GET {url}/health: ConnectError" in (
        res.output
    )
