"""issue 6: feedback the PACS sends back in DICOM: an IOCM rejection note for one of our
objects rejects its findings; a radiologist-edited SR keeps, changes or drops each finding.
The pipelines do not run again for these objects."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cds.domain import FeedbackAction, ResultState, StudyState
from cds.feedback.findings import groups
from cds.orchestrator import Node
from cds.requestor import PauseSafeAE
from cds.results.kos import build_rejection_kos

from ..test_pipeline import send_files, settings_with_routing, wait_state

ROUTING = """
pipelines:
  blobs: {model: cds-ref-blob-detect, results: [SR, GSPS]}
rules:
  - name: CT
    match: [{attribute: Modality, equals: CT}]
    pipelines: [blobs]
"""


def wait_until(check: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def send(node: Node, ds: Dataset, calling: str = "PACS") -> None:
    ae = PauseSafeAE(ae_title=calling)
    ae.add_requested_context(str(ds.SOPClassUID), ExplicitVRLittleEndian)
    host, port = node.listener.address
    assoc = ae.associate(host, port, ae_title="CDS")
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()


@pytest.fixture
def ran(tmp_path: Path, corpus: Path) -> Iterator[tuple[Node, list[Path]]]:
    node = Node(settings_with_routing(tmp_path, ROUTING))
    node.start()
    files = sorted((corpus / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series").iterdir())[:3]
    try:
        send_files(node, files)
        wait_state(node, {StudyState.DONE, StudyState.FAILED})
        yield node, files
    finally:
        node.stop()


def test_rejection_note_from_the_pacs_rejects_the_findings(
    ran: tuple[Node, list[Path]],
) -> None:
    node, files = ran
    (study,) = node.store.list_studies()
    results = node.store.list_results(study.study_key)
    (gsps,) = [r for r in results if r.modality == "PR"]
    findings = node.store.list_findings(study.study_key)
    assert findings
    kos = build_rejection_kos(
        dcmread(files[0], stop_before_pixels=True),
        [gsps.ref],
        "en",
        model="pacs-viewer",
        version="1",
        sha256="0" * 64,
        seed="made by the PACS",
    )
    send(node, kos, calling="ORTHANC")
    wait_until(
        lambda: len(node.store.list_feedback(study_key=study.study_key)) == len(findings),
        what="one rejection per finding",
    )
    fb = node.store.list_feedback(study_key=study.study_key)
    assert {f.action for f in fb} == {FeedbackAction.REJECT}
    assert {f.source for f in fb} == {"dicom"}
    assert {f.who for f in fb} == {"AE:ORTHANC"}
    assert all("113001" in f.reason for f in fb)
    assert {f.tracking_uid for f in fb} == {f.tracking_uid for f in findings}
    # the rejection note is not a reason to run the model again, and is read once
    wait_state(node, {StudyState.DONE})
    time.sleep(1.0)
    assert len(node.store.list_jobs(study_key=study.study_key)) == 1
    assert len(node.store.list_feedback(study_key=study.study_key)) == len(findings)
    assert {r.state for r in node.store.list_results(study.study_key)} == {ResultState.CURRENT}


def _edit(sr: Dataset) -> tuple[Dataset, str, str]:
    """A radiologist's copy of our SR: first finding dropped, second recoded."""
    (dropped, _), (changed, _), *_ = groups(sr)
    edited = copy.deepcopy(sr)
    edited.SOPInstanceUID = generate_uid()
    edited.SeriesInstanceUID = generate_uid()
    edited.file_meta.MediaStorageSOPInstanceUID = edited.SOPInstanceUID
    pred = Dataset()
    pred.StudyInstanceUID = sr.StudyInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = sr.SeriesInstanceUID
    ref = Dataset()
    ref.ReferencedSOPClassUID = sr.SOPClassUID
    ref.ReferencedSOPInstanceUID = sr.SOPInstanceUID
    series.ReferencedSOPSequence = [ref]
    pred.ReferencedSeriesSequence = [series]
    edited.PredecessorDocumentsSequence = [pred]
    stack = [edited]
    while stack:
        item = stack.pop()
        seq = item.get("ContentSequence", [])
        keep = []
        for child in seq:
            uids = [str(c.get("UID", "")) for c in child.get("ContentSequence", [])]
            if dropped in uids:
                continue
            if changed in uids:
                for c in child.ContentSequence:
                    name = c.get("ConceptNameCodeSequence")
                    if c.get("ValueType") == "CODE" and name and name[0].CodeValue == "121071":
                        code = c.ConceptCodeSequence[0]
                        code.CodingSchemeDesignator = "SCT"
                        code.CodeValue = "82650004"
                        code.CodeMeaning = "Calcification"
            keep.append(child)
            stack.append(child)
        if "ContentSequence" in item:
            item.ContentSequence = keep
    return edited, dropped, changed


