"""The cds exception hierarchy: one base, one subclass per stage.

Messages name the field, file or DICOM tag at fault. Bad arguments to our own
functions still raise the built-ins (ValueError, TypeError).
"""


class CdsError(Exception):
    """Base of every error cds raises on purpose."""


class ConfigError(CdsError):
    """The configuration is invalid; ``errors`` lists every problem as 'path: message'."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}:\n  " + "\n  ".join(errors))


class IngestError(CdsError):
    """An incoming instance cannot be accepted.

    ``status`` is the DIMSE status the C-STORE SCP answers with and the message
    becomes its Error Comment, so it must name the problem and carry no patient data.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class StoreError(CdsError):
    """The state store cannot be reached or refused an operation."""


class RoutingError(CdsError):
    """A routing rule or routing file is invalid."""


class ModelError(CdsError):
    """A model package is invalid or failed to run."""


class EncodingError(CdsError):
    """A result object could not be built as valid DICOM."""


class DeliveryError(CdsError):
    """A result could not be sent to its destination."""


class AdminError(CdsError):
    """An admin operation (retry, re-run, cancel, purge) is refused.

    ``status`` is the HTTP status the API answers with (404: no such job or
    study; 409: not allowed in its current state; 503: the node is stopping);
    the CLI prints the message and exits 1.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class FeedbackError(CdsError):
    """Feedback refused (unknown finding, invalid correction), with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
