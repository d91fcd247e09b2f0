"""issue 24, item 1: ``cds certify pacs`` against a real Orthanc (with its DICOMweb plugin)
and a real running node. A correctly configured Orthanc passes; an Orthanc that cannot
reach the node fails naming the PACS -> cds leg; an Orthanc that drops the SOP classes
cds emits fails naming them. The command runs as a subprocess, as a PACS admin runs it.

Debian's Orthanc (1.10) has no setting that refuses SOP classes at negotiation
(``AcceptedSopClasses`` came in a later version); its Lua ``ReceivedInstanceFilter``
drops an instance while answering the C-STORE with Success, which is worse for a site
and what the certification must catch: the results are then not found by C-FIND.
Orthanc does not act on IOCM rejection notes: ``pacs_iocm`` is a warning, not a failure,
without ``--require-iocm``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml

from integration_tests.conftest import DICOMWEB_PLUGIN, ORTHANC_BIN, CdsNode, Orthanc
from integration_tests.support import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
QUIET_S = 1.0
LARGE = "12"
#: what the routing below makes: GSPS, SR and SC (Modality OT)
EMITTED = {
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}
ONLY_CT = """
function ReceivedInstanceFilter(dicom, origin, info)
  return dicom.SOPClassUID == '1.2.840.10008.5.1.4.1.1.2'
