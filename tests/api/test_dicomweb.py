"""issue 22 (DICOMweb, STOW-RS in): the multipart request read into parts and PS3.10
files, the Store Instances Response and its HTTP status (PS3.18 10.5), and the route
itself: stored through the C-STORE receiver (durable, in the spool as sent, recorded
for assembly), a bad part refused alone, the study of the URL enforced, the body bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from structlog.testing import capture_logs

from cds.api.app import create_app
from cds.api.dicomweb import (
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
    BadRequest,
    InstanceOutcome,
    Part,
    boundary_of,
    http_status,
    read_part10,
    response_body,
    split_multipart,
    warnings,
)
from cds.config import Settings
from cds.delivery.dicomweb import encode_multipart, read_response
from cds.errors import IngestError

from .authkit import audit_records, bearer, token_settings

PATIENT_NAME = "Zyxwv^Privatename"
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=B0UND'


def part10(study_uid: str | None = None, sop_uid: str | None = None) -> bytes:
    """A small CT instance as a PS3.10 file (with a name that must never be echoed)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.SeriesNumber = 2
    ds.PatientName = PATIENT_NAME
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# --- the request: Content-Type and multipart body -----------------------------------


def test_the_content_type_names_the_boundary_and_only_application_dicom_is_taken() -> None:
    assert boundary_of(STOW_TYPE) == "B0UND"
    assert boundary_of('Multipart/Related; boundary="a b:c"; type=application/dicom') == "a b:c"
    for bad, status in (
        ("application/dicom", 415),
        ("multipart/related; boundary=x", 415),
        ('multipart/related; type="application/dicom+json"; boundary=x', 415),
        ('multipart/related; type="application/dicom"', 400),
    ):
        with pytest.raises(BadRequest) as exc:
            boundary_of(bad)
        assert exc.value.status == status, bad


def test_parts_are_split_as_rfc_2046_frames_them() -> None:
    body = (
        b"a preamble to ignore\r\n--B0UND  \r\nContent-Type: application/dicom\r\n"
        b"Content-Location: x\r\n\r\nfirst\r\n--B0UNDnot-a-delimiter\r\n"
        b"\r\n--B0UND\r\ncontent-type: Application/DICOM; transfer-syntax=1.2\r\n\r\n"
        b"\r\n--B0UND\r\n\r\nheaderless\r\n--B0UND--\r\nan epilogue"
    )
    parts = split_multipart(body, "B0UND")
    assert parts == [
        Part("application/dicom", b"first\r\n--B0UNDnot-a-delimiter\r\n"),
        Part("application/dicom", b""),
        Part("text/plain", b"headerless"),
    ]
    encoded, content_type = encode_multipart([b"one", b"two\r\n"], "xyz")
    assert boundary_of(content_type) == "xyz"
    assert [p.content for p in split_multipart(encoded, "xyz")] == [b"one", b"two\r\n"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"no delimiter at all",
        b"--B0UND--\r\n",  # no part
        b"--B0UND\r\nContent-Type: application/dicom\r\n\r\nnever closed",
        b"--B0UNDgarbage\r\n\r\nx\r\n--B0UND--",
        b"--B0UND\r\nContent-Type: application/dicom" + b"x" * 20000,  # no end of headers
    ],
)
def test_a_broken_multipart_body_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest) as exc:
        split_multipart(body, "B0UND")
    assert exc.value.status == 400


def test_a_part_is_read_as_the_c_store_receiver_takes_it() -> None:
    raw = part10()
    p = read_part10(Part("application/dicom", raw))
    assert p.sop_class_uid == CTImageStorage
    assert p.transfer_syntax_uid == ExplicitVRLittleEndian
    assert raw.endswith(p.dataset)
    assert raw[132:].startswith(p.file_meta)
    assert len(p.file_meta) + len(p.dataset) == len(raw) - 132


