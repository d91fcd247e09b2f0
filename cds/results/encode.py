"""Encode an inference as the result objects a pipeline asks for, and keep them durably.

The SEG comes first (the SR references it); a kind with nothing to encode (e.g. a SEG
when no mask is positive) is skipped and said so. Objects are written to
``<home>/results/<study_key>/`` (temporary file, fsync, rename, folder fsync) before
anything may send them: the delivery stage reads them from there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset

from cds.domain import ResultRef
from cds.errors import EncodingError
from cds.inference import manifest as mf
from cds.inference.runner import InferenceResult
from cds.results.common import series_number
from cds.results.gsps import build_gsps
from cds.results.sc import build_sc
from cds.results.seg import build_seg
from cds.results.sr import build_sr

#: how many burned-in Secondary Captures at most per result (the images with findings)
MAX_SC = 20


def encode(
    sources: Sequence[Dataset],
    result: InferenceResult,
    manifest: mf.Manifest,
    kinds: Sequence[str],
    lang: str,
    *,
    seed: str = "",
    predecessors: Sequence[ResultRef] = (),
) -> tuple[list[Dataset], list[str]]:
    """The objects of ``kinds`` (SEG, SR, GSPS, SC) and a note per kind skipped.

    ``predecessors``: the current result objects of an earlier run on the same
    series that these replace (the SR names them in its Predecessor Documents).
    """
    objects: list[Dataset] = []
    skipped: list[str] = []
    seg: Dataset | None = None
    if "SEG" in kinds:
        try:
            seg = build_seg(
                sources,
                result,
                manifest,
                lang,
                uid_root_seed=seed,
                series_number=series_number(manifest.name, "SEG"),
            )
            objects.append(seg)
        except EncodingError as exc:
            skipped.append(f"SEG: {exc}")
    if "SR" in kinds:
        objects.append(
            build_sr(
                sources,
                result,
                manifest,
                lang,
                seg=seg,
                uid_root_seed=seed,
                predecessors=predecessors,
                series_number=series_number(manifest.name, "SR"),
            )
        )
    if "GSPS" in kinds:
        try:
            objects.append(
                build_gsps(
                    sources,
                    result,
                    manifest,
                    lang,
                    uid_root_seed=seed,
                    series_number=series_number(manifest.name, "GSPS"),
                )
            )
        except EncodingError as exc:
            skipped.append(f"GSPS: {exc}")
    if "SC" in kinds:
        by_uid = {str(d.SOPInstanceUID): d for d in sources}
        refs = [r for f in result.findings if f.present for r in f.per_image]
        for n, ref in enumerate(dict.fromkeys(refs)):
            if n == MAX_SC:
                skipped.append(f"SC: only the first {MAX_SC} images with findings")
                break
            if (src := by_uid.get(ref.sop_uid)) is not None:
                objects.append(
                    build_sc(
                        src,
                        ref,
                        result,
                        manifest,
                        lang,
                        instance_number=n + 1,
                        uid_root_seed=seed or None,
                        series_number=series_number(manifest.name, "SC"),
                    )
                )
    return objects, skipped


def write_results(root: Path, study_key: str, objects: Sequence[Dataset]) -> list[Path]:
    """Write each object durably as ``<root>/<study_key>/<Modality>/<SOPInstanceUID>.dcm``."""
    paths = []
    for ds in objects:
        folder = root / study_key / str(ds.Modality)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{ds.SOPInstanceUID}.dcm"
        buf = BytesIO()
        ds.preamble = b"\x00" * 128  # never a polyglot preamble (CVE-2019-11687)
        ds.save_as(buf, enforce_file_format=True)
        tmp = final.with_suffix(".part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(buf.getvalue())
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        paths.append(final)
    return paths
