"""issue 17 (item 4): the viewer-compatibility matrix of docs/viewers.md, kept true.

docs/viewers.md says, per viewer and result kind (SR, SEG, GSPS, SC), whether the viewer
shows our object correctly, in part, or not at all, and names the test that checks it.
OHIF's cells are checked by test_viewer.py (../shared/viewer, headless Chromium); the
others here, on a synthetic head CT (``cds.demo_study``, no patient data) and the objects
the bundled reference models make of it, written as the node writes them:

- DICOMscope 3.6.0 (Debian package ``dicomscope``: OFFIS's viewer on DCMTK's dcmpstat),
  through its own classes (``GspsRender.java``: the viewer loads and draws as it does on
  its screen, into a PNG), on an Xvfb display (the viewer asks AWT for the screen's
  colour model). The GSPS boxes are found in the pixels the graphics changed and compared
  with the model's boxes;
- Orthanc Explorer (Orthanc 1.10, Debian package ``orthanc``): its instance preview
  (``GET /instances/{id}/preview``, the picture the Explorer shows).

A tool that is missing skips its tests with the reason; on CI (``CI=true``), where
.ci/run installs dicomscope, xvfb and orthanc, it fails them instead. The last two tests
read docs/viewers.md itself: every cell names a test that exists, and the viewer
profiles a pipeline may name (``cds.routing.viewers.SHOWS``) are the cells that say
"shows".
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

from cds.demo_study import synthetic_ct
from cds.findings import InferenceResult
from cds.inference.registry import ModelRegistry
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots
from cds.pipeline import process_series
from cds.results.encode import write_results
from cds.routing.viewers import SHOWS
from integration_tests.conftest import ORTHANC_BIN, wait_for
from integration_tests.support import REPO_ROOT, free_port, tool_env

pytestmark = pytest.mark.integration

DOC = REPO_ROOT / "docs" / "viewers.md"
HARNESS = Path(__file__).with_name("GspsRender.java")
DICOMSCOPE_JAR = Path("/usr/share/java/DICOMscope.jar")
#: DICOMscope draws PIXEL-unit graphics two pixels up and to the left of where PS3.3
#: C.10.5.1.1 puts them (its PresentationStateGraphicObject takes 1 from each coordinate,
#: as if they counted from 1, and its TransformationConverter shifts by one displayed pixel
#: more), then Java2D puts a line at x in pixel round(x): the centre of the pixel each line
#: is drawn in lies 1 to 2 pixels before the model's edge. The image itself is in place
#: (DCMTK's dcmp2pgm renders it pixel for pixel).
DICOMSCOPE_OFFSET = (-2.0, -1.0)
SIZE = 512  # the synthetic CT's matrix: the model's 256 x 256 boxes land between pixels
YELLOW = (255, 255, 0)  # the SC banner's text


def _missing(what: str, package: str) -> NoReturn:
    """Skip, or fail on CI, where .ci/run installs ``package`` and a missing tool would
    hide a broken check."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: {what} missing (Debian package {package}, installed by .ci/run)")
    pytest.skip(f"{what} missing (Debian package {package})")


# --- the objects -----------------------------------------------------------------


@dataclass(frozen=True)
class Made:
    """One model's objects on the synthetic CT: the source files by SOP Instance UID, the
    written objects by folder (SR, SEG, PR, OT) and the model's output."""

    sources: dict[str, Path]
    objects: dict[str, list[Path]]
    result: InferenceResult


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Made]:
    """cds-ref-blob-detect (GSPS, SR, SC) and cds-ref-ct-bone (SEG, SR) on a 3-slice
    512 x 512 synthetic head CT, through the node's own per-series step."""
    root = tmp_path_factory.mktemp("matrix")
    study = synthetic_ct(root / "ct", slices=3, size=SIZE)
    sources = {
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in study.files
    }
    registry = ModelRegistry([REPO_ROOT / "models"], "cpu", DeviceSlots(1, 1), warm=False)
    registry.load()
    out: dict[str, Made] = {}
    for name, kinds in (
        ("cds-ref-blob-detect", ["GSPS", "SR", "SC"]),
        ("cds-ref-ct-bone", ["SEG", "SR"]),
    ):
        model = registry.get(name)
        assert model is not None
        assert model.status == "ready", model.status
        done = process_series(ModelRunner(model, registry.slots), study.files, kinds, "en")
        assert not [o for o in done.outcomes if o.failed], done.outcomes
        objects: dict[str, list[Path]] = {}
        for path in write_results(root / "results", name, done.objects):
            objects.setdefault(path.parent.name, []).append(path)
        out[name] = Made(sources, objects, done.result)
    return out


