"""issue 25 items 3-4: the FHIR report on validated models, the withdrawn ORU, and a
retraction that queues the rejection note and the withdrawals once, in a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import dcmread

from cds.audit import AuditTrail
from cds.delivery.fhir import PRIORITY_EXTENSION, entered_in_error, fhir_diagnostic_report
from cds.delivery.hl7v2 import oru_r01, withdrawn_oru
from cds.delivery.notify import notification_id, retraction_id
from cds.destinations import Hl7v2Target
from cds.domain import DeliveryState, ResultObject, ResultState
from cds.errors import AdminError, Refusal
from cds.findings import Finding
from cds.observatory.stats import Bucket, load_records, model_stats
from cds.retraction import retract_result
from cds.store.notifications import NotificationOutbox
from cds.store.retractions import RetractionLog
from cds.store.sqlite import SqliteStore

from .delivery.mllp_peer import target
from .delivery.test_notify import BLEED, FRACTURE, SHA, result

CT = Path(__file__).parents[1] / ".." / "shared" / "dicom" / "ct" / "CT_small.dcm"


def test_fhir_report_validates_with_contained_observations_and_priority() -> None:
    res = result(Finding(BLEED, 0.93, True), Finding(FRACTURE, 0.71, True))
    body = fhir_diagnostic_report("1.2.3", res, res.findings, "fr", 1.0, priority="asap")
    report = DiagnosticReport.model_validate_json(json.dumps(body))
    assert report.status == "preliminary"
    assert [e.valueCode for e in report.extension if e.url == PRIORITY_EXTENSION] == ["asap"]
    obs = [c for c in report.contained if isinstance(c, Observation)]
    assert [o.code.coding[0].code for o in obs] == ["1386000", "125605004"]
    assert [float(o.valueQuantity.value) for o in obs] == [0.93, 0.71]
    assert all(o.interpretation[0].coding[0].code == "A" for o in obs)
    assert all(SHA in o.method.text and "cds-ref-ct-head" in o.device.display for o in obs)
    assert [r.reference for r in report.result] == ["#finding-1", "#finding-2"]
    assert report.subject is None  # no patient
    withdrawn = DiagnosticReport.model_validate_json(entered_in_error(json.dumps(body)))
    assert withdrawn.status == "entered-in-error"
    assert withdrawn.identifier[0].value == report.identifier[0].value
    assert {c.status for c in withdrawn.contained} == {"entered-in-error"}
    with pytest.raises(ValueError, match="not a FHIR DiagnosticReport"):
        entered_in_error('{"resourceType": "Patient"}')


def test_withdrawn_oru_has_status_w_in_obr_25_and_every_obx_11() -> None:
    res = result(Finding(BLEED, 0.93, True))
    t = Hl7v2Target.model_validate(target(2575))
    sent = oru_r01("a1", "1.2.3", res, res.findings, target=t, conclusion="AI", issued=0.0)
    er7 = withdrawn_oru(sent, "b2", 60.0)
    m = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert m.msh.msh_10.to_er7() == "b2"
    order = m.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_25.to_er7() == "W"
    obx = [g.obx for g in order.oru_r01_observation]
    assert obx
    assert {o.obx_11.to_er7() for o in obx} == {"W"}
    with pytest.raises(ValueError, match="ORU"):
        withdrawn_oru("MSH|^~\\&|x\rPID|1", "c3", 0.0)


@pytest.fixture
def node(tmp_path: Path) -> tuple[SqliteStore, Path, AuditTrail, ResultObject]:
    if not CT.exists():
        pytest.skip("../shared/dicom is not here")
    store = SqliteStore(tmp_path / "state.db")
    root = tmp_path / "results"
    (root / "k1" / "SR").mkdir(parents=True)
    ds = dcmread(CT)
    ds.ManufacturerModelName, ds.DeviceSerialNumber = "cds-ref-ct-head", SHA
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.9.1"
    ds.save_as(root / "k1" / "SR" / "r.dcm")
    r = ResultObject(
        sop_uid=ds.SOPInstanceUID, study_key="k1", study_uid=str(ds.StudyInstanceUID),
        series_uid="1.2.826.0.1.3680043.2.1125.9", sop_class_uid=str(ds.SOPClassUID),
        modality="SR", path="k1/SR/r.dcm", job_kind="ct-head:cds-ref-ct-head",
        source_series_uid=str(ds.SeriesInstanceUID), model_version="1.4.2",
        inputs_seed="s", state=ResultState.CURRENT, created_at=1.0,
    )  # fmt: skip
    (d,) = store.record_results([r], ["pacs"], now=1.0)
    store.delivery_attempted(d.delivery_id, ok=True, now=2.0)
    res = result(Finding(BLEED, 0.93, True))
    box = NotificationOutbox(store)
    t = Hl7v2Target.model_validate(target(2575))
    for name, fmt in (("ris", "hl7v2"), ("worklist", "fhir-r4")):
        nid = notification_id(r.study_uid, SHA, res.findings, name)
        body = (
            oru_r01(nid, r.study_uid, res, res.findings, target=t, conclusion="AI", issued=0.0)
            if fmt == "hl7v2"
            else json.dumps(fhir_diagnostic_report(r.study_uid, res, res.findings, "en", 0.0))
        )
        box.queue(nid, "k1", name, fmt=fmt, findings=1, body=body, now=3.0)
        box.attempted(nid, ok=True, now=4.0)
    return store, root, AuditTrail(tmp_path / "audit.log"), r


def test_retraction_queues_the_note_and_the_withdrawals_once(
    node: tuple[SqliteStore, Path, AuditTrail, ResultObject],
) -> None:
    store, root, audit, r = node
    with pytest.raises(AdminError) as unknown:
        retract_result(store, root, audit, "9.9.9", reason="x", who="u", lang="en")
    assert unknown.value.refusal is Refusal.NOT_FOUND
    assert "9.9.9" in str(unknown.value)
    done = retract_result(store, root, audit, r.sop_uid, reason="wrong side", who="u", lang="fr")
    assert done.destinations == ("pacs",)
    kos = [d for d in store.list_deliveries(study_key="k1") if d.modality == "KO"]
    assert [(d.destination, d.state) for d in kos] == [("pacs", DeliveryState.PENDING)]
    note = dcmread(root / RetractionLog(store).result(kos[0].sop_uid).path)  # type: ignore[union-attr]
    assert "rétracté" in note.SeriesDescription
    box = NotificationOutbox(store)
    sent = {n.target: n for n in box.find("k1") if n.findings == 0}
    assert set(sent) == {"ris", "worklist"}
    assert set(done.notifications) == {n.notification_id for n in sent.values()}
    assert "|W|" in sent["ris"].body
    assert json.loads(sent["worklist"].body)["status"] == "entered-in-error"
    log = RetractionLog(store)
    assert log.result(r.sop_uid).state is ResultState.RETRACTED  # type: ignore[union-attr]
    assert log.get(r.sop_uid).reason == "wrong side"  # type: ignore[union-attr]
    assert [x.sop_uid for x in log.results(state="retracted")] == [r.sop_uid]
    with pytest.raises(AdminError) as again:
        retract_result(store, root, audit, r.sop_uid, reason="again", who="u", lang="en")
    assert again.value.refusal is Refusal.CONFLICT
    assert "retracted already" in str(again.value)
    assert len([n for n in box.find("k1") if n.findings == 0]) == 2  # nothing queued twice
    assert retraction_id(retraction_id("x")) != retraction_id("x")
    (row,) = model_stats(load_records(store), Bucket.ALL)
    assert (row.model, row.retracted) == ("cds-ref-ct-head", 1)
    assert log.counts() == {("cds-ref-ct-head", "1.4.2"): 1}
