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
