"""``cds demo``: the whole round trip on one machine, on a synthetic study.

A throw-away Orthanc plays the hospital PACS: a generated CT study (no patient
data: the patient is ``DEMO^CDS``) is uploaded to it, Orthanc sends it to a cds
node running in this process (C-STORE, exactly as a PACS would), the node's
routing rules run the bundled reference models, and the advisory results (SEG,
SR, GSPS, SC) are delivered back into the same study in Orthanc. Everything
listens on 127.0.0.1 on free ports, in a temporary folder that is removed at
the end (unless ``--keep``).

Without Orthanc the node still receives the study (sent by cds' own C-STORE
SCU) and runs the models; the demo then lists the result files it wrote.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from cds.config import (
    AssemblySettings,
    DeliverySettings,
    DicomSettings,
    HttpSettings,
    InferenceSettings,
    LogSettings,
    ResultsSettings,
    RoutingSettings,
    Settings,
    SpoolSettings,
)
from cds.delivery.scu import store_batch
from cds.domain import DeliveryState, StudyState
from cds.logging import configure_logging
from cds.orchestrator import Node
from cds.routing.rules import Destination

DEMO_PATIENT_NAME = "DEMO^CDS"
DEMO_PATIENT_ID = "CDS-DEMO-0001"
#: models the demo's routing file runs (bundled in the repository's models/)
DEMO_MODELS = ("cds-ref-ct-bone", "cds-ref-blob-detect")
ORTHANC_AE = "ORTHANC"
FOV_MM = 240.0  # field of view of the synthetic slices, whatever their size

Echo = Callable[[str], None]


# --- the synthetic study ---------------------------------------------------


@dataclass(frozen=True)
class DemoStudy:
    study_uid: str
    series_uid: str
    files: list[Path]


def phantom_slice(index: int, slices: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One axial slice of a head-like phantom, in HU: air, soft tissue (35 HU), a
    skull ring (~1000 HU, what ``cds-ref-ct-bone`` segments) and, in the middle
    third of the slices, a sphere of 190 HU (what ``cds-ref-blob-detect`` boxes)."""
    c = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    y, x = np.meshgrid(c, c, indexing="ij")
    t = (index + 0.5) / slices * 2 - 1  # slice position in [-1, 1]
    shrink = float(np.sqrt(max(0.2, 1 - 0.6 * t * t)))  # the head narrows at both ends
    r = np.sqrt((x / (0.78 * shrink)) ** 2 + (y / (0.88 * shrink)) ** 2)
    hu = np.full((size, size), -1000.0)
    hu[r <= 1.0] = 1000.0  # skull
    hu[r <= 0.9] = 35.0  # brain-like soft tissue
    blob_r2 = 0.12**2 - (t * 0.4) ** 2  # a sphere of radius 0.12 around the middle slice
    if blob_r2 > 0.03**2:
        hu[(x - 0.25) ** 2 + (y + 0.2) ** 2 <= blob_r2] = 190.0
    noise = rng.normal(0.0, 4.0, size=(size, size))
    return np.asarray(hu + np.where(r <= 1.0, noise, 0.0))


def _ct_header(study_uid: str, series_uid: str, frame_uid: str, size: int) -> Dataset:
    now = datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = "DEMO"
    ds.Modality = "CT"
    ds.Manufacturer = "cds demo (synthetic)"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CDS DEMO - synthetic head CT"
    ds.SeriesDescription = "Synthetic head CT 2.5 mm"
    ds.PatientName = DEMO_PATIENT_NAME
    ds.PatientID = DEMO_PATIENT_ID
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "O"
    ds.PatientAge = "045Y"
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = 2.5
    ds.KVP = 120
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [FOV_MM / size, FOV_MM / size]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    return ds


def synthetic_ct(
    folder: Path, slices: int = 40, size: int = 128, *, study_uid: str | None = None
) -> DemoStudy:
    """Write a synthetic axial CT series (one study, ``slices`` files of ``size`` x
    ``size``, 16-bit, Explicit VR Little Endian) into ``folder``; fresh UIDs unless
    ``study_uid`` is given. Routable by deploy/routing.example.yaml's adult CT rule."""
    if slices < 1 or size < 32:
        raise ValueError(f"need at least 1 slice of at least 32 x 32 (got {slices}, {size})")
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    header = _ct_header(study_uid, series_uid, generate_uid(), size)
    rng = np.random.default_rng(20261125)
    origin = -FOV_MM / 2
    files = []
    for n in range(slices):
        ds = Dataset()
        ds.update(header)
        sop_uid = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = n + 1
        z = -n * 2.5
        ds.ImagePositionPatient = [origin, origin, z]
        ds.SliceLocation = z
        hu = phantom_slice(n, slices, size, rng)
        ds.PixelData = np.clip(hu + 1024, 0, 65535).astype("<u2").tobytes()
        path = folder / f"ct_{n + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return DemoStudy(study_uid, series_uid, files)