def model_boxes(made: Made) -> dict[str, list[tuple[float, float, float, float]]]:
    """The model's boxes per source SOP Instance UID, as its output says: (row0, col0,
    row1, col1), row1 and col1 the last row and column inside the box (floats)."""
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for finding in made.result.findings:
        for ref, where in finding.per_image.items():
            if isinstance(where, list):
                boxes.setdefault(ref.sop_uid, []).extend(box for box, _ in where)
    return boxes


# --- boxes in pixels ---------------------------------------------------------------


Edges = tuple[float, float, float, float]  # left, top, right, bottom


def drawn_edges(mask: np.ndarray, edges: Edges, search: int = 4) -> tuple[tuple[int, ...], float]:
    """Where ``mask`` has the four sides of the box ``edges`` drawn: for each side, the
    pixel column (left, right) or row (top, bottom) within ``search`` pixels of it that
    ``mask`` covers the most along the side's middle; and the least of those coverages."""
    left, top, right, bottom = edges
    rows, columns = mask.shape

    def column(x: int) -> float:
        return float(mask[math.ceil(top) + search : math.floor(bottom) - search, x].mean())

    def row(y: int) -> float:
        return float(mask[y, math.ceil(left) + search : math.floor(right) - search].mean())

    found: list[int] = []
    covered: list[float] = []
    for at, coverage, size in (
        (left, column, columns),
        (top, row, rows),
        (right, column, columns),
        (bottom, row, rows),
    ):
        near = [
            v for v in range(math.floor(at) - search, math.floor(at) + search + 1) if 0 <= v < size
        ]
        best = max(near, key=lambda v: (coverage(v), -abs(v + 0.5 - at)))
        found.append(best)
        covered.append(coverage(best))
    return tuple(found), min(covered)


# --- DICOMscope --------------------------------------------------------------------


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """An Xvfb display of its own (no xauth needed), stopped after the module."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        _missing("Xvfb", "xvfb")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-nolisten", "tcp", "-screen", "0", "1024x768x24"],
        pass_fds=(write,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as ready:
        number = ready.readline().strip()  # Xvfb writes it once it accepts clients
    try:
        assert number, f"Xvfb did not start (exit {proc.poll()})"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


Render = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def dicomscope(display: str, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """``run(mode, *paths)``: GspsRender.java in DICOMscope's classes on the display."""
    java = shutil.which("java")
    if java is None or shutil.which("javac") is None:
        _missing("a Java 17 JDK (java, javac)", "openjdk-17-jdk-headless")
    jni = sorted(Path("/usr/lib").glob("*/jni/libjInterface.so"))
    if not DICOMSCOPE_JAR.exists() or not jni:
        _missing(f"DICOMscope ({DICOMSCOPE_JAR}, libjInterface.so)", "dicomscope")
    home = tmp_path_factory.mktemp("dicomscope")
    config = home / "DICOMscope.cfg"
    config.write_text(
        "[[GENERAL]]\n[APPLICATION]\n"
        f"LogDirectory = {home}\nLogLevel = ERROR\n"
        f"[DATABASE]\nDirectory = {home / 'db'}\n",
        encoding="utf-8",
    )
    (home / "db").mkdir()

    def run(mode: str, *paths: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                java,
                f"-Djava.library.path={jni[0].parent}",
                "-cp",
                str(DICOMSCOPE_JAR),
                str(HARNESS),
                mode,
                str(config),
                *map(str, paths),
            ],
            env={**os.environ, "DISPLAY": display},
            cwd=home,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    return run


def crowded(edges: Edges, others: list[Edges], margin: float = 6.0) -> bool:
    """Whether another box has a side within ``margin`` pixels of one of this box's, along
    the same stretch: then which drawn line is whose cannot be told from the pixels."""
    left, top, right, bottom = edges
    for o_left, o_top, o_right, o_bottom in others:
        beside = o_top < bottom and top < o_bottom  # vertical sides side by side
        above = o_left < right and left < o_right  # horizontal sides one above the other
        if beside and any(abs(a - b) <= margin for a in (left, right) for b in (o_left, o_right)):
            return True
        if above and any(abs(a - b) <= margin for a in (top, bottom) for b in (o_top, o_bottom)):
            return True
    return False


