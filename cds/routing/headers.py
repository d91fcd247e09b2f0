"""What routing knows of a series: its files, grouped by study and series, and the
header attributes of its first instance (``read_headers``), read once per study.

Only headers are read (never Pixel Data), every file through the ingest bounds when it
did not come through the node's ingest, and only regular files are opened.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from cds.config import IngestLimits
from cds.errors import IngestError
from cds.ingest.instance import check_file
from cds.routing.files import NotRegularFile, ReadBudget

_HEADER_KEYWORDS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "SOPClassUID",
    "Modality",
    "BodyPartExamined",
    "SeriesDescription",
    "StudyDescription",
    "ProtocolName",
    "ViewPosition",
    "Manufacturer",
    "ManufacturerModelName",
    "ImageType",
    "PatientSex",
    "PatientAge",
    "PatientBirthDate",
    "StudyDate",
    "SliceThickness",
    "PixelSpacing",
    "SeriesNumber",
    # compared with a model's declared use (manifest input.photometric, input.slices)
    "PhotometricInterpretation",
    "NumberOfFrames",
]


@dataclass
class SeriesHeader:
    """What routing knows of one series: header attributes of its first instance, and counts."""

    study_uid: str
    series_uid: str
    attrs: dict[str, Any]
    instance_count: int = 1
    calling_ae: str = ""
    files: list[Path] = field(default_factory=list)
    #: the SOP Instance UIDs of ``files`` (the newest version of each instance)
    sop_uids: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        num = self.attrs.get("SeriesNumber")
        desc = self.attrs.get("SeriesDescription") or ""
        mod = self.attrs.get("Modality") or "?"
        return f"#{num if num not in (None, '') else '-'} {mod} {desc}".strip()


def header_attrs(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kw in _HEADER_KEYWORDS:
        v = ds.get(kw)
        if v is None or v == "":
            continue
        if kw == "ImageType":
            many = isinstance(v, MultiValue | list | tuple)
            out[kw] = [str(x).strip() for x in (v if many else [v])]
        elif kw == "PixelSpacing":
            try:
                out[kw] = [float(x) for x in v]
            except (TypeError, ValueError):
                continue
        elif kw in ("SliceThickness",):
            try:
                out[kw] = float(v)
            except (TypeError, ValueError):
                continue
        else:
            out[kw] = str(v).strip()
    return out


def read_headers(
    paths: Iterable[Path], limits: IngestLimits | None = None, budget: ReadBudget | None = None
) -> tuple[dict[str, list[SeriesHeader]], list[str]]:
    """Group DICOM files (or folders of them) by study and series; also return unread files.

    Only regular files are opened (devices, FIFOs and sockets are passed over, never
    read). ``limits``: for files that did not come through the node's ingest (``cds
    process``, ``cds route explain`` on local paths), the ingest bounds are applied to
    each file before it is parsed (size, deflate bomb, nesting depth); a file past them is
    skipped with the reason. The node's own spool is already bounded. ``budget``: bounds
    on the whole read (files, bytes, wall time, cancellation; ExplainStopped past one).

    Deterministic whatever the file names or their order: of several versions of one
    SOP Instance (the spool keeps them) the newest file counts, files are ordered by
    InstanceNumber, and a series' attributes are those of its first instance (series
    may vary within, e.g. slice thickness).
    """
    budget = budget if budget is not None else ReadBudget()
    files, skipped = budget.list_files(paths)
    rank = {f: i for i, f in enumerate(files)}
    # (study, series) -> sop -> (mtime, instance number, file, dataset)
    found: dict[tuple[str, str], dict[str, tuple[float, float, Path, Dataset]]] = {}
    for f in files:
        try:
            ds, mtime = _read_header(f, limits, budget)
        except IngestError as exc:
            skipped.append(f"{f}: refused ({exc})")
            continue
        except NotRegularFile as exc:
            skipped.append(f"{f}: {exc} (not opened)")
            continue
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            skipped.append(f"{f}: not readable as DICOM ({type(exc).__name__})")
            continue
        study, series = str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))
        if not study or not series:
            skipped.append(f"{f}: no StudyInstanceUID/SeriesInstanceUID")
            continue
        sop = str(ds.get("SOPInstanceUID", "")) or str(f)
        try:
            number = float(ds.get("InstanceNumber", "") or "inf")
        except (TypeError, ValueError):
            number = float("inf")
        item = (mtime, number, f, ds)
        versions = found.setdefault((study, series), {})
        if sop not in versions or item[0] >= versions[sop][0]:
            versions[sop] = item
    studies: dict[str, list[SeriesHeader]] = defaultdict(list)
    for (study, series), versions in found.items():
        # by InstanceNumber, then by the order the files were given in
        ordered = sorted(versions.items(), key=lambda kv: (kv[1][1], rank[kv[1][2]]))
        first = ordered[0][1][3]
        studies[study].append(
            SeriesHeader(
                study,
                series,
                header_attrs(first),
                len(ordered),
                "",
                [v[2] for _, v in ordered],
                [sop for sop, _ in ordered],
            )
        )
    return dict(studies), skipped


class FolderHeaders:
    """``read_headers`` of the node's own spool folders, kept while their files are
    unchanged: the stages that look at a completed study (its pipelines, the PACS's
    feedback) run at once and would each parse every instance's header again. A
    folder's files are listed and stat'ed on each call (path, inode, size, mtime: the
    spool replaces a file by a rename, never in place); any change reads it again.
    Concurrent calls for one folder wait for the first; each caller gets its own copy."""

    def __init__(self, keep: int = 8) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._busy: dict[Path, tuple[threading.Lock, int]] = {}  # folder -> (lock, users)
        self._read: OrderedDict[Path, tuple[tuple[Any, ...], dict[str, list[SeriesHeader]]]]
        self._read = OrderedDict()

    def __call__(self, folder: Path) -> dict[str, list[SeriesHeader]]:
        with self._lock:
            lock, users = self._busy.get(folder, (threading.Lock(), 0))
            self._busy[folder] = (lock, users + 1)
        try:
            with lock:
                return _copied(self._get(folder))
        finally:
            with self._lock:
                lock, users = self._busy[folder]
                if users > 1:
                    self._busy[folder] = (lock, users - 1)
                else:
                    del self._busy[folder]

    def _get(self, folder: Path) -> dict[str, list[SeriesHeader]]:
        files, _ = ReadBudget().list_files([folder])
        seen = tuple(_identity(f) for f in files)
        with self._lock:
            hit = self._read.get(folder)
        if hit is not None and hit[0] == seen:
            return hit[1]
        studies, _ = read_headers(files)
        with self._lock:
            self._read[folder] = (seen, studies)
            self._read.move_to_end(folder)
            while len(self._read) > self._keep:
                self._read.popitem(last=False)
        return studies


#: the node's spool folders (``cds.pipeline.study_series``)
spool_headers = FolderHeaders()


def _copied(studies: dict[str, list[SeriesHeader]]) -> dict[str, list[SeriesHeader]]:
    """A copy a caller may change (its series' files sorted, their calling AE set)."""
    return {
        study: [
            replace(
                s,
                attrs={k: list(v) if isinstance(v, list) else v for k, v in s.attrs.items()},
                files=list(s.files),
                sop_uids=list(s.sop_uids),
            )
            for s in group
        ]
        for study, group in studies.items()
    }


def _identity(f: Path) -> tuple[Any, ...]:
    try:
        st = f.stat()
    except OSError:
        return (f,)
    return (f, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_header(f: Path, limits: IngestLimits | None, budget: ReadBudget) -> tuple[Dataset, float]:
    """(header, mtime) of one file. With ``limits`` the whole file is read (bounded) and
    checked first; without, the header alone is read from disk."""
    with budget.open(f) as fh:
        mtime = os.fstat(fh.fileno()).st_mtime
        if limits is None:
            ds = _parse_header(fh)
            budget.spent(fh.tell())
            return ds, mtime
        raw = budget.read(fh, limits.max_dataset_mb * 2**20)
    check_file(
        raw,
        max_inflated_bytes=limits.max_inflated_mb * 2**20,
        max_sequence_depth=limits.max_sequence_depth,
    )
    return _parse_header(BytesIO(raw)), mtime


def _parse_header(fh: BinaryIO) -> Dataset:
    """Header of a Part 10 file, or of a bare data set without File Meta (common in the
    field: tolerant when reading), recognised by a first group of 0008."""
    try:
        return dcmread(fh, stop_before_pixels=True, specific_tags=_HEADER_KEYWORDS)
    except InvalidDicomError:
        fh.seek(0)
        if fh.read(2) not in (b"\x08\x00", b"\x00\x08"):
            raise
        fh.seek(0)
        return dcmread(fh, stop_before_pixels=True, specific_tags=_HEADER_KEYWORDS, force=True)


# --- attribute values -----------------------------------------------------------
