"""Case exports for model improvement: de-identified copies of one study's instances.

Works on the node's home with the node stopped or running (reads the state store
and the spool; writes only under ``out``). Every instance is checked before any is
written: one where burned-in text is possible refuses the whole export, by name and
field, and nothing is written. The manifest carries counts, the profile, options and
method codes, the key's public id and cds' version — no identifier.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread

from cds import __version__
from cds.config import Settings
from cds.errors import CdsError
from cds.ingest.spool import Spool
from cds.privacy.deid import (
    METHOD,
    PROFILE_NAME,
    Deidentifier,
    DeidRefused,
    check_burned_in,
    key_id,
    load_key,
)
from cds.store import open_store


class ExportError(CdsError):
    """The export cannot be made (no such study, nothing spooled, output not empty)."""


@dataclass
class ExportManifest:
    instances: int = 0
    series: int = 0
    modalities: list[str] = field(default_factory=list)
    key_id: str = ""
    options: list[str] = field(default_factory=list)
    method_codes: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "cds case export",
            "cds_version": __version__,
            "profile": PROFILE_NAME,
            "options": self.options,
            "method": METHOD,
            "method_codes": [
                {"value": value, "scheme": "DCM", "meaning": meaning}
                for value, meaning in self.method_codes
            ],
            "pixels_cleaned": False,
            "key_id": self.key_id,
            "counts": {"instances": self.instances, "series": self.series},
            "modalities": sorted(self.modalities),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def current_instances(settings: Settings, study_key: str) -> list[Path]:
    """The current version of every instance of a study, as spooled files."""
    if not settings.sqlite_path.exists():
        raise ExportError(
            f"no state store at {settings.sqlite_path} (store.sqlite_path): "
            "has the node run with this --home?"
        )
    store = open_store(settings)
    try:
        if store.get_study(study_key) is None:
            raise ExportError(f"no study with key {study_key!r}")
        spool = Spool(settings.spool_path, 0)
        files = []
        for rel in store.instance_paths(study_key):
            sop_uid = Path(rel).name.rsplit(".", 2)[0]
            current = store.find_instance(sop_uid)
            if current is not None and current[1] == rel and spool.exists(rel):
                files.append(spool.absolute(rel))
    finally:
        store.close()
    if not files:
        raise ExportError(f"study {study_key}: no spooled instance (purged?)")
    return files


def export_case(
    settings: Settings, study_key: str, out: Path, *, modified_dates: bool | None = None
) -> ExportManifest:
    """De-identify a study's spooled instances into ``out`` (new or empty);
    ``modified_dates`` None: as ``privacy.modified_dates`` says.

    Raises DeidRefused (nothing written) or ExportError.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: --out must be a new or empty folder")
    files = current_instances(settings, study_key)
    for path in files:  # every check before any write
        check_burned_in(dcmread(path, stop_before_pixels=True), path.name)
    key = load_key(settings.deid_key_path)
    if modified_dates is None:
        modified_dates = settings.privacy.modified_dates
    deid = Deidentifier(key, modified_dates=modified_dates)
    manifest = ExportManifest(
        key_id=key_id(key), options=list(deid.options), method_codes=deid.method_codes()
    )
    series: set[str] = set()
    modalities: set[str] = set()
    out.mkdir(parents=True, exist_ok=True, mode=0o750)
    for path in files:
        ds = dcmread(path)
        check_burned_in(ds, path.name)
        modalities.add(str(ds.get("Modality", "") or "OT"))
        deid.apply(ds)
        folder = out / str(ds.SeriesInstanceUID)
        folder.mkdir(exist_ok=True, mode=0o750)
        target = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(target, enforce_file_format=True)
        os.chmod(target, 0o640)
        series.add(str(ds.SeriesInstanceUID))
        manifest.instances += 1
    manifest.series = len(series)
    manifest.modalities = sorted(modalities)
    (out / "manifest.json").write_text(json.dumps(manifest.as_json(), indent=2) + "\n")
    return manifest


__all__ = ["DeidRefused", "ExportError", "ExportManifest", "current_instances", "export_case"]