def _edges(edges: Edges) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in edges) + ")"


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def _blank(source: Path, dest: Path) -> Path:
    """A copy of ``source`` (same UIDs, same matrix) whose pixels are all air: black
    through any window, so that every pixel a graphic draws, even a white one where the
    source has white bone, differs from the picture without graphics."""
    ds = pydicom.dcmread(source)
    ds.PixelData = bytes(len(ds.PixelData))
    ds.save_as(dest, enforce_file_format=True)
    return dest


def test_i17_dicomscope_draws_the_gsps_boxes_where_the_model_put_them(
    made: dict[str, Made], dicomscope: Render, tmp_path: Path
) -> None:
    """DICOMscope shows our GSPS on each CT slice: every box the model gave is drawn as a
    whole rectangle of the model's size where the model put it (after DICOMscope's own
    2-pixel shift, the same for every box), with its label; under the graphics the image
    is DCMTK's rendering through the presentation state, pixel for pixel. The boxes are
    found on a black copy of each slice (white lines on white bone change no pixel)."""
    blob = made["cds-ref-blob-detect"]
    (pr,) = blob.objects["PR"]
    rows: list[str] = []
    for sop_uid, boxes in sorted(model_boxes(blob).items()):
        shot = tmp_path / f"{sop_uid[-6:]}"
        run = dicomscope("pr", pr, blob.sources[sop_uid], f"{shot}_ct.png", f"{shot}_ct_gsps.png")
        assert run.returncode == 0, run.stdout + run.stderr[-3000:]
        assert "graphic layers 1" in run.stdout, run.stdout
        if shutil.which("dcmp2pgm"):  # the image under the graphics is in place
            pgm = tmp_path / f"{sop_uid[-6:]}_dcmp2pgm.pgm"
            subprocess.run(
                ["dcmp2pgm", "-p", str(pr), str(blob.sources[sop_uid]), str(pgm)],
                check=True,
                capture_output=True,
            )
            assert np.array_equal(
                _png(Path(f"{shot}_ct.png"))[:, :, 0], np.asarray(Image.open(pgm))
            )
        black = _blank(blob.sources[sop_uid], tmp_path / f"{sop_uid[-6:]}_black.dcm")
        run = dicomscope("pr", pr, black, f"{shot}_black.png", f"{shot}_black_gsps.png")
        assert run.returncode == 0, run.stdout + run.stderr[-3000:]
        base, drawn = _png(Path(f"{shot}_black.png")), _png(Path(f"{shot}_black_gsps.png"))
        assert not base.any(), "the black copy is not black"
        changed = (base != drawn).any(axis=2)
        outlines = np.zeros_like(changed)
        # PS3.3 C.10.5.1.1: PIXEL coordinates start at the top left corner of the top left
        # pixel: a box's edges are col0, row0 and col1 + 1, row1 + 1
        models = [(c0, r0, c1 + 1, r1 + 1) for r0, c0, r1, c1 in boxes]
        for model in models:
            if crowded(model, [m for m in models if m != model]):
                rows.append(f"{sop_uid[-6:]} model {_edges(model)}: beside another, not measured")
                continue
            found, covered = drawn_edges(changed, model)
            # where each side is drawn (the centre of its pixel) less where the model put it
            off = [round(f + 0.5 - m, 2) for f, m in zip(found, model, strict=True)]
            rows.append(f"{sop_uid[-6:]} model {_edges(model)} drawn {found} offsets {off}")
            assert covered >= 0.9, rows[-1]  # every side drawn along its whole length
            low, high = DICOMSCOPE_OFFSET
            assert all(low - 0.01 <= o <= high + 0.01 for o in off), rows[-1]
            x0, y0, x1, y1 = found
            outlines[max(y0 - 1, 0) : y1 + 2, max(x0 - 1, 0) : x1 + 2] = True
        # the labels ('AI · Focal hyperdensity · 1.00', beside each box): drawn too
        assert (changed & ~outlines).sum() > 100 * len(boxes), "no label drawn"
    print(
        "DICOMscope GSPS boxes: model edges (left, top, right, bottom), drawn pixels:\n"
        + "\n".join(rows)
    )
    (tmp_path / "boxes.txt").write_text("\n".join(rows), encoding="utf-8")


