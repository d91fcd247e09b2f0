"""issue 16: what of an exception may be stored or shown (``cds.errors.safe_message``):
the type, a generic reason and the attributes named, never a data value."""

from __future__ import annotations

import pytest

from cds.errors import EncodingError, IngestError, describe, error_text, safe_message

VALUE = "CANARYX^JEANNE"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # highdicom / pydicom quoting the value they refuse
        (
            ValueError(f"Unable to convert '{VALUE}' to 'DA' object"),
            "ValueError: invalid value for VR DA",
        ),
        (
            ValueError(f"Invalid value for VR PN: {VALUE} in (0010,0010)"),
            "ValueError: invalid value for VR PN in (0010,0010) PatientName",
        ),
        (
            ValueError("The value length (49) exceeds the maximum length of 16 allowed for VR SH."),
            "ValueError: value too long for VR SH",
        ),
        # a keyword named, bare or quoted; a quoted value that is no keyword is dropped
        (
            AttributeError(f"'AccessionNumber' is {VALUE!r} and 'PatientBirthDate' too"),
            "AttributeError: missing attribute in (0008,0050) AccessionNumber, "
            "(0010,0030) PatientBirthDate",
        ),
        (KeyError("PatientID"), "KeyError: missing attribute in (0010,0020) PatientID"),
        # a message with nothing recognisable is withheld
        (RuntimeError(VALUE), "RuntimeError: details withheld (they may quote data values)"),
        # the system's own words for an OSError, never its file name
        (
            FileNotFoundError(2, "No such file or directory", f"/in/{VALUE}.dcm"),
            "FileNotFoundError: No such file or directory",
        ),
    ],
)
def test_a_library_exception_is_described_without_its_text(
    exc: BaseException, expected: str
) -> None:
    assert describe(exc) == expected
    assert safe_message(exc) == expected == error_text(exc)


def _wrapped(cause: Exception) -> EncodingError:
    """An EncodingError quoting ``cause``, as the result encoders raise it."""
    try:
        raise cause
    except ValueError as exc:
        wrapped = EncodingError(f"SR of m 1.0 is not valid: {exc}")
        wrapped.__cause__ = exc
        return wrapped


def test_our_errors_keep_their_words_but_not_the_cause_they_quote() -> None:
    wrapped = _wrapped(ValueError(f"Unable to convert '{VALUE}' to 'DA' object"))
    assert VALUE in str(wrapped)
    assert safe_message(wrapped) == "SR of m 1.0 is not valid: ValueError: invalid value for VR DA"
    assert error_text(wrapped) == (
        "EncodingError: SR of m 1.0 is not valid: ValueError: invalid value for VR DA"
    )
    # quoted text left in our own message is masked, last
    assert safe_message(IngestError(0xC210, f"bad value '{VALUE}'")) == "bad value '…'"
