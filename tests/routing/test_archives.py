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


def test_a_dicomweb_archive_takes_the_stow_destinations_auth_and_tls() -> None:
    """issue 22: ``{dicomweb_url, auth, tls}`` named as a DICOMweb destination's options."""
    rf = parse_routing(
        {
            "archives": {
                "web": {"dicomweb_url": "https://pacs:8443/dicom-web",
                        "auth": {"username": "cds", "password_file": "/etc/cds/pacs.pw"},
                        "tls": {"ca_file": "/etc/cds/ca.pem", "cert_file": "/etc/cds/me.pem",
                                "key_file": "/etc/cds/me.key"}},
                "lab": {"dicomweb_url": "https://lab/dw", "tls": {"verify": False}},
            }
        },
        SRC,
    )  # fmt: skip
    web, lab = rf.archives["web"], rf.archives["lab"]
    assert isinstance(web, DicomWebArchive)
    assert web.auth is not None
    assert (web.auth.username, web.auth.password_file) == ("cds", Path("/etc/cds/pacs.pw"))
    assert (web.tls.verify, web.tls.ca_file) == (True, Path("/etc/cds/ca.pem"))
    assert web.describe() == "DICOMweb https://pacs:8443/dicom-web"
    assert isinstance(lab, DicomWebArchive)
    assert lab.tls.verify is False


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"ae_title": "A", "host": "h", "port": 0}, "archives.x.port: Input should be greater"),
        ({"ae_title": "A" * 17, "host": "h", "port": 1}, "archives.x.ae_title:"),
        ({"ae_title": "A", "host": "h", "port": 1, "retrieve": "push"}, "archives.x.retrieve:"),
        ({"ae_title": "A", "host": "h", "port": 1, "aet": "B"}, "archives.x.aet: unknown field"),
        ({"dicomweb_url": "ftp://h"}, "archives.x.dicomweb_url: must be an http"),
        ({"dicomweb_url": "https://u:p@h"}, "archives.x.dicomweb_url: credentials"),
        ({"dicomweb_url": "https://h", "retrieve": "get"}, "archives.x.retrieve: unknown field"),
        ({"dicomweb_url": "https://h", "auth": {"username": "u"}}, "archives.x.auth: basic"),
        (
            {
                "dicomweb_url": "https://h",
                "auth": {"bearer_token_file": "/t", "username": "u", "password_file": "/p"},
            },
            "archives.x.auth: give either bearer_token_file, or username and password_file",
        ),
        ({"dicomweb_url": "https://h", "auth": {"token": "abc"}}, "archives.x.auth.token:"),
        ({"dicomweb_url": "https://h", "tls": {"verify": "maybe"}}, "archives.x.tls.verify:"),
        ({"dicomweb_url": "https://h", "tls": {"enabled": True}}, "archives.x.tls.enabled:"),
        (
            {"ae_title": "A", "host": "h", "port": 1, "tls": {"verify": False}},
            "archives.x.tls.verify: unknown field",
        ),
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