def test_i17_dicomscope_shows_the_sr_as_a_text_report(
    made: dict[str, Made], dicomscope: Render, tmp_path: Path
) -> None:
    """DICOMscope's SR view (DCMTK's HTML rendering of the document) lists every
    finding of our TID 1500 SR with its 'AI · ...' label; the outlines are only numbers in
    an annex, drawn on no image."""
    blob = made["cds-ref-blob-detect"]
    (sr,) = blob.objects["SR"]
    html = tmp_path / "sr.html"
    run = dicomscope("sr", sr, html)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    text = re.sub(r"<[^>]+>", " ", html.read_text(encoding="utf-8"))
    assert "Imaging Measurement Report" in text
    boxes = sum(len(b) for b in model_boxes(blob).values())
    assert text.count("AI · Focal hyperdensity · ") == boxes


def test_i17_dicomscope_shows_the_seg_as_a_bare_mask(
    made: dict[str, Made], dicomscope: Render, tmp_path: Path
) -> None:
    """DICOMscope knows no SEG: it opens ours as a plain black-and-white image of its
    first frame, not over the CT, with no segment name or colour."""
    (seg,) = made["cds-ref-ct-bone"].objects["SEG"]
    shown = tmp_path / "seg.png"
    run = dicomscope("image", seg, shown)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    frame = pydicom.dcmread(seg).pixel_array[0] > 0
    assert np.array_equal(_png(shown)[:, :, 0] > 0, frame)


def test_i17_dicomscope_does_not_show_the_rgb_sc(
    made: dict[str, Made], dicomscope: Render, tmp_path: Path
) -> None:
    """DICOMscope shows monochrome images only: it refuses our RGB Secondary Capture."""
    sc = made["cds-ref-blob-detect"].objects["OT"][0]
    run = dicomscope("image", sc, tmp_path / "sc.png")
    assert run.returncode == 3, run.stdout + run.stderr[-3000:]
    assert "image refused" in run.stdout


# --- Orthanc Explorer ------------------------------------------------------------


