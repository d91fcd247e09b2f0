"""Where results go: the ``destinations`` of the routing file, one kind per protocol.

    destinations:
      pacs: {ae_title: ORTHANC, host: 10.0.0.5, port: 4242}      # C-STORE (kind: dimse)
      archive:                                                    # STOW-RS (PS3.18 10.5)
        kind: dicomweb
        url: https://archive.example/dicom-web                    # results POSTed to <url>/studies
        auth: {bearer_token_file: /etc/cds/archive.token}         # or {username, password_file}
        tls: {ca_file: /etc/cds/hospital-ca.pem}                  # verify: true unless said

``kind`` may be left out for C-STORE (every routing file written before DICOMweb).
Secrets never sit in the routing file: a bearer token or a password is read from
its file at each delivery (so it can be rotated), and is never logged, audited or
shown by ``GET /api/routing``. A URL carrying credentials is refused.

Archives (``archives``, read by ``cds backfill``) are where studies are fetched from,
with the same fields: a DIMSE archive (``ae_title``, ``host``, ``port``, ``tls``,
``retrieve: move|get``) or a DICOMweb one (``dicomweb_url``, ``auth``, ``tls``)::

    archives:
      pacs-archive: {ae_title: ARCHIVE, host: 10.0.0.7, port: 104}
"""

from __future__ import annotations

import base64
import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

#: the values of ``kind``; the first is the default
KINDS = ("dimse", "dicomweb")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Tls(_Strict):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class Destination(_Strict):
    """A PACS reached by C-STORE (``cds.delivery.scu``)."""

    kind: Literal["dimse"] = "dimse"
    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    tls: Tls = Tls()

    @property
    def target(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"{self.target}{' (TLS)' if self.tls.enabled else ''}"


class WebAuth(_Strict):
    """HTTP authentication of a DICOMweb destination: a bearer token, or basic auth."""

    bearer_token_file: Path | None = Field(None, description="file holding the bearer token")
    username: str | None = Field(None, min_length=1, description="basic auth user")
    password_file: Path | None = Field(None, description="file holding the basic auth password")

    @model_validator(mode="after")
    def _one_scheme(self) -> WebAuth:
        basic = self.username is not None or self.password_file is not None
        if (self.bearer_token_file is not None) == basic:
            raise ValueError("give either bearer_token_file, or username and password_file")
        if basic and (self.username is None or self.password_file is None):
            raise ValueError("basic auth needs both username and password_file")
        if self.username is not None and ":" in self.username:
            raise ValueError("a basic auth username cannot hold ':'")
        return self

    def header(self) -> str:
        """The Authorization header's value, its secret read from the file now (so that it
        can be rotated); OSError when the file cannot be read."""
        if self.bearer_token_file is not None:
            return f"Bearer {self.bearer_token_file.read_text(encoding='utf-8').strip()}"
        assert self.username is not None
        assert self.password_file is not None
        password = self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        pair = f"{self.username}:{password}".encode()
        return f"Basic {base64.b64encode(pair).decode('ascii')}"


class WebTls(_Strict):
    """How the server's certificate is checked (https URLs), and our client certificate."""

    verify: bool = Field(True, description="false: accept any server certificate (testing)")
    ca_file: Path | None = Field(None, description="CA bundle that signs the server certificate")
    cert_file: Path | None = Field(None, description="client certificate (PEM), if required")
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext | bool:
        """An HTTP client's ``verify``: False when not verifying, else a context trusting
        ``ca_file`` (or the system's CAs) and presenting our certificate if given;
        OSError or ssl.SSLError when a file cannot be read."""
        if not self.verify:
            return False
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None
        )
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx


class DicomWebDestination(_Strict):
    """A DICOMweb origin server reached by STOW-RS (``cds.delivery.dicomweb``)."""

    kind: Literal["dicomweb"]
    url: str = Field(min_length=1, description="the service root; results go to <url>/studies")
    auth: WebAuth | None = None
    tls: WebTls = WebTls()

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        return check_service_url(v)

    @property
    def target(self) -> str:
        return self.url

    @property
    def address(self) -> str:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.hostname}:{port}"

    def describe(self) -> str:
        return f"STOW-RS {self.url}"


def check_service_url(v: str) -> str:
    """A DICOMweb service root: http(s), a host, no credentials, query or fragment."""
    try:
        parts = urlsplit(v)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not belong in the URL: use auth")
    if parts.query or parts.fragment:
        raise ValueError("the service root takes no query or fragment")
    return v.rstrip("/")