def demo_routing(destination_port: int | None) -> dict[str, Any]:
    """The demo's routing file: deploy/routing.example.yaml's adult CT rule, both CT
    reference models, every result kind, sent to Orthanc when there is one."""
    dests = ["pacs"] if destination_port is not None else []
    doc: dict[str, Any] = {
        "destinations": {},
        "pipelines": {
            "ct-bone": {
                "model": "cds-ref-ct-bone",
                "results": ["SEG", "SR"],
                "destinations": dests,
            },
            "ct-hyperdensity": {
                "model": "cds-ref-blob-detect",
                "results": ["GSPS", "SR", "SC"],
                "destinations": dests,
            },
        },
        "rules": [
            {
                "name": "adult CT",
                "priority": 10,
                "match": [
                    {"attribute": "Modality", "equals": "CT"},
                    {"attribute": "SliceThickness", "range": {"max": 5}},
                ],
                "exclude": [
                    {"attribute": "PatientAge", "range": {"max": 17.99}},
                    {"attribute": "ImageType", "in": ["LOCALIZER", "DERIVED"]},
                ],
                "select": "thinnest",
                "pipelines": ["ct-bone", "ct-hyperdensity"],
            }
        ],
    }
    if destination_port is not None:
        doc["destinations"]["pacs"] = {
            "ae_title": ORTHANC_AE,
            "host": "127.0.0.1",
            "port": destination_port,
        }
    return doc


