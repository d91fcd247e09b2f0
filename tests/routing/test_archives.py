"""issue 22: ``archives`` in the routing file, DIMSE or DICOMweb, each error by its path."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cds.cli import app
from cds.destinations import DicomWebArchive, DimseArchive
from cds.routing.rules import RoutingFileError, parse_routing

SRC = "routing.yaml"


def test_both_kinds_of_archive_parse() -> None:
    rf = parse_routing(
        {
            "archives": {
                "pacs": {"ae_title": "ARCHIVE", "host": "10.0.0.7", "port": 104},
                "c-get": {"ae_title": "A", "host": "h", "port": 11112, "retrieve": "get",
                          "tls": {"enabled": True}},
                "web": {"dicomweb_url": "https://archive.local/dicom-web/",
                        "auth": {"bearer_token_file": "/etc/cds/a.token"}},
            }
        },
        SRC,
    )  # fmt: skip
    pacs, get, web = rf.archives["pacs"], rf.archives["c-get"], rf.archives["web"]
    assert isinstance(pacs, DimseArchive)
    assert (pacs.target, pacs.retrieve) == ("ARCHIVE@10.0.0.7:104", "move")
    assert isinstance(get, DimseArchive)
    assert (get.retrieve, get.describe()) == ("get", "A@h:11112 (TLS)")
    assert isinstance(web, DicomWebArchive)
    assert web.dicomweb_url == "https://archive.local/dicom-web"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"ae_title": "A", "host": "h", "port": 0}, "archives.x.port: Input should be greater"),
        ({"ae_title": "A" * 17, "host": "h", "port": 1}, "archives.x.ae_title:"),
        ({"ae_title": "A", "host": "h", "port": 1, "retrieve": "push"}, "archives.x.retrieve:"),
        ({"ae_title": "A", "host": "h", "port": 1, "aet": "B"}, "archives.x.aet: unknown field"),
        ({"dicomweb_url": "ftp://h"}, "archives.x.dicomweb_url: must be an http"),
        ({"dicomweb_url": "https://u:p@h"}, "archives.x.dicomweb_url: credentials"),
    ],
)
def test_a_bad_archive_is_refused_naming_its_field(entry: dict[str, object], message: str) -> None:
    with pytest.raises(RoutingFileError) as err:
        parse_routing({"archives": {"x": entry}}, SRC)
    assert any(e.startswith(f"{SRC}: {message}") for e in err.value.errors), err.value.errors


def test_config_check_accepts_a_valid_archive_and_names_a_bad_field(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("archives:\n  pacs: {ae_title: ARCHIVE, host: 127.0.0.1, port: 104}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("archives:\n  pacs: {ae_title: ARCHIVE, host: 127.0.0.1, port: 70000}\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "check", str(good)])
    assert ok.exit_code == 0, ok.output
    refused = runner.invoke(app, ["config", "check", str(bad)])
    assert refused.exit_code == 1
    assert "archives.pacs.port: Input should be less than or equal to 65535" in refused.output
