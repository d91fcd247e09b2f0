"""``process.json``: the record of a ``cds process`` run (``cds.offline``).

What a later run needs to reproduce the result and check it is the same: cds version,
and per series the input SOP Instance UIDs, the model (name, version, SHA-256,
provider), the kinds asked, the objects written with their notes, the kinds not
produced and why, the findings and the timings. No patient attribute and no input file
path goes into it, and no error quotes a data value (``cds.errors.safe_message``).
Written atomically (a ``.part`` file, fsync, rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from cds import __version__
from cds.inference.registry import LoadedModel
from cds.ingest.instance import is_valid_uid
from cds.pipeline import SeriesOutcome
from cds.results.text import job_summary
from cds.routing.router import SeriesHeader

_SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture (and its multi-frame variants)


def kind_of(ds: Dataset) -> str:
    """The result kind (SEG, SR, GSPS, SC) of an encoded object."""
    if str(ds.SOPClassUID).startswith(_SC_CLASS):
        return "SC"
    return {"PR": "GSPS"}.get(str(ds.Modality), str(ds.Modality))


def series_entry(
    s: SeriesHeader,
    *,
    origin: dict[str, str],
    kinds: list[str],
    model: LoadedModel | None,
    name: str,
) -> dict[str, Any]:
    """A series' entry before it runs: its UID (None when not valid: never quoted), its
    modality, the rule and pipeline (or ``--model``), the kinds asked, the model."""
    return {
        "series_instance_uid": s.series_uid if is_valid_uid(s.series_uid.strip()) else None,
        "modality": s.attrs.get("Modality"),
        **origin,
        "kinds": kinds,
        "model": _model(model) if model is not None else {"name": name},
    }


def _model(m: LoadedModel) -> dict[str, Any]:
    return {"name": m.name, "version": m.version, "sha256": m.sha256, "provider": m.provider}


def record_done(
    entry: dict[str, Any],
    done: SeriesOutcome,
    written: Sequence[tuple[str, Dataset]],
    *,
    kinds: Sequence[str],
    lang: str,
    run_s: float,
    write_s: float,
) -> list[str]:
    """Fill the entry of a series that ran: status, provider, summary, findings, the
    objects ``written`` (path relative to the output folder, object), notes, what was
    not produced or not made, timings (``run_s``: decode, inference and encoding;
    ``write_s``: writing). Returns the problems: each kind asked but not produced, then
    each object not made of a kind that others of were."""
    rec = done.result.record
    failed = [o for o in done.outcomes if o.failed]
    entry["status"] = ("partial" if done.objects else "failed") if failed else "done"
    entry["model"]["provider"] = rec.provider
    entry["summary"] = job_summary(done.result, lang)  # as the node: the results language
    entry["findings"] = [
        {"label": f.label.display.en, "present": f.present, "score": round(f.score, 6)}
        for f in done.result.findings
    ]
    entry["objects"], said = _objects(done, written)
    # the source attributes, each object's own notes (a SEG without Frame of Reference),
    # the encoder's (a kind skipped, SC capped); then kinds asked but not made
    made = {kind_of(ds) for ds in done.objects}
    entry["encoder_notes"] = list(dict.fromkeys([*done.copied, *said, *done.skipped]))
    entry["not_produced"] = {
        k: next(
            (n.split(": ", 1)[1] for n in done.skipped if n.startswith(f"{k}: ")),
            "nothing to encode (no finding present)",
        )
        for k in kinds
        if k not in made
    }
    # one object of a kind not made while others of it were (SC: one per image)
    entry["not_made"] = [o.text for o in failed]
    entry["timings"] = {
        "inference_s": round(rec.seconds, 4),
        **{f"{k}_s": v for k, v in rec.timings.items()},
        "decode_encode_s": round(run_s - rec.seconds, 4),
        "write_s": round(write_s, 4),
    }
    return [
        *(f"{k} not produced: {why}" for k, why in entry["not_produced"].items()),
        *(o.text for o in failed if o.kind in made),
    ]


def _objects(
    done: SeriesOutcome, written: Sequence[tuple[str, Dataset]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each object written, with its notes (the made outcomes are in the objects' order);
    and its own notes, less those of the source attributes (``done.copied``)."""
    notes = [o.reason for o in done.outcomes if o.made] + [""] * len(done.objects)
    copied, records, said = "; ".join(done.copied), [], []
    for (rel, ds), note in zip(written, notes, strict=False):
        kind = kind_of(ds)
        records.append({"path": rel, "kind": kind, "modality": str(ds.Modality),
                        "sop_class_uid": str(ds.SOPClassUID),
                        "sop_instance_uid": str(ds.SOPInstanceUID),
                        "series_instance_uid": str(ds.SeriesInstanceUID),
                        "notes": note})  # fmt: skip
        own = note.removesuffix(copied).rstrip("; ") if copied else note
        said += [f"{kind}: {own}"] if own else []
    return records, said


def run_record(
    *,
    model: str | None,
    routing: Path | None,
    lang: str,
    providers: str,
    inputs_not_read: int,
    studies: list[dict[str, Any]],
    problems: list[str],
    seconds: float,
) -> dict[str, Any]:
    """The whole run's record: cds version, when, the mode (``--model`` or a routing
    file, with its SHA-256), language, providers, the studies' entries, what was not
    produced."""
    return {
        "cds_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "model" if model else "routing",
        "routing_file": ({"path": str(routing), "sha256": _sha256(routing)} if routing else None),
        "language": lang,
        "providers": providers,
        "inputs_not_read": inputs_not_read,
        "studies": studies,
        "not_produced": problems,
        "seconds": round(seconds, 3),
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_record(path: Path, record: dict[str, Any]) -> None:
    """The record as JSON at ``path`` (``<out>/process.json``), written atomically."""
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
