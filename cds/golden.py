"""Golden cases: a model package proves, end to end, that what it says is what is shown.

A golden case is a folder of the package (listed in the manifest's ``golden``)::

    golden/<case>/input/*.dcm        one series, as a scanner would send it
    golden/<case>/expected.yaml      the findings expected, in source pixels
    golden/<case>/mask.npz           (segmentation) expected masks, one per image

``expected.yaml``::

    input: input            # the folder of the DICOM files (default)
    language: en            # language of the encoded objects (en, fr)
    min_iou: 0.9            # a box matches when its IoU reaches this
    min_dice: 0.95          # the masks match when their Dice coefficient reaches this
    findings:
      - label: 0            # output.labels[].index
        present: true
        score: 0.93         # optional, with score_tolerance (default 0.05)
        boxes:              # every box of this label: (x1, y1, x2, y2) source pixel edges
          - {image: <SOP Instance UID>, frame: 1, box: [10, 20, 30, 40]}
        mask: mask.npz      # arrays named <SOP Instance UID>_<frame>, [rows, columns] bool

``run_golden`` decodes the input, runs the model (preprocess, onnxruntime,
postprocess), encodes the manifest's result objects (SR, SEG, GSPS, SC), writes
each to bytes, reads it back with pydicom (``readback``) and compares: presence and
score from the SR; every box from the SR (and the GSPS) by IoU, no box more; masks
from the SEG by Dice, and the SR's outline of the mask by IoU with its bounding box.
"""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydicom import dcmread
from pydicom.dataset import Dataset

from cds import __version__
from cds.errors import CdsError
from cds.findings import InferenceResult
from cds.inference import manifest as mf
from cds.inference import readback as rb
from cds.inference.images import decode
from cds.inference.registry import LoadedModel
from cds.inference.runner import ModelRunner
from cds.inference.session import DeviceSlots, Session
from cds.results.encode import encode
from cds.results.text import said

EXPECTED = "expected.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedBox(_Strict):
    image: str = Field(min_length=1, description="SOP Instance UID of the image")
    frame: int = Field(1, ge=1)
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2: source edges")


class ExpectedFinding(_Strict):
    label: int = Field(ge=0, description="output.labels[].index")
    present: bool | None = None
    score: float | None = None
    score_tolerance: float = Field(0.05, ge=0)
    boxes: list[ExpectedBox] | None = None
    mask: str | None = None


class GoldenCase(_Strict):
    input: str = "input"
    language: Literal["en", "fr"] = "en"
    min_iou: float = Field(0.9, gt=0, le=1)
    min_dice: float = Field(0.95, gt=0, le=1)
    findings: list[ExpectedFinding] = Field(min_length=1)


