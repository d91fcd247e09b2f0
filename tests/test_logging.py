"""issue 2: logs are JSON events; patient data never reaches them."""

from __future__ import annotations

import json
import logging
from io import StringIO

import pytest
from pydicom.valuerep import PersonName

from cds.logging import configure_logging, get_logger, scrub_patient_data, study_key


def test_scrubber_removes_patient_keys_and_person_names() -> None:
    out = scrub_patient_data(
        None,
        "info",
        {
            "event": "x",
            "PatientName": "DOE^J",
            "patient_id": "123",
            "accession_number": "A1",
            "who": PersonName("DOE^JANE"),
            "study_key": "abc",
        },
    )
    assert out["PatientName"] == out["patient_id"] == out["accession_number"] == "[removed]"
    assert out["who"] == "[removed]"
    assert out["study_key"] == "abc"


def test_json_lines_through_structlog_and_stdlib(json_logs: StringIO) -> None:
    get_logger("cds.test").info("test.event", study_key="k", PatientName="CANARY^X")
    logging.getLogger("pynetdicom").info("identifiers CANARY")  # held at WARNING
    logging.getLogger("other").warning("plain %s", "message")
    lines = [json.loads(x) for x in json_logs.getvalue().splitlines()]
    assert lines[0]["event"] == "test.event"
    assert lines[0]["PatientName"] == "[removed]"
    assert lines[0]["level"] == "info"
    assert lines[1]["event"] == "plain message"
    assert "CANARY" not in json_logs.getvalue()


def test_study_key_is_stable_keyed_and_opaque() -> None:
    a = study_key(b"secret-a", "1.2.3")
    assert a == study_key(b"secret-a", "1.2.3")
    assert a != study_key(b"secret-b", "1.2.3")
    assert len(a) == 16
    assert "1.2.3" not in a


def test_peer_timeouts_from_pynetdicom_are_one_warning_line(json_logs: StringIO) -> None:
    log = logging.getLogger("pynetdicom.dul")
    log.error("Connection closed before the entire PDU was received")
    try:
        raise TimeoutError("timed out")
    except TimeoutError as exc:
        log.exception(exc)
    log.error("Unable to decode the received PDU data")  # not routine: stays an error
    lines = [json.loads(x) for x in json_logs.getvalue().splitlines()]
    assert [x["level"] for x in lines] == ["warning", "warning", "error"]
    assert lines[1]["event"] == "peer connection: TimeoutError"
    assert "Traceback" not in json_logs.getvalue()


def test_highdicom_warnings_that_quote_values_are_silenced(
    json_logs: StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    import highdicom.base

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        configure_logging("json", "debug", stream=json_logs)  # installs the filters again
        warnings.warn_explicit(
            'The string "CANARY" is unlikely to represent the intended person name',
            UserWarning,
            highdicom.base.__file__,
            1,
            module="highdicom.base",
        )
    assert seen == []
    assert "CANARY" not in json_logs.getvalue() + capsys.readouterr().err