def test_edited_sr_accepts_corrects_and_rejects_findings(ran: tuple[Node, list[Path]]) -> None:
    node, _ = ran
    (study,) = node.store.list_studies()
    (sr,) = [r for r in node.store.list_results(study.study_key) if r.modality == "SR"]
    ours = dcmread(node.settings.results_path / sr.path)
    if len(groups(ours)) < 3:
        pytest.skip("the detector found fewer than 3 boxes on these slices")
    n = len(groups(ours))
    edited, dropped, changed = _edit(ours)
    assert len(groups(edited)) == n - 1
    send(node, edited)
    wait_until(
        lambda: len(node.store.list_feedback(study_key=study.study_key)) == n,
        what="one verdict per finding",
    )
    by_uid = {f.tracking_uid: f for f in node.store.list_feedback(study_key=study.study_key)}
    assert by_uid[dropped].action is FeedbackAction.REJECT
    assert by_uid[changed].action is FeedbackAction.CORRECT
    assert by_uid[changed].corrected_value == "82650004"
    assert by_uid[changed].corrected_meaning == "Calcification"
    kept = set(by_uid) - {dropped, changed}
    assert {by_uid[u].action for u in kept} == {FeedbackAction.ACCEPT}
    assert {f.who for f in by_uid.values()} == {"AE:PACS"}


def _saved_by_ohif(
    sr: Dataset, resized: str, deleted: str, *, same_series: bool
) -> tuple[Dataset, tuple[float, float, float, float]]:
    """What OHIF 3.13 stores when the radiologist resized one box of our SR (bottom-right
    corner by (+3, +2) pixels), deleted another and saved (docs/feedback-from-viewers.md):
    every group a new tracking UID, our code, label and untouched outlines kept; into our
    SR's series with Predecessor Documents naming our SR (OHIF's default), or as a new
    series naming none of our objects. Returns it and the resized box (x0, y0, x1, y1)."""
    saved = copy.deepcopy(sr)
    saved.SOPInstanceUID = generate_uid()
    saved.file_meta.MediaStorageSOPInstanceUID = saved.SOPInstanceUID
    saved.Manufacturer = "Unspecified"
    if same_series:
        pred = Dataset()
        pred.StudyInstanceUID = sr.StudyInstanceUID
        series = Dataset()
        series.SeriesInstanceUID = sr.SeriesInstanceUID
        ref = Dataset()
        ref.ReferencedSOPInstanceUID = sr.SOPInstanceUID  # OHIF leaves out the class UID
        series.ReferencedSOPSequence = [ref]
        pred.ReferencedSeriesSequence = [series]
        saved.PredecessorDocumentsSequence = [pred]
    else:
        saved.SeriesInstanceUID = generate_uid()
    new_box: list[float] = []
    stack = [saved]
    while stack:
        item = stack.pop()
        keep = []
        for child in item.get("ContentSequence", []):
            uids = [c for c in child.get("ContentSequence", []) if c.get("ValueType") == "UIDREF"]
            if uids and str(uids[0].UID) == deleted:
                continue
            if uids and str(uids[0].UID) == resized:
                for sub in child.ContentSequence:
                    for coord in sub.get("ContentSequence", []):
                        if coord.get("ValueType") == "SCOORD" and not new_box:
                            xs, ys = coord.GraphicData[0::2], coord.GraphicData[1::2]
                            x0, y0, x1, y1 = min(xs), min(ys), max(xs) + 3, max(ys) + 2
                            coord.GraphicData = [x0, y0, x1, y0, x1, y1, x0, y1, x0, y0]
                            new_box = [x0, y0, x1, y1]
            if uids:
                uids[0].UID = generate_uid()  # OHIF keeps none of our tracking UIDs
            keep.append(child)
            stack.append(child)
        if "ContentSequence" in item:
            item.ContentSequence = keep
    assert len(new_box) == 4
    return saved, (new_box[0], new_box[1], new_box[2], new_box[3])


@pytest.mark.parametrize("same_series", [True, False], ids=["into-our-series", "new-series"])
def test_sr_saved_by_ohif_corrects_the_resized_box_and_rejects_the_deleted_one(
    ran: tuple[Node, list[Path]], same_series: bool
) -> None:
    """issue 17 (item 3): OHIF gives every group a new tracking UID; the groups are matched
    by image, label and outline instead, also when the SR names none of our objects."""
    node, files = ran
    (study,) = node.store.list_studies()
    (sr,) = [r for r in node.store.list_results(study.study_key) if r.modality == "SR"]
    ours = dcmread(node.settings.results_path / sr.path)
    uids = [uid for uid, _ in groups(ours)]
    if len(uids) < 3:
        pytest.skip("the detector found fewer than 3 boxes on these slices")
    resized, deleted = uids[0], uids[1]
    saved, (x0, y0, x1, y1) = _saved_by_ohif(ours, resized, deleted, same_series=same_series)
    assert not {uid for uid, _ in groups(saved)} & set(uids)
    send(node, saved, calling="ORTHANC")
    wait_until(
        lambda: len(node.store.list_feedback(study_key=study.study_key)) == len(uids),
        what="one verdict per finding",
    )
    by_uid = {f.tracking_uid: f for f in node.store.list_feedback(study_key=study.study_key)}
    assert by_uid[resized].action is FeedbackAction.CORRECT
    box = by_uid[resized].corrected_box
    assert box is not None
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((x0, y0, x1, y1), abs=1e-4)
    assert by_uid[resized].corrected_value is None  # the finding itself was kept
    assert by_uid[deleted].action is FeedbackAction.REJECT
    kept = set(uids) - {resized, deleted}
    assert {by_uid[u].action for u in kept} == {FeedbackAction.ACCEPT}
    assert all(by_uid[u].corrected_box is None for u in kept)
    assert {f.who for f in by_uid.values()} == {"AE:ORTHANC"}
    assert {f.result_sop_uid for f in by_uid.values()} == {sr.sop_uid}
    # on the source image the finding is on, in its pixels
    assert box.frame == 1
    assert box.sop_uid in {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