@pytest.mark.parametrize(
    ("content_type", "raw", "status"),
    [
        ("application/octet-stream", part10(), 0xC210),
        ("application/dicom", b"\0" * 200, 0xC210),
        ("application/dicom", part10()[:140], 0xC210),  # File Meta cut short
        # File Meta without its SOP Instance UID
        (
            "application/dicom",
            part10().replace(b"\x02\x00\x03\x00UI", b"\x02\x00\x33\x00UI"),
            0xC220,
        ),
    ],
)
def test_a_part_that_is_not_a_part10_file_fails_alone(
    content_type: str, raw: bytes, status: int
) -> None:
    with pytest.raises(IngestError) as exc:
        read_part10(Part(content_type, raw))
    assert exc.value.status == status


# --- the response ---------------------------------------------------------------------


def test_the_response_lists_stored_and_refused_instances_with_their_reason() -> None:
    ok = InstanceOutcome("1.2.840.10008.5.1.4.1.1.2", "1.2.3.1")
    bad = InstanceOutcome("1.2.840.10008.5.1.4.1.1.2", "1.2.3.2", 0xA900, 'a "reason"')
    unread = InstanceOutcome("", "", 0xC210, "not a PS3.10 file")
    body = response_body([ok, bad, unread])
    assert body[FAILED_SOP_SEQUENCE] == {
        "vr": "SQ",
        "Value": [
            {
                "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                "00081155": {"vr": "UI", "Value": ["1.2.3.2"]},
                FAILURE_REASON: {"vr": "US", "Value": [0xA900]},
            },
            {
                "00081150": {"vr": "UI"},
                "00081155": {"vr": "UI"},
                FAILURE_REASON: {"vr": "US", "Value": [0xC210]},
            },
        ],
    }
    assert body[REFERENCED_SOP_SEQUENCE]["Value"] == [  # type: ignore[index]
        {
            "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
            REFERENCED_SOP_INSTANCE_UID: {"vr": "UI", "Value": ["1.2.3.1"]},
        }
    ]
    # what our own STOW-RS client reads of it
    assert read_response(body) == ({"1.2.3.2": 0xA900}, {"1.2.3.1"})
    assert warnings([ok, bad, unread]) == [
        "299 cds \"part 2: A900 a 'reason'\"",
        '299 cds "part 3: C210 not a PS3.10 file"',
    ]
    assert response_body([ok]).keys() == {REFERENCED_SOP_SEQUENCE}


def test_the_http_status_follows_ps3_18() -> None:
    ok = InstanceOutcome("1.2", "1.2.1")

    def failed(status: int) -> InstanceOutcome:
        return InstanceOutcome("1.2", "1.2.2", status, "x")

    assert http_status([ok, ok]) == 200
    assert http_status([ok, failed(0xA900)]) == 202
    assert http_status([failed(0xA900), failed(0xC210)]) == 409
    assert http_status([failed(0xC210), failed(0xC220)]) == 400
    assert http_status([failed(0xA700)]) == 503


# --- the route -------------------------------------------------------------------------


