"""The checks of ``cds certify pacs`` on what the PACS keeps: a retrieved result
against what cds sent, a UTF-8 study with French accents, and a large study.

A result is compared byte for byte with the file cds sent, when the node's results
folder is known (``<results>/<study_key>/<Modality>/<SOPInstanceUID>.dcm``, as
``cds.results.encode.write_results`` writes it); otherwise attribute by attribute
(the differing attributes are named), or, without the node's settings, by its UIDs and
SOP class against what the node's API says it sent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage

from cds.certify.checks import Check
from cds.certify.pacs_net import Peer, find, get, store
from cds.certify.pacs_study import (
    FRENCH_SERIES,
    FRENCH_STUDY,
    TestStudy,
    charset_study,
    large_study,
)


def sent_file(results_dir: Path | None, r: dict[str, Any]) -> Path | None:
    """The file cds sent for result ``r`` (None: the results folder is not known)."""
    if results_dir is None:
        return None
    found = sorted(results_dir.glob(f"*/{r['modality']}/{r['sop_instance_uid']}.dcm"))
    return found[0] if found else None


def sent_syntax(results_dir: Path | None, r: dict[str, Any]) -> str | None:
    """The transfer syntax of the file cds sent for ``r``, when it is known."""
    path = sent_file(results_dir, r)
    if path is None:
        return None
    return str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def compare(
    results_dir: Path | None, r: dict[str, Any], ds: Dataset, raw: bytes, syntax: str = ""
) -> tuple[bool, str]:
    """Whether a retrieved result (``ds``, its encoded bytes ``raw``) is what cds sent
    (``r``: the result as the node's API lists it), and how that was judged."""
    from cds.certify.model import differing_attributes  # noqa: PLC0415 - the inference stack

    sent_path = sent_file(results_dir, r)
    if sent_path is None:
        keys = ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID")
        api = (r["sop_instance_uid"], r["sop_class_uid"], r["series_instance_uid"])
        if tuple(str(ds.get(k, "")) for k in keys) != api:
            return False, "C-GET: its UIDs differ from what the node's API says it sent"
        why = "the node's results folder is not known: give --config/--home"
        if results_dir is not None:
            why = f"not found in the node's results folder {results_dir}"
        return True, f"C-GET: SOP Instance, SOP Class and Series UIDs as sent ({why})"
    data = sent_path.read_bytes()
    if raw and data.endswith(raw):
        return True, f"C-GET: byte-identical to what cds sent ({len(raw)} bytes of data set)"
    sent = dcmread(sent_path)
    diff = sorted(differing_attributes(sent, ds))
    if not diff:
        file_ts = UID(str(sent.file_meta.TransferSyntaxUID)).name
        got_ts = UID(syntax).name if syntax else "?"
        return True, (
            "C-GET: every attribute identical to what cds sent (the encoding differs: "
            f"its file in {file_ts}, retrieved in {got_ts})"
        )
    return False, f"C-GET: attributes differ from what cds sent: {', '.join(diff[:20])}"


def _stored(peer: Peer, study: TestStudy) -> tuple[list[str], float]:
    """C-STORE the study; the problems (file: status) and the seconds it took."""
    start = time.monotonic()
    outcomes = store(peer, study.files)
    took = time.monotonic() - start
    bad = [f"{f.name}: {o.detail}" for f, o in zip(study.files, outcomes, strict=True) if not o.ok]
    return bad, took


def charset_check(peer: Peer, work: Path) -> Check:
    """``pacs_charset``: a UTF-8 (ISO_IR 192) study with French accents in its study and
    series descriptions comes back unchanged by C-FIND and C-GET."""
    study = charset_study(work)
    bad, _ = _stored(peer, study)
    if bad:
        return Check("pacs_charset", "fail", ["C-STORE of the UTF-8 (ISO_IR 192) study", *bad[:3]])
    evidence, failed = [], False
    q = find(peer, "STUDY", study.study_uid, StudyDescription="", SpecificCharacterSet="ISO_IR 192")
    same = bool(q.matches) and str(q.matches[0].get("StudyDescription", "")) == FRENCH_STUDY
    failed = not same
    note = "" if q.ok else f" ({q.detail})"
    if q.matches and not same:
        answered = q.matches[0].get("SpecificCharacterSet", "") or "none"
        note += (
            f" (the answer's SpecificCharacterSet: {answered}; characters outside it are lost:"
            " the PACS should answer in ISO_IR 192, e.g. Orthanc's DefaultEncoding Utf8)"
        )
    evidence.append(
        f"C-FIND (0008,1030) StudyDescription: {'identical' if same else 'differs'}{note}"
    )
    sop = str(dcmread(study.files[0], stop_before_pixels=True).SOPInstanceUID)
    g = get(peer, study.study_uid, study.series_uid, sop, CTImageStorage)
    if not g.ok:
        return Check("pacs_charset", "fail", [*evidence, f"C-GET: {g.detail}"])
    ds = g.retrieved[0][0]
    for tag, keyword, want in (
        ("0008,1030", "StudyDescription", FRENCH_STUDY),
        ("0008,103E", "SeriesDescription", FRENCH_SERIES),
    ):
        same = str(ds.get(keyword, "")) == want
        failed = failed or not same
        evidence.append(f"C-GET ({tag}) {keyword}: {'identical' if same else 'differs'}")
    charset = ds.get("SpecificCharacterSet", "")
    evidence.append(f"C-GET (0008,0005) SpecificCharacterSet: {charset}")
    return Check("pacs_charset", "fail" if failed else "pass", evidence)


def large_check(peer: Peer, work: Path, slices: int) -> Check:
    """``pacs_large``: ``slices`` CT slices of 512 x 512 are all stored and found."""
    if slices < 1:
        return Check("pacs_large", "not_applicable", ["--large 0: not tested"])
    study = large_study(work, slices)
    bad, took = _stored(peer, study)
    answer = find(peer, "IMAGE", study.study_uid, study.series_uid)
    held = len(answer.matches)
    mb = study.megabytes
    figures = {
        "instances": float(slices),
        "megabytes": round(mb, 1),
        "seconds": round(took, 2),
        "megabytes_per_second": round(mb / took, 1) if took > 0 else 0.0,
    }
    evidence = [
        f"C-STORE of {slices} instance(s), {figures['megabytes']} MB in {figures['seconds']} s "
        f"({figures['megabytes_per_second']} MB/s): "
        f"{f'{len(bad)} refused' if bad else 'all stored'}",
        *bad[:3],
        f"C-FIND at IMAGE level: the PACS holds {held} of {slices}"
        + ("" if answer.ok else f" ({answer.detail})"),
    ]
    complete = not bad and answer.ok and held == slices
    return Check("pacs_large", "pass" if complete else "fail", evidence, figures)