@pytest.fixture(scope="module")
def explorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A throw-away Orthanc (HTTP only, loopback): the server Orthanc Explorer shows."""
    if not ORTHANC_BIN.exists():
        _missing(f"Orthanc ({ORTHANC_BIN})", "orthanc")
    work = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "cds-viewer-matrix",
        "HttpPort": port,
        "DicomServerEnabled": False,
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "storage"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
    }
    (work / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    with (work / "orthanc.log").open("ab") as log:
        proc = subprocess.Popen(
            [str(ORTHANC_BIN), str(work / "orthanc.json")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=work,
            env=tool_env(),
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"Orthanc exited:\n{(work / 'orthanc.log').read_text(errors='replace')}")
        try:
            return client.get("/system").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, 0.05, "Orthanc to answer /system")
        yield client
    finally:
        client.close()
        proc.kill()
        proc.wait(10)


def preview(explorer: httpx.Client, path: Path) -> httpx.Response:
    """Store ``path`` and ask for the picture Orthanc Explorer shows of it."""
    stored = explorer.post("/instances", content=path.read_bytes())
    assert stored.status_code == 200, stored.text
    return explorer.get(f"/instances/{stored.json()['ID']}/preview")


def test_i17_orthanc_explorer_shows_the_sc_with_its_boxes_and_banner(
    made: dict[str, Made], explorer: httpx.Client
) -> None:
    """Orthanc Explorer's preview of each SC is our SC pixel for pixel: the model's boxes
    burned in at the model's place (the pixels each box covers, outlined in the
    finding's colour) and the advisory banner across the top (yellow text)."""
    blob = made["cds-ref-blob-detect"]
    boxes = model_boxes(blob)
    rows: list[str] = []
    for path in blob.objects["OT"]:
        answer = preview(explorer, path)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/png"
        shown = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))
        ds = pydicom.dcmread(path)
        assert np.array_equal(shown, ds.pixel_array), "the preview is not the SC's pixels"
        source = str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)
        coloured = (shown.max(axis=2) - shown.min(axis=2)) > 0  # the CT itself is grey
        for r0, c0, r1, c1 in boxes[source]:
            # burned in: the outline of the pixels the box covers, its first and last
            # column (col0, col1) and row (row0, row1)
            inside = (math.floor(c0), math.floor(r0), math.floor(c1), math.floor(r1))
            colour = tuple(shown[inside[1], inside[0]])
            mask = (shown == colour).all(axis=2) & coloured
            found, covered = drawn_edges(mask, (c0, r0, c1 + 1, r1 + 1))
            rows.append(f"{source[-6:]} model {_edges((c0, r0, c1 + 1, r1 + 1))} drawn {found}")
            assert found == inside, rows[-1]
            assert covered == 1.0, rows[-1]
        band = shown[: max(24, shown.shape[0] // 12)]
        assert (band == YELLOW).all(axis=2).sum() > 100, "no banner text at the top"
    print(
        "Orthanc Explorer SC boxes: model edges (left, top, right, bottom), drawn pixels:\n"
        + "\n".join(rows)
    )


def test_i17_orthanc_explorer_shows_the_seg_as_a_bare_mask(
    made: dict[str, Made], explorer: httpx.Client
) -> None:
    """Orthanc Explorer previews our SEG as a black-and-white picture of its first frame,
    on its own: not over the CT, no segment name or colour."""
    (seg,) = made["cds-ref-ct-bone"].objects["SEG"]
    answer = preview(explorer, seg)
    assert answer.status_code == 200, answer.text
    shown = np.asarray(Image.open(io.BytesIO(answer.content)))
    assert shown.ndim == 2
    assert set(np.unique(shown)) == {0, 255}
    assert np.array_equal(shown > 0, pydicom.dcmread(seg).pixel_array[0] > 0)


def test_i17_orthanc_explorer_does_not_show_the_sr_or_the_gsps(
    made: dict[str, Made], explorer: httpx.Client
) -> None:
    """Orthanc Explorer has no picture of an SR or a presentation state (its preview
    answers 415 Unsupported Media Type): it lists their attributes only."""
    blob = made["cds-ref-blob-detect"]
    for kind in ("SR", "PR"):
        (path,) = blob.objects[kind]
        assert preview(explorer, path).status_code == 415, kind


# --- docs/viewers.md --------------------------------------------------------------

KINDS = ("SR", "SEG", "GSPS", "SC")
VERDICTS = ("shows", "partly", "no")


def matrix() -> dict[str, dict[str, str]]:
    """docs/viewers.md's matrix: viewer profile -> kind -> the cell's text."""
    lines = DOC.read_text(encoding="utf-8").split("## The matrix", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    table = lines[start:end]  # the first table under the heading
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert head == ["viewer", *KINDS], head
    out: dict[str, dict[str, str]] = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`([a-z-]+)`", cells[0])
        assert names, f"no viewer profile (`name`, last in the cell) in {cells[0]!r}"
        out[names[-1]] = dict(zip(KINDS, cells[1:], strict=True))
    return out


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.name
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    }


def test_i17_every_cell_of_the_matrix_names_a_test_that_exists() -> None:
    """Each cell of docs/viewers.md says shows, partly or no, and names the test that
    keeps it true (`file.py::test_name`), which must exist."""
    cells = matrix()
    assert set(cells) >= {"ohif", "orthanc-explorer", "dicomscope"}
    for viewer, row in cells.items():
        for kind, text in row.items():
            verdict = text.split()[0].strip("*") if text else ""
            assert verdict in VERDICTS, (
                f"{viewer} x {kind}: {text!r} starts with none of {VERDICTS}"
            )
            refs = re.findall(r"`([\w/]+\.py)::(test_\w+)`", text)
            assert refs, f"{viewer} x {kind}: no test named"
            for file, name in refs:
                path = REPO_ROOT / "integration_tests" / file
                assert path.exists(), f"{viewer} x {kind}: {path} missing"
                assert name in _test_names(path), f"{viewer} x {kind}: no {name} in {file}"


def test_i17_viewer_profiles_are_the_cells_that_say_shows() -> None:
    """The profiles a pipeline may name (``viewer: ohif``) show exactly the kinds the
    matrix says they show."""
    cells = matrix()
    shows = {
        viewer: frozenset(k for k, text in row.items() if text.startswith("**shows"))
        for viewer, row in cells.items()
    }
    assert shows == SHOWS