# --- helpers -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_orthanc() -> Path | None:
    found = shutil.which("Orthanc")
    for candidate in (Path("/usr/sbin/Orthanc"), Path(found) if found else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def find_models(given: Path | None) -> Path | None:
    """The folder holding the demo's models: ``given``, ./models, or the source tree's."""
    candidates = (
        [given] if given is not None else [Path("models"), Path(__file__).parents[1] / "models"]
    )
    for c in candidates:
        if all((c / name / "manifest.yaml").is_file() for name in DEMO_MODELS):
            return c.resolve()
    return None


class OrthancPacs:
    """A throw-away Orthanc on loopback: its REST API with urllib (no extra dependency)."""

    def __init__(self, binary: Path, workdir: Path, node_ae: str, node_port: int) -> None:
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "cds-demo",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AE,
            "DicomModalities": {"cds": [node_ae, "127.0.0.1", node_port]},
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
        }
        (workdir / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
        self._log = (workdir / "orthanc.log").open("ab")
        self.log_path = workdir / "orthanc.log"
        self.proc = subprocess.Popen(
            [str(binary), str(workdir / "orthanc.json")],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "1"},
        )

    def call(self, method: str, path: str, body: bytes | None = None, timeout: float = 300) -> Any:
        req = urllib.request.Request(self.url + path, data=body, method=method)  # noqa: S310 - loopback URL we built
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            return json.loads(r.read() or b"null")

    def wait_ready(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.proc.returncode}); see {self.log_path}")
            try:
                return str(self.call("GET", "/system", timeout=2)["Version"])
            except (OSError, urllib.error.URLError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not answer in {timeout:.0f} s") from None
                time.sleep(0.1)

    def series(self, study_id: str) -> list[dict[str, Any]]:
        out = []
        for s in self.call("GET", f"/studies/{study_id}/series"):
            tags = s.get("MainDicomTags", {})
            out.append(
                {
                    "modality": tags.get("Modality", "?"),
                    "number": tags.get("SeriesNumber", ""),
                    "description": tags.get("SeriesDescription", ""),
                    "instances": len(s.get("Instances", [])),
                }
            )
        return sorted(out, key=lambda s: (s["modality"] != "CT", s["modality"], s["description"]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # throw-away state: no graceful stop needed
            self.proc.wait(10)
        self._log.close()


# --- the run -----------------------------------------------------------------


@dataclass
class DemoOutcome:
    ok: bool
    series: list[dict[str, Any]] = field(default_factory=list)  # in Orthanc, or written locally
    problems: list[str] = field(default_factory=list)


@contextmanager
def _workdir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="cds-demo-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def demo_settings(home: Path, routing: Path, models: Path, lang: str) -> Settings:
    """The node's settings: loopback, free ports, a 2 s quiet time, quick retries."""
    return Settings(
        home=home,
        dicom=DicomSettings(ae_title="CDS", host="127.0.0.1", port=free_port()),
        http=HttpSettings(host="127.0.0.1", port=free_port()),
        spool=SpoolSettings(min_free_mb=64),
        assembly=AssemblySettings(quiet_time_s=2, check_interval_s=0.2),
        routing=RoutingSettings(file=routing, reload_interval_s=60),
        inference=InferenceSettings(model_dirs=[models]),
        results=ResultsSettings(language="fr" if lang == "fr" else "en"),
        delivery=DeliverySettings(backoff_initial_s=1, backoff_max_s=5, poll_interval_s=0.2),
        log=LogSettings(format="console", level="warning"),
    )


class _Demo:
    """One run: the study, the optional Orthanc, the node; ``close`` stops them."""

    def __init__(self, work: Path, echo: Echo, settings: Settings) -> None:
        self.work = work
        self.echo = echo
        self.settings = settings
        self.pacs: OrthancPacs | None = None
        self.node: Node | None = None
        self.orthanc_study = ""
        self.study_key = ""

    def start(self, binary: Path | None) -> None:
        if binary is not None:
            self.pacs = OrthancPacs(binary, self.work / "orthanc", "CDS", self.settings.dicom.port)
            version = self.pacs.wait_ready()
            self.echo(
                f"[1/5] Orthanc {version} plays the PACS: {self.pacs.url}/app/explorer.html, "
                f"DICOM {ORTHANC_AE}@127.0.0.1:{self.pacs.dicom_port}"
            )
        else:
            self.echo(
                "[1/5] Orthanc not found (/usr/sbin/Orthanc or Orthanc on PATH): the results "
                "stay in the node's results folder. To see them delivered into a PACS, install "
                "Orthanc (Debian/Ubuntu: sudo apt-get install orthanc) and run cds demo again."
            )
        routing = demo_routing(self.pacs.dicom_port if self.pacs else None)
        assert self.settings.routing.file is not None
        self.settings.routing.file.write_text(
            yaml.safe_dump(routing, sort_keys=False), encoding="utf-8"
        )
        self.node = Node(self.settings)
        self.node.start()
        loaded = [f"{m.name} {m.version} on {m.provider}" for m in self.node.models.all()]
        self.echo(
            f"[2/5] cds node: DICOM CDS@127.0.0.1:{self.settings.dicom.port}, "
            f"models: {', '.join(loaded)}"
        )

    def send(self, study: DemoStudy) -> None:
        if self.pacs is not None:
            ids = {
                self.pacs.call("POST", "/instances", f.read_bytes())["ParentStudy"]
                for f in study.files
            }
            (self.orthanc_study,) = ids
            job = self.pacs.call("POST", "/modalities/cds/store", self.orthanc_study.encode())
            failed = int(job.get("FailedInstancesCount", 0)) if isinstance(job, dict) else 0
            self.echo(
                f"[3/5] {len(study.files)} instances uploaded to Orthanc, which sent the study "
                f"to cds (C-STORE){f': {failed} failed' if failed else ''}"
            )
        else:
            dest = Destination(ae_title="CDS", host="127.0.0.1", port=self.settings.dicom.port)
            sent = store_batch(study.files, dest, "DEMO", 30)
            self.echo(f"[3/5] {sum(o.ok for o in sent)} instances sent to cds (C-STORE)")

    def wait(self, study_uid: str, timeout: float) -> str:
        """Until the node finished the study and its deliveries; returns the study state."""
        assert self.node is not None
        store = self.node.store
        deadline = time.monotonic() + timeout
        state = "not received"
        while time.monotonic() < deadline:
            found = [s for s in store.list_studies(None, limit=1000) if s.study_uid == study_uid]
            if found:
                self.study_key, state = found[0].study_key, found[0].state.value
                finished = found[0].state in (StudyState.DONE, StudyState.FAILED)
                pending = store.list_deliveries(self.study_key, DeliveryState.PENDING)
                if finished and not pending:
                    break
            time.sleep(0.2)
        else:
            state += f" (gave up after {timeout:.0f} s)"
        jobs = ", ".join(
            f"{j.kind.split(':')[0]} {j.state.value}"
            for j in store.list_jobs(study_key=self.study_key or None)
        )
        self.echo(
            f"[4/5] cds: study {self.study_key[:12]}... {state} after the "
            f"{self.settings.assembly.quiet_time_s:.0f} s quiet time; jobs: {jobs or 'none'}"
        )
        return state

    def report(self, seconds: float) -> DemoOutcome:
        """What was delivered and what Orthanc now holds, or what was written locally."""
        assert self.node is not None
        key = self.study_key
        deliveries = self.node.store.list_deliveries(key, limit=10_000) if key else []
        by_state: dict[str, int] = {}
        problems = []
        for d in deliveries:
            by_state[d.state.value] = by_state.get(d.state.value, 0) + 1
            if d.state is not DeliveryState.DELIVERED and d.last_error:
                problems.append(f"{d.modality} to {d.destination}: {d.state.value}: {d.last_error}")
        if self.pacs is None:
            root = self.settings.results_path
            files = sorted((root / key).rglob("*.dcm")) if key else []
            self.echo(f"[5/5] {len(files)} result object(s) written in {root / key}:")
            series = []
            for folder in sorted({f.parent for f in files}):
                n = sum(f.parent == folder for f in files)
                series.append({"modality": folder.name, "instances": n, "description": ""})
                self.echo(f"  {folder.name:4} {n:3} object(s) in {folder}")
        else:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())) or "none"
            self.echo(f"[5/5] deliveries to Orthanc: {counts} ({seconds:.1f} s after the upload)")
            series = self.pacs.series(self.orthanc_study)
            self.echo(f"Orthanc now holds in the study ({self.orthanc_study}):")
            for s in series:
                self.echo(f"  {s['modality']:4} {s['instances']:3} instance(s)  {s['description']}")
            self.echo(f"Open it: {self.pacs.url}/app/explorer.html#study?uuid={self.orthanc_study}")
        missing = {"SR", "SEG"} - {s["modality"] for s in series}
        if missing:
            where = "Orthanc holds" if self.pacs is not None else "the node wrote"
            problems.append(f"{where} no {' and no '.join(sorted(missing))} result")
        for p in problems:
            self.echo(f"  problem: {p}")
        return DemoOutcome(not missing, series, problems)

    def close(self) -> None:
        if self.node is not None:
            self.node.stop()
        if self.pacs is not None:
            self.pacs.stop()


def run_demo(
    echo: Echo,
    *,
    slices: int = 40,
    size: int = 128,
    models: Path | None = None,
    lang: str = "en",
    timeout: float = 180,
    orthanc: Path | bool = True,
    wait_forever: Callable[[], None] | None = None,
) -> DemoOutcome:
    """Run the round trip and report through ``echo``. ``orthanc``: True = find it,
    False = run without it, a path = that binary. ``wait_forever`` (``--keep``) is
    called once the results are shown; it returns when the user wants to stop."""
    model_dir = find_models(models)
    if model_dir is None:
        return DemoOutcome(
            False,
            problems=[
                f"models {' and '.join(DEMO_MODELS)} not found in {models or './models'}: "
                "run cds demo from the repository root, or give --models DIR"
            ],
        )
    binary = find_orthanc() if orthanc is True else (orthanc or None)
    configure_logging("console", "warning")
    with _workdir() as work:
        package_dir = work / "models"  # only the demo's models: quicker to load
        package_dir.mkdir()
        for name in DEMO_MODELS:
            (package_dir / name).symlink_to(model_dir / name, target_is_directory=True)
        study = synthetic_ct(work / "study", slices, size)
        echo(
            f"cds demo: a synthetic CT study ({slices} slices of {size}x{size}, patient "
            f"{DEMO_PATIENT_NAME}, no real patient data) in {work}"
        )
        demo = _Demo(
            work, echo, demo_settings(work / "home", work / "routing.yaml", package_dir, lang)
        )
        try:
            demo.start(binary if isinstance(binary, Path) else None)
            t0 = time.monotonic()
            demo.send(study)
            demo.wait(study.study_uid, timeout)
            outcome = demo.report(time.monotonic() - t0)
            if wait_forever is not None and outcome.ok:
                echo(f"Look: cds studies --home {demo.settings.home}; Ctrl-C stops everything.")
                wait_forever()
            return outcome
        finally:
            demo.close()