@pytest.fixture
def stow(tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    settings = token_settings(tmp_path / "home", http={"max_stow_bytes": 64 * 1024})
    with TestClient(create_app(settings)) as c:
        yield c, settings


def _post(client: TestClient, parts: list[bytes], path: str = "/dicomweb/studies") -> object:
    body, content_type = encode_multipart(parts)
    headers = {**bearer("admin"), "Content-Type": content_type, "Accept": "application/dicom+json"}
    return client.post(path, content=body, headers=headers)


def _spooled(client: TestClient, settings: Settings, sop_uid: str) -> bytes:
    node = client.app.state.node  # type: ignore[attr-defined]
    found = node.store.find_instance(sop_uid)
    assert found is not None, sop_uid
    return (settings.spool_path / found[1]).read_bytes()


def test_stow_stores_each_good_part_and_refuses_the_bad_one_alone(
    stow: tuple[TestClient, Settings],
) -> None:
    client, settings = stow
    study = generate_uid()
    good = [part10(study), part10(study)]
    with capture_logs() as logs:
        r = _post(client, [good[0], b"not DICOM at all", good[1]])
    assert r.status_code == 202, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/dicom+json"  # type: ignore[attr-defined]
    failed, stored = read_response(r.json())  # type: ignore[attr-defined]
    uids = [read_part10(Part("application/dicom", g)).sop_uid for g in good]
    assert stored == set(uids)
    assert failed == {}  # the bad part has no UID to name: its item is there without one
    items = r.json()[FAILED_SOP_SEQUENCE]["Value"]  # type: ignore[attr-defined]
    assert [i[FAILURE_REASON]["Value"] for i in items] == [[0xC210]]
    assert "part 2: C210" in r.headers["warning"]  # type: ignore[attr-defined]
    # the data set is spooled as sent, behind the node's own File Meta
    for raw, uid in zip(good, uids, strict=True):
        sent = read_part10(Part("application/dicom", raw)).dataset
        assert (
            read_part10(Part("application/dicom", _spooled(client, settings, uid))).dataset == sent
        )
    # recorded for assembly like a C-STORE, from the calling AE DICOMWEB
    node = client.app.state.node  # type: ignore[attr-defined]
    (summary,) = [s for s in node.store.list_studies(None, 100, 0) if s.study_uid == study]
    assert summary.calling_ae == "DICOMWEB"
    received = [a for a in audit_records(settings) if a["event"] == "instances_received"]
    assert received[-1]["detail"]["instances"] == 2
    assert received[-1]["detail"]["failed"] == 1
    assert received[-1]["who"] == "user:pacs.admin"
    events = [e["event"] for e in logs]
    assert "ingest.instance_refused" in events
    assert "ingest.stow_received" in events
    assert PATIENT_NAME not in repr(logs) + r.text  # type: ignore[attr-defined]


def test_a_resend_is_success_and_a_study_mismatch_is_refused(
    stow: tuple[TestClient, Settings],
) -> None:
    client, _ = stow
    study = generate_uid()
    raw = part10(study)
    assert _post(client, [raw]).status_code == 200  # type: ignore[attr-defined]
    again = _post(client, [raw], f"/dicomweb/studies/{study}")
    assert again.status_code == 200, again.text  # type: ignore[attr-defined]
    other = part10(generate_uid())
    r = _post(client, [other], f"/dicomweb/studies/{study}")
    assert r.status_code == 409, r.text  # type: ignore[attr-defined]
    failed, stored = read_response(r.json())  # type: ignore[attr-defined]
    assert list(failed.values()) == [0xA900]
    assert not stored
    assert "StudyInstanceUID differs from the study in the URL" in r.headers["warning"]  # type: ignore[attr-defined]
    node = client.app.state.node  # type: ignore[attr-defined]
    assert node.store.find_instance(next(iter(failed))) is None
    assert _post(client, [raw], "/dicomweb/studies/not-a-uid").status_code == 400  # type: ignore[attr-defined]


def test_a_request_that_is_not_stow_is_refused_whole(stow: tuple[TestClient, Settings]) -> None:
    client, _ = stow
    headers = {**bearer("admin"), "Content-Type": "application/dicom"}
    assert client.post("/dicomweb/studies", content=part10(), headers=headers).status_code == 415
    headers["Content-Type"] = STOW_TYPE
    r = client.post("/dicomweb/studies", content=b"--B0UND\r\n\r\nunterminated", headers=headers)
    assert r.status_code == 400
    assert "closing boundary" in r.json()["detail"]
    # over http.max_stow_bytes (64 KiB here): 413 before it is read
    big = _post(client, [part10(), b"\0" * 70 * 1024])
    assert big.status_code == 413  # type: ignore[attr-defined]
    assert "max_stow_bytes" in big.text  # type: ignore[attr-defined]


def test_only_the_admin_role_may_store(stow: tuple[TestClient, Settings]) -> None:
    client, _ = stow
    body, content_type = encode_multipart([part10()])
    for role in ("radiologist", "observer"):
        headers = {**bearer(role), "Content-Type": content_type}
        assert client.post("/dicomweb/studies", content=body, headers=headers).status_code == 403
    assert client.post("/dicomweb/studies", content=body).status_code == 401
