"""Fixtures of the integration tests: the real node in a subprocess, DCMTK, Orthanc.

Every node gets free loopback ports and its own home under ``tmp_path``; its
JSON log (stderr) goes to ``node.log`` beside the home and is parsed by
``CdsNode.events()``. Teardown stops every process a test started (SIGTERM,
then SIGKILL), by its own pid.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from integration_tests.support import free_port, tool_env
from tests.store.pgcluster import PgCluster

ORTHANC_BIN = Path("/usr/sbin/Orthanc")

# Defaults of the node under test; ``min_free_mb`` is low so that a small CI disk
# does not trip the watermark (the watermark test sets its own).
BASE_CONFIG: dict[str, Any] = {
    "dicom": {
        "ae_title": "CDS",
        "host": "127.0.0.1",
        "network_timeout_s": 60,
        "max_associations": 16,
        "require_called_ae_title": True,
        "allowed_calling_ae_titles": [],
    },
    "http": {"host": "127.0.0.1"},
    "spool": {"min_free_mb": 16},
    "assembly": {
        "quiet_time_s": 10,
        "quiet_time_by_calling_ae": {"ORTHANC": 3},
        "check_interval_s": 0.2,
    },
    "inference": {"model_dirs": []},  # model tests point at models/ themselves
    "log": {"format": "json", "level": "info"},
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


class CdsNode:
    """One ``python -m cds serve`` process (restartable on the same home)."""

    def __init__(self, workdir: Path, overrides: dict[str, Any]) -> None:
        self.workdir = workdir
        self.home = workdir / "home"
        self.log_path = workdir / "node.log"
        self.config_path = workdir / "cds.yaml"
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config = _merge(
            _merge(
                BASE_CONFIG,
                {"dicom": {"port": self.dicom_port}, "http": {"port": self.http_port}},
            ),
            overrides,
        )
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=10)

    @property
    def ae_title(self) -> str:
        return str(self.config["dicom"]["ae_title"])

    # --- life cycle ------------------------------------------------------
    def start(self, timeout: float = 30) -> CdsNode:
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cds",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--home",
                    str(self.home),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Poll /health until the DICOM listener is up (200 ok or degraded, 503 unavailable)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"node exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = self.http.get("/health")
                body = r.json()
                if r.status_code in (200, 503) and body.get("dicom", {}).get("listening"):
                    return dict(body)
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"node not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill9(self) -> None:
        """SIGKILL the node: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- HTTP API --------------------------------------------------------
    def health(self) -> httpx.Response:
        return self.http.get("/health")

    def studies(self) -> list[dict[str, Any]]:
        r = self.http.get("/api/studies", params={"limit": 1000})
        r.raise_for_status()
        return list(r.json())

    def study(self, study_key: str) -> dict[str, Any]:
        r = self.http.get(f"/api/studies/{study_key}")
        r.raise_for_status()
        return dict(r.json())

    def study_by_uid(self, study_uid: str) -> dict[str, Any] | None:
        for s in self.studies():
            if s["study_instance_uid"] == study_uid:
                return self.study(s["study_key"])
        return None

    def wait_study(
        self,
        study_uid: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str = "study state",
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            s = self.study_by_uid(study_uid)
            return s if s is not None and predicate(s) else None

        return dict(wait_for(check, timeout, 0.1, what))

    def deliveries(self, study_key: str, state: str | None = None) -> list[dict[str, Any]]:
        """``GET /api/deliveries`` of one study (optionally in one state)."""
        params: dict[str, Any] = {"study_key": study_key, "limit": 1000}
        if state:
            params["state"] = state
        r = self.http.get("/api/deliveries", params=params)
        r.raise_for_status()
        body = r.json()
        # the contract: {"deliveries": [{"sop_uid", ...}]}; also accept a bare list
        # and "sop_instance_uid" (what the API's DeliveryOut says)
        rows = [dict(d) for d in (body["deliveries"] if isinstance(body, dict) else body)]
        for d in rows:
            d.setdefault("sop_uid", d.get("sop_instance_uid"))
        return rows

    # --- logs ------------------------------------------------------------
    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_text().splitlines()[-lines:])

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines of every run of this node, parsed."""
        out = []
        for line in self.log_text().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def log_problems(self) -> list[str]:
        """Log lines that show a crash: tracebacks and failed handlers."""
        return [
            line
            for line in self.log_text().splitlines()
            if "Traceback" in line or "handler_failed" in line
        ]


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., CdsNode]]:
    """``make(overrides=None, start=True, name="node")`` -> a running CdsNode."""
    nodes: list[CdsNode] = []

    def make(
        overrides: dict[str, Any] | None = None, *, start: bool = True, name: str = "node"
    ) -> CdsNode:
        workdir = tmp_path / name
        workdir.mkdir()
        n = CdsNode(workdir, overrides or {})
        nodes.append(n)
        if start:
            n.start()
        return n

    yield make
    for n in nodes:
        n.stop()
        n.http.close()


@pytest.fixture
def node(node_factory: Callable[..., CdsNode]) -> CdsNode:
    """A node with the default test configuration."""
    return node_factory()


# --- Orthanc -------------------------------------------------------------


DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class Orthanc:
    """A throw-away Orthanc: the PACS. ``dicom_port`` fixes its DICOM port (e.g. one a
    node's routing file already names); ``dicomweb`` loads the DICOMweb plugin;
    ``lua_scripts`` are run by Orthanc (e.g. deploy/orthanc/forward-to-cds.lua)."""

    def __init__(
        self,
        workdir: Path,
        cds: CdsNode,
        *,
        dicom_port: int | None = None,
        dicomweb: bool = False,
        lua_scripts: tuple[Path, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.dicom_port = dicom_port if dicom_port is not None else free_port()
        self.config_path = workdir / "orthanc.json"
        self.log_path = workdir / "orthanc.log"
        config = {
            "Name": "cds-integration",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "DicomModalities": {"cds": [cds.ae_title, "127.0.0.1", cds.dicom_port]},
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
            "LuaScripts": [str(p) for p in lua_scripts],
        }
        self.config_path.write_text(json.dumps(config), encoding="utf-8")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=60)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Orthanc:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(ORTHANC_BIN), str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                env=tool_env(),
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"Orthanc exited:\n{self.log_path.read_text(errors='replace')}")
            try:
                return self.http.get("/system").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, 0.05, "Orthanc to answer /system")
        return self

    # --- REST helpers ------------------------------------------------------
    def upload(self, files: list[Path]) -> str:
        """POST every file to /instances; returns the Orthanc id of their one study."""
        studies = set()
        for f in files:
            r = self.http.post("/instances", content=f.read_bytes())
            assert r.status_code == 200, r.text
            studies.add(r.json()["ParentStudy"])
        assert len(studies) == 1, studies
        return studies.pop()

    def send_to_cds(self, study_id: str) -> dict[str, Any]:
        """Orthanc pushes the study to the node (POST /modalities/cds/store), as a PACS does."""
        r = self.http.post("/modalities/cds/store", content=study_id)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def series(self, study_id: str) -> list[dict[str, Any]]:
        """The study's series: Modality, SeriesDescription, SeriesInstanceUID and the SOP
        Instance UIDs of their instances."""
        r = self.http.get(f"/studies/{study_id}/series")
        r.raise_for_status()
        out = []
        for s in r.json():
            tags = s["MainDicomTags"]
            inst = self.http.get(f"/series/{s['ID']}/instances").json()
            out.append(
                {
                    "id": s["ID"],
                    "modality": tags.get("Modality", ""),
                    "description": tags.get("SeriesDescription", ""),
                    "series_uid": tags.get("SeriesInstanceUID", ""),
                    "sop_uids": sorted(i["MainDicomTags"]["SOPInstanceUID"] for i in inst),
                }
            )
        return out

    def study_ids(self) -> list[str]:
        return list(self.http.get("/studies").json())

    def stop(self) -> None:
        # Orthanc takes ~4 s to stop gracefully; its throw-away state needs no care
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.http.close()


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    """``make(cds_node, dicom_port=None, dicomweb=False, lua_scripts=())`` -> a running
    Orthanc whose modality ``cds`` is that node."""
    if not ORTHANC_BIN.exists():
        pytest.skip(f"Orthanc not installed ({ORTHANC_BIN} missing)")
    started: list[Orthanc] = []

    def make(
        cds: CdsNode,
        *,
        dicom_port: int | None = None,
        dicomweb: bool = False,
        lua_scripts: tuple[Path, ...] = (),
    ) -> Orthanc:
        if dicomweb and not DICOMWEB_PLUGIN.exists():
            pytest.skip(f"Orthanc DICOMweb plugin not installed ({DICOMWEB_PLUGIN} missing)")
        workdir = tmp_path / f"orthanc{len(started)}"
        workdir.mkdir()
        o = Orthanc(workdir, cds, dicom_port=dicom_port, dicomweb=dicomweb, lua_scripts=lua_scripts)
        started.append(o)
        return o.start()

    yield make
    for o in started:
        o.stop()


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster for one test (integration_tests/pgnodes.py)."""
    from integration_tests.pgnodes import throwaway_cluster  # it imports this module

    with throwaway_cluster() as cluster:
        yield cluster