end
"""


@pytest.fixture
def pacs_factory(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    """``make(cds_node, dicom_port, lua=None)`` -> a running Orthanc with its DICOMweb
    plugin, configured as a French site's PACS should be: ``DefaultEncoding: Utf8``
    (by default Orthanc answers C-FIND in Latin-1 and loses what Latin-1 cannot hold;
    ``pacs_charset`` fails then). ``lua``: the text of a Lua script it runs."""
    if not ORTHANC_BIN.exists() or not DICOMWEB_PLUGIN.exists():
        pytest.skip(f"Orthanc or its DICOMweb plugin not installed ({ORTHANC_BIN})")
    started: list[Orthanc] = []

    def make(cds: CdsNode, dicom_port: int, lua: str | None = None) -> Orthanc:
        workdir = tmp_path / f"orthanc{len(started)}"
        workdir.mkdir()
        scripts: tuple[Path, ...] = ()
        if lua is not None:
            scripts = (workdir / "filter.lua",)
            scripts[0].write_text(lua, encoding="utf-8")
        o = Orthanc(workdir, cds, dicom_port=dicom_port, dicomweb=True, lua_scripts=scripts)
        config = json.loads(o.config_path.read_text(encoding="utf-8"))
        config["DefaultEncoding"] = "Utf8"
        o.config_path.write_text(json.dumps(config), encoding="utf-8")
        started.append(o)
        return o.start()

    yield make
    for o in started:
        o.stop()


def _node(tmp_path: Path, node_factory: Callable[..., CdsNode], pacs_port: int) -> CdsNode:
    """A node whose adult-CT rule runs cds-ref-blob-detect (GSPS, SR, SC) to ``pacs``."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "cds-ref-blob-detect").symlink_to(
        REPO / "models" / "cds-ref-blob-detect", target_is_directory=True
    )
    doc = yaml.safe_load((REPO / "deploy" / "routing.example.yaml").read_text(encoding="utf-8"))
    doc["destinations"] = {"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}}
    doc["pipelines"] = {
        "ct-hyperdensity": {
            "model": "cds-ref-blob-detect",
            "results": ["GSPS", "SR", "SC"],
            "destinations": ["pacs"],
        }
    }
    doc["rules"] = [
        {**r, "pipelines": ["ct-hyperdensity"]} for r in doc["rules"] if r["name"] == "adult CT"
    ]
    routing = tmp_path / "routing.yaml"
    routing.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return node_factory(
        {
            "assembly": {"quiet_time_s": QUIET_S, "quiet_time_by_calling_ae": {"ORTHANC": QUIET_S}},
            "inference": {"model_dirs": [str(models)], "providers": "cpu"},
            "routing": {"file": str(routing)},
            "delivery": {"poll_interval_s": 0.1, "backoff_initial_s": 0.5},
        }
    )


def _certify(
    node: CdsNode, orthanc: Orthanc, out: Path, *extra: str, http: bool = True
) -> tuple[int, str, Any]:
    rest = ["--http", f"http://127.0.0.1:{orthanc.http_port}"] if http else []
    proc = subprocess.run(
        [
            sys.executable, "-m", "cds", "certify", "pacs",
            "--ae", "ORTHANC", "--host", "127.0.0.1", "--port", str(orthanc.dicom_port),
            *rest, "--config", str(node.config_path), "--home", str(node.home),
            "--large", LARGE, "--timeout", "90", "--out", str(out), *extra,
        ],
        capture_output=True, text=True, timeout=240, check=False, cwd=node.workdir,
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return proc.returncode, proc.stdout + proc.stderr, report


def _statuses(report: Any) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}


def _evidence(report: Any, check_id: str) -> str:
    return "\n".join(next(c for c in report["checks"] if c["id"] == check_id)["evidence"])


def test_i24_certify_pacs_passes_against_a_correctly_configured_orthanc(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    pacs_factory: Callable[..., Orthanc],
) -> None:
    """Every check passes (TLS not applicable: no --tls option; IOCM a warning: Orthanc
    does not act on rejection notes), exit 0, report.html in English and French;
    the results are byte-identical to what cds sent."""
    pacs_port = free_port()
    node = _node(tmp_path, node_factory, pacs_port)
    orthanc = pacs_factory(node, pacs_port)
    out = tmp_path / "report"
    code, said, report = _certify(node, orthanc, out)
    statuses = _statuses(report)
    assert code == 0, said
    assert report["passed"] is True
    assert statuses.pop("pacs_tls") == "not_applicable"
    assert statuses.pop("pacs_iocm") == "warn", _evidence(report, "pacs_iocm")
    assert "the PACS does not act on IOCM rejection" in _evidence(report, "pacs_iocm")
    assert set(statuses.values()) == {"pass"}, statuses
    assert "byte-identical to what cds sent" in _evidence(report, "pacs_retrieve")
    assert "POST /modalities/cds/store" in _evidence(report, "pacs_to_cds")
    large = next(c for c in report["checks"] if c["id"] == "pacs_large")
    assert large["figures"]["instances"] == int(LARGE)
    assert large["figures"]["megabytes_per_second"] > 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "cds certification report" in page
    assert "Rapport de certification cds" in page
    assert "CDS^CERTIFY" not in (out / "report.json").read_text(encoding="utf-8")
    assert not node.log_problems()


def test_i24_certify_pacs_without_rest_api_moves_the_study_to_cds_by_c_move(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    pacs_factory: Callable[..., Orthanc],
) -> None:
    """Without --http the PACS sends the study by C-MOVE to the node's AE title; its own
    echo is not applicable (not tested, and the report says why); --require-iocm turns
    Orthanc's ignored rejection note into a failure."""
    pacs_port = free_port()
    node = _node(tmp_path, node_factory, pacs_port)
    orthanc = pacs_factory(node, pacs_port)
    out = tmp_path / "report"
    code, said, report = _certify(node, orthanc, out, "--require-iocm", http=False)
    statuses = _statuses(report)
    assert code == 1, said
    assert statuses["pacs_echo_in"] == "not_applicable"
    assert "no --http given" in _evidence(report, "pacs_echo_in")
    assert statuses["pacs_to_cds"] == "pass"
    assert f"C-MOVE to {node.ae_title} answered 0000" in _evidence(report, "pacs_to_cds")
    assert statuses["pacs_iocm"] == "fail"
    assert "pacs_iocm: the PACS does not act on IOCM rejection" in said
    assert [c for c, s in statuses.items() if s == "fail"] == ["pacs_iocm"]


def test_i24_certify_pacs_fails_naming_the_leg_when_orthanc_cannot_reach_the_node(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    pacs_factory: Callable[..., Orthanc],
) -> None:
    """Orthanc's modality entry for cds points to a closed port: its echo and its push
    fail, named as the PACS -> cds leg; exit 1 with the reasons on stderr."""
    pacs_port = free_port()
    node = _node(tmp_path, node_factory, pacs_port)
    closed = SimpleNamespace(ae_title=node.ae_title, dicom_port=free_port())
    orthanc = pacs_factory(cast(CdsNode, closed), pacs_port)
    out = tmp_path / "report"
    code, said, report = _certify(node, orthanc, out, "--large", "0")
    statuses = _statuses(report)
    assert code == 1, said
    assert report["passed"] is False
    assert statuses["pacs_echo_out"] == "pass"
    assert statuses["pacs_echo_in"] == statuses["pacs_to_cds"] == "fail"
    assert "pacs_to_cds: PACS -> cds: the PACS could not send the study to cds" in said
    assert "pacs_echo_in: PACS -> cds" in said
    # the study was then sent directly, so the rest of the round trip was still checked
    assert "the PACS -> cds leg was not tested" in _evidence(report, "pacs_to_cds")
    assert statuses["pacs_results"] == statuses["pacs_query"] == "pass"


def test_i24_certify_pacs_fails_naming_the_sop_classes_orthanc_drops(
    tmp_path: Path,
    node_factory: Callable[..., CdsNode],
    pacs_factory: Callable[..., Orthanc],
) -> None:
    """Orthanc keeps only CT Image Storage (a Lua filter; it still answers Success):
    the results are delivered but not found by C-FIND, each named by its SOP class."""
    pacs_port = free_port()
    node = _node(tmp_path, node_factory, pacs_port)
    orthanc = pacs_factory(node, pacs_port, ONLY_CT)
    out = tmp_path / "report"
    code, said, report = _certify(node, orthanc, out, "--large", "0")
    statuses = _statuses(report)
    assert code == 1, said
    assert statuses["pacs_store"] == statuses["pacs_to_cds"] == "pass"
    assert statuses["pacs_query"] == "fail"
    for uid, name in EMITTED.items():
        assert f"{uid} ({name})" in said, said
    assert "the PACS refused or dropped this SOP class" in said
    assert statuses["pacs_charset"] == "pass"  # CT is still stored