class DimseArchive(_Strict):
    """An archive queried by C-FIND and retrieved from by C-MOVE to the node's own AE
    title (the archive must know that AE title, its host and port) or, with
    ``retrieve: get``, by C-GET on the query's association (``cds.ingest.archive``)."""

    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    tls: Tls = Tls()
    retrieve: Literal["move", "get"] = Field(
        "move", description="move: C-MOVE to our AE title (the default); get: C-GET"
    )

    @property
    def target(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def describe(self) -> str:
        return f"{self.target}{' (TLS)' if self.tls.enabled else ''}"


class DicomWebArchive(_Strict):
    """An archive reached by QIDO-RS/WADO-RS at ``dicomweb_url``
    (``cds.ingest.archive_web``): ``auth`` and ``tls`` as a DICOMweb destination's."""

    dicomweb_url: str = Field(min_length=1, description="the service root (QIDO-RS, WADO-RS)")
    auth: WebAuth | None = None
    tls: WebTls = WebTls()

    @field_validator("dicomweb_url")
    @classmethod
    def _http(cls, v: str) -> str:
        return check_service_url(v)

    def describe(self) -> str:
        return f"DICOMweb {self.dicomweb_url}"


def _archive_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "dicomweb" if "dicomweb_url" in value else "dimse"
    return "dicomweb" if isinstance(value, DicomWebArchive) else "dimse"


#: an ``archives`` entry: DIMSE (ae_title, host, port) or DICOMweb (dicomweb_url)
AnyArchive = Annotated[
    Annotated[DimseArchive, Tag("dimse")] | Annotated[DicomWebArchive, Tag("dicomweb")],
    Discriminator(_archive_kind),
]
SomeArchive = DimseArchive | DicomWebArchive


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", KINDS[0]))
    return str(getattr(value, "kind", KINDS[0]))


#: a destination of either kind, as the routing file gives it (``kind`` picks the model)
AnyDestination = Annotated[
    Annotated[Destination, Tag("dimse")] | Annotated[DicomWebDestination, Tag("dicomweb")],
    Discriminator(_kind),
]
#: the same, for annotations outside pydantic
SomeDestination = Destination | DicomWebDestination


# --- urgent-finding notifications (a pipeline's notify, the targets they go to) ---
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
#: headers cds sets itself on a notification
_OWN_HEADERS = frozenset({"content-type", "content-length", "host"})
ANY_FINDING = "any"


class FhirTarget(_Strict):
    """Where an urgent finding is announced: an HTTP(S) endpoint receiving a FHIR R4
    DiagnosticReport by POST. Header values (tokens) are kept as secrets: they never
    show in a repr, a log line or a dump of the routing file."""

    url: str = Field(min_length=1)
    format: Literal["fhir-r4"] = "fhir-r4"
    timeout_s: float = Field(10.0, gt=0, le=300)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    verify_tls: bool = Field(True, description="false: accept any server certificate (testing)")
    ca_file: Path | None = Field(None, description="CA bundle that signs the server certificate")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        try:
            parts = urlsplit(v)
            _ = parts.port  # a port that is not a number raises here
        except ValueError as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, not {v!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials do not belong in the URL: put them in headers")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in v.items():
            if not _HEADER_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"{name} is set by cds, not by the routing file")
            if any(c in value.get_secret_value() for c in "\r\n\0"):
                raise ValueError(f"the value of {name} holds a line break or NUL")
        return v


class Hl7v2Target(_Strict):
    """A RIS receiving an HL7 v2.5.1 ORU^R01 over MLLP (``cds.delivery.hl7v2``): the
    findings in OBX segments, the priority in OBR, an ACK required (AA: sent; AE, AR or
    none before ``timeout_s``: tried again). ``tls`` as a DIMSE destination's. No patient
    identifier is sent: the RIS maps the Study Instance UID (OBR-3, an OBX)."""

    format: Literal["hl7v2"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    tls: Tls = Tls()
    timeout_s: float = Field(10.0, gt=0, le=300, description="connect and ACK timeout")
    receiving_application: str = Field("", max_length=227, description="MSH-5")
    receiving_facility: str = Field("", max_length=227, description="MSH-6")
    priority: Literal["stat", "asap"] = Field(
        "stat", description="OBR-5 and OBR-27's priority: stat (S) or asap (A)"
    )

    @field_validator("receiving_application", "receiving_facility")
    @classmethod
    def _plain(cls, v: str) -> str:
        if any(c in v for c in "|^~\\&\r\n"):
            raise ValueError("holds an HL7 separator or a line break")
        return v

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


#: the values of a notification target's ``format``; the first is the default
NOTIFY_FORMATS = ("fhir-r4", "hl7v2")


def _format(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("format", NOTIFY_FORMATS[0]))
    return str(getattr(value, "format", NOTIFY_FORMATS[0]))


#: a ``notifications`` entry: FHIR R4 over HTTP(S) (the default) or HL7 v2 over MLLP
NotificationTarget = Annotated[
    Annotated[FhirTarget, Tag("fhir-r4")] | Annotated[Hl7v2Target, Tag("hl7v2")],
    Discriminator(_format),
]
#: the same, for annotations outside pydantic
SomeNotificationTarget = FhirTarget | Hl7v2Target


class Notify(_Strict):
    """A pipeline's urgent findings, and the target they are announced to."""

    target: str = Field(min_length=1, description="a name under notifications")
    findings: list[str] = Field(
        min_length=1,
        description='code values of the findings that are urgent, or ["any"]: any finding '
        "the model reports present",
    )
    min_score: float | None = Field(None, ge=0, le=1, description="and scored at least this")

    @field_validator("findings")
    @classmethod
    def _any_alone(cls, v: list[str]) -> list[str]:
        if ANY_FINDING in v and len(v) > 1:
            raise ValueError(f'"{ANY_FINDING}" already matches every finding: list it alone')
        if any(not c.strip() for c in v):
            raise ValueError("a code value is empty")
        return v