def load_case(folder: Path) -> GoldenCase:
    """Raises ValueError naming expected.yaml's path at fault."""
    path = folder / EXPECTED
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return GoldenCase.model_validate(data)
    except OSError as exc:
        raise ValueError(f"{EXPECTED}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{EXPECTED}: not valid YAML") from exc
    except ValidationError as exc:
        errs = [f"{EXPECTED}: {mf.path_of(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ValueError("; ".join(errs)) from exc


def roundtrip(objects: list[Dataset]) -> list[Dataset]:
    """Each object written as a DICOM file and read back."""
    out: list[Dataset] = []
    for ds in objects:
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(dcmread(BytesIO(buf.getvalue())))
    return out


def _by_modality(objects: list[Dataset], modality: str) -> Dataset | None:
    return next((o for o in objects if str(o.Modality) == modality), None)


def _match(
    want: list[tuple[str, int, rb.Edges]], got: list[rb.Outline]
) -> tuple[list[float], list[rb.Outline]]:
    """Best IoU of each expected box with a read box of its image (each read box used once),
    and the read boxes left unmatched."""
    left = list(got)
    ious = []
    for sop, frame, edges in want:
        same = [o for o in left if (o.sop_uid, o.frame) == (sop, frame)]
        best = max(same, key=lambda o: rb.box_iou(o.edges, edges), default=None)
        ious.append(rb.box_iou(best.edges, edges) if best is not None else 0.0)
        if best is not None:
            left.remove(best)
    return ious, left


def _stated(groups: list[rb.Group]) -> bool | None:
    """What the SR's groups of one label state: Present in any, else Absent in any, else
    nothing (an informational score)."""
    states = {g.present for g in groups}
    return True if True in states else False if False in states else None


class _Compare:
    """One golden case's comparisons, collecting what matched and what did not."""

    def __init__(self, where: str, case: GoldenCase, folder: Path, m: mf.Manifest) -> None:
        self.where, self.case, self.folder, self.m = where, case, folder, m
        self.errors: list[str] = []
        self.notes: list[str] = []

    def fail(self, msg: str) -> None:
        self.errors.append(f"{self.where}: {msg}")

    def finding(self, j: int, exp: ExpectedFinding, objects: list[Dataset]) -> None:
        lb = next((x for x in self.m.output.labels if x.index == exp.label), None)
        if lb is None:
            self.fail(f"{EXPECTED} findings[{j}].label: no output.labels entry has index "
                      f"{exp.label}")  # fmt: skip
            return
        name = f"label {exp.label} ({lb.code.meaning})"
        code = (lb.code.scheme, lb.code.value)
        sr = _by_modality(objects, "SR")
        groups = [g for g in rb.sr_groups(sr) if g.code == code] if sr is not None else []
        if sr is not None and not groups:
            self.fail(f"{name}: the SR has no measurement group for it")
            return
        notes = [name]
        if sr is not None:
            self._presence(name, normal=lb.normal, exp=exp, groups=groups, notes=notes)
        if exp.boxes is not None:
            self._boxes(name, exp=exp, groups=groups, gsps=_by_modality(objects, "PR"), notes=notes)
        if exp.mask is not None:
            seg = _by_modality(objects, "SEG")
            self._mask(name, exp=exp, code=code, groups=groups, seg=seg, notes=notes)
        self.notes.append(", ".join(notes))

    def _presence(
        self,
        name: str,
        *,
        normal: bool,
        exp: ExpectedFinding,
        groups: list[rb.Group],
        notes: list[str],
    ) -> None:
        """The SR's word on the label against the expected one: its qualitative evaluation,
        as ``cds.results.text.statement`` gives it (a ``normal`` class that reaches its
        threshold is present, the normal state; an informational score states nothing)."""
        stated = _stated(groups)
        word = said(stated, normal=normal)
        if exp.present is not None and stated is not exp.present:
            self.fail(f"{name}: expected {said(exp.present, normal=normal)}, the SR says {word}")
        notes.append(word)
        probs = [g.probability for g in groups if g.probability is not None]
        if exp.score is not None:
            best = max(probs, default=float("nan"))
            if not abs(best - exp.score) <= exp.score_tolerance:
                self.fail(f"{name}: the SR's score is {best:.4f}, expected {exp.score:.4f} "
                          f"+- {exp.score_tolerance:g}")  # fmt: skip
            notes.append(f"score {best:.3f} (expected {exp.score:.3f})")

    def _boxes(
        self,
        name: str,
        *,
        exp: ExpectedFinding,
        groups: list[rb.Group],
        gsps: Dataset | None,
        notes: list[str],
    ) -> None:
        assert exp.boxes is not None
        want = [(b.image, b.frame, b.box) for b in exp.boxes]
        got = [o for g in groups if g.present for o in g.outlines]
        ious, extra = _match(want, got)
        self._judge(name, "SR", ious, notes)
        if extra:
            self.fail(f"{name}: the SR has {len(extra)} box(es) the golden case does not expect")
        if gsps is not None:
            gious, _ = _match(want, rb.gsps_outlines(gsps))
            self._judge(name, "GSPS", gious, notes)

    def _judge(self, name: str, where: str, ious: list[float], notes: list[str]) -> None:
        for k, v in enumerate(ious):
            if v < self.case.min_iou:
                self.fail(f"{name}: box {k} in the {where}: IoU {v:.3f} with the expected box, "
                          f"below min_iou {self.case.min_iou:g}")  # fmt: skip
        if ious:
            notes.append(f"{len(ious)} box(es), IoU min {min(ious):.3f} ({where})")

    def _mask(
        self,
        name: str,
        *,
        exp: ExpectedFinding,
        code: rb.Code,
        groups: list[rb.Group],
        seg: Dataset | None,
        notes: list[str],
    ) -> None:
        assert exp.mask is not None
        try:
            with np.load(self.folder / exp.mask, allow_pickle=False) as z:
                want = {k: z[k].astype(bool) for k in z.files}
        except (OSError, ValueError) as exc:
            self.fail(f"{exp.mask}: cannot read ({type(exc).__name__})")
            return
        if seg is None:
            self.fail(f"{name}: a mask is expected and no SEG was encoded (output.results)")
            return
        got = rb.seg_masks(seg).get(code, {})
        inter = total = 0
        for key in set(want) | {f"{s}_{f}" for s, f in got}:
            sop, _, frame = key.rpartition("_")
            a = want.get(key)
            b = got.get((sop, int(frame)))
            a = a if a is not None else np.zeros_like(b)
            b = b if b is not None else np.zeros_like(a)
            if a.shape != b.shape:
                self.fail(f"{exp.mask}: array {key} is {a.shape}, the SEG frame {b.shape}")
                return
            inter += int((a & b).sum())
            total += int(a.sum()) + int(b.sum())
        d = 1.0 if total == 0 else 2.0 * inter / total
        if d < self.case.min_dice:
            self.fail(f"{name}: Dice {d:.3f} between the SEG and {exp.mask}, below min_dice "
                      f"{self.case.min_dice:g}")  # fmt: skip
        notes.append(f"mask Dice {d:.3f} (SEG)")
        ious = []
        for g in groups:
            for o in g.outlines:
                edges = rb.mask_edges(want.get(f"{o.sop_uid}_{o.frame}", np.zeros((1, 1), bool)))
                ious.append(rb.box_iou(o.edges, edges) if edges is not None else 0.0)
        self._judge(f"{name} (outline of the mask)", "SR", ious, notes)


def run_case(
    package: Path, rel: str, m: mf.Manifest, runner: ModelRunner, where: str
) -> tuple[str, list[str], InferenceResult | None]:
    """One golden case: a summary line and the problems found."""
    folder = package / rel
    try:
        case = load_case(folder)
    except ValueError as exc:
        return f"{where}: not run", [f"{where}: {exc}"], None
    files = sorted(p for p in (folder / case.input).rglob("*") if p.is_file())
    if not files:
        return f"{where}: not run", [f"{where}: {case.input}: no DICOM files"], None
    try:
        result = runner.run(decode(files))
        sources = [dcmread(f) for f in files]
        objects, _ = encode(sources, result, m, m.output.results, case.language, seed="golden")
        objects = roundtrip(objects)
    except CdsError as exc:
        return f"{where}: failed", [f"{where}: {exc}"], None
    cmp = _Compare(where, case, folder, m)
    for j, exp in enumerate(case.findings):
        cmp.finding(j, exp, objects)
    kinds = "/".join(sorted({str(o.Modality) for o in objects}))
    state = "OK" if not cmp.errors else "FAILED"
    line = f"{where}: {state}: {len(files)} file(s) -> {kinds}: " + "; ".join(cmp.notes)
    return line, cmp.errors, result


def run_golden(
    package: Path, m: mf.Manifest, session: Session, sha256: str, src: str
) -> tuple[list[str], list[str]]:
    """Every golden case of the package: summary lines and problems."""
    model = LoadedModel(package, "ready", m, sha256, session.provider_short, session=session)
    runner = ModelRunner(model, DeviceSlots(1, 1))
    lines: list[str] = []
    errors: list[str] = []
    for i, rel in enumerate(m.golden):
        line, errs, _ = run_case(package, rel, m, runner, f"{src}: golden[{i}] ({rel})")
        lines.append(line)
        errors.extend(errs)
    return lines, errors


#: verdicts of run_golden by everything they depend on (see ``run_golden_once``)
_VERDICTS: dict[str, tuple[list[str], list[str]]] = {}


def _content_key(package: Path, m: mf.Manifest, session: Session, sha256: str) -> str:
    """What a verdict depends on: the model, the manifest, the golden files' bytes, the
    provider (a GPU's numbers are not the CPU's) and this cds."""
    digest = hashlib.sha256()
    for part in (sha256, m.digest(), session.provider_short, __version__):
        digest.update(part.encode() + b"\0")
    for rel in m.golden:
        for f in sorted(p for p in (package / rel).rglob("*") if p.is_file()):
            digest.update(f.relative_to(package).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def run_golden_once(
    package: Path, m: mf.Manifest, session: Session, sha256: str, src: str
) -> tuple[list[str], list[str]]:
    """``run_golden``, remembered in this process for the same content: a node that
    reloads an unchanged package does not run its cases again; any change to the model,
    the manifest or a golden file runs them."""
    key = _content_key(package, m, session, sha256)
    if key not in _VERDICTS:
        _VERDICTS[key] = run_golden(package, m, session, sha256, src)
    lines, errors = _VERDICTS[key]
    return list(lines), list(errors)
