"""One typed Settings object, validated at start.

Sources, lowest to highest priority: built-in defaults, the YAML file given
with ``--config``, then environment variables ``CDS_<SECTION>__<KEY>`` (for
example ``CDS_DICOM__PORT=11113``). Every error is reported with its path
(``dicom.port: must be 1..65535``) and the node refuses to start.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cds.errors import ConfigError

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash


def _check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be 1..65535")
    return value


def _check_ae_title(value: str) -> str:
    if not _AE_RE.match(value) or not value.strip():
        raise ValueError("must be 1..16 printable ASCII characters, not only spaces, no backslash")
    return value.strip()


def _check_positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be > 0")
    return value


Port = Annotated[int, AfterValidator(_check_port)]
AETitle = Annotated[str, AfterValidator(_check_ae_title)]
Seconds = Annotated[float, AfterValidator(_check_positive)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DicomTlsSettings(_Section):
    """DICOM over TLS (BCP 195) on a port of its own, beside the plain listener."""

    enabled: bool = False
    port: Port = 2762
    cert_file: Path | None = Field(None, description="our certificate (PEM)")
    key_file: Path | None = Field(None, description="its private key (PEM)")
    ca_file: Path | None = Field(
        None, description="CA bundle (PEM) that client certificates must chain to"
    )
    client_certs: Literal["none", "optional", "required"] = Field(
        "optional", description="whether peers must present a certificate"
    )
    handshake_timeout_s: Seconds = Field(
        10.0,
        description="a TLS handshake not done in this time is dropped (it runs off the "
        "accept loop, so a silent peer delays nobody else)",
    )


class SourceRule(_Section):
    """Who may send: a calling AE title bound to addresses (and a certificate under TLS)."""

    ae_title: AETitle
    addresses: list[str] = Field(
        default_factory=list,
        description="IP addresses or networks (CIDR) this AE title may call from; "
        "empty = any address",
    )
    cert_subject_cn: str | None = Field(
        None,
        description="the Common Name the peer's certificate must carry; a rule that "
        "names one only admits associations over TLS",
    )

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                hint = " (host bits set: name the network, e.g. 10.1.2.0/24)"
                plain = "has host bits set" in str(exc)
                raise ValueError(
                    f"{value!r} is not an IP address or CIDR network{hint if plain else ''}"
                ) from exc
        return values

    @field_validator("cert_subject_cn")
    @classmethod
    def _check_cn(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave it out to not check certificates)")
        return value


class IngestLimits(_Section):
    """Bounds on what one instance may cost us before it is refused and quarantined
    (cds.ingest.receiver; hostile refusals are kept in <spool>/quarantine)."""

    max_dataset_mb: int = Field(
        4096,
        ge=1,
        description="largest data set accepted (MiB, as received): 0xA700 past it, not quarantined",
    )
    max_inflated_mb: int = Field(
        1024,
        ge=1,
        description="a deflated data set that inflates past this is refused (decompression "
        "bomb): 0xA700, quarantined; inflation stops at the cap",
    )
    max_sequence_depth: int = Field(
        32,
        ge=1,
        le=128,
        description="deepest nesting of sequences accepted: 0xC212 past it, quarantined "
        "(checked by a scan that does not recurse). At most 128: every later read "
        "(pydicom, recursive) must get through what passed, and fails near 200",
    )
    max_quarantine_mb: int = Field(
        1024,
        ge=0,
        description="bytes kept in <spool>/quarantine at most (MiB); past it, or below the "
        "spool watermark, only the sidecar of a refused data set is written",
    )


class DicomSettings(_Section):
    """The DICOM listener (C-ECHO, C-STORE SCP)."""

    ae_title: AETitle = "CDS"
    host: str = "0.0.0.0"
    port: Port = 11112
    max_pdu_bytes: int = Field(262_144, ge=0, description="largest PDU we accept; 0 = unlimited")
    max_associations: int = Field(16, ge=1, le=1000)
    acse_timeout_s: Seconds = 30.0
    dimse_timeout_s: Seconds = 60.0
    network_timeout_s: Seconds = Field(
        60.0,
        description="idle association timeout; also the read timeout of every accepted "
        "socket, so a half-sent PDU cannot hold a slot",
    )
    require_called_ae_title: bool = Field(
        True, description="reject associations whose Called AE Title is not ours"
    )
    fast_receive: bool = Field(
        True,
        description="use cds' receive path (cds.ingest.fastpath) instead of pynetdicom's stock "
        "polling loops; turn off to fall back to stock pynetdicom if a peer misbehaves",
    )
    allowed_calling_ae_titles: list[AETitle] = Field(
        default_factory=list,
        description="if not empty, only these Calling AE Titles may associate",
    )
    sources: list[SourceRule] = Field(
        default_factory=list,
        description="if not empty, only these AE titles, from these addresses, may associate",
    )
    tls: DicomTlsSettings = DicomTlsSettings()
    limits: IngestLimits = IngestLimits()


_WEAK_WORDS = frozenset(
    {
        "admin",
        "changeit",
        "changeme",
        "default",
        "example",
        "letmein",
        "password",
        "placeholder",
        "secret",
        "test",
        "token",
    }
)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
MIN_TOKEN_CHARS = 16
MIN_SESSION_SECRET_CHARS = 32


def weak_secret(value: str, min_chars: int) -> str | None:
    """Why ``value`` is not a secret a node may start with (None: it may)."""
    low = value.strip().lower()
    squeezed = re.sub(r"[^a-z0-9]", "", low)
    if len(value) < min_chars:
        return f"shorter than {min_chars} characters"
    if len(set(low)) <= 2:
        return "a placeholder (one or two repeated characters)"
    if squeezed in _WEAK_WORDS or any(
        w in squeezed for w in ("changeme", "placeholder", "example", "password")
    ):
        return "a placeholder or well-known secret"
    if low.startswith("<") and low.endswith(">"):
        return "a placeholder (<...>)"
    return None


def _placeholder_digests() -> frozenset[str]:
    words = set(_WEAK_WORDS) | {"", "changeme123", "<token>", "<hex>"}
    words |= {w.upper() for w in _WEAK_WORDS} | {w.capitalize() for w in _WEAK_WORDS}
    words |= {c * n for c in "x0a1" for n in range(1, 65)}
    return frozenset(hashlib.sha256(w.encode()).hexdigest() for w in words)


_PLACEHOLDER_DIGESTS = _placeholder_digests()

Role = Literal["admin", "radiologist", "observer"]


class ApiToken(_Section):
    """One bearer token: who it is and what they may do."""

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._@-]+$",
        description="who: shown in the audit trail and feedback",
    )
    role: Role
    token_sha256: str | None = Field(
        None, description="hex SHA-256 of the token (preferred: no secret in the file)"
    )
    token: str | None = Field(None, description="the token itself (prefer token_sha256)")

    @field_validator("token_sha256")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _HEX64.match(value):
            raise ValueError("must be 64 hexadecimal characters (cds token new prints one)")
        if value.lower() in _PLACEHOLDER_DIGESTS:
            raise ValueError("is the SHA-256 of a placeholder or well-known secret")
        return value.lower()

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and (why := weak_secret(value, MIN_TOKEN_CHARS)) is not None:
            raise ValueError(f"refused: {why} (cds token new makes a strong one)")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> ApiToken:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token_sha256 (preferred) and token")
        return self


class OidcSettings(_Section):
    issuer: str = Field(min_length=1, description="the identity provider's issuer URL")
    audience: str = Field(
        min_length=1, description="the audience (client id) tokens must be issued for"
    )
    jwks_url: str | None = Field(None, description="default: <issuer>/.well-known/jwks.json")
    jwks_file: Path | None = Field(None, description="keys from a file instead of the network")
    role_claim: str = Field(
        "roles",
        description="claim that lists the user's roles; a dotted path reaches into objects "
        "(realm_access.roles)",
    )
    role_map: dict[str, Role] = Field(
        default_factory=dict,
        description="identity-provider role -> cds role (empty: the claim holds cds role names)",
    )
    username_claim: str = Field(
        "preferred_username", description="claim naming the user (else sub)"
    )

    @property
    def keys_url(self) -> str:
        return self.jwks_url or self.issuer.rstrip("/") + "/.well-known/jwks.json"


class AuthSettings(_Section):
    """Who may use the HTTP API and pages. 'none' is refused off loopback."""

    mode: Literal["none", "token", "oidc"] = "none"
    tokens: list[ApiToken] = Field(default_factory=list)
    oidc: OidcSettings | None = None
    session_secret: str | None = Field(
        None,
        description="signs the review page's login cookie and CSRF tokens "
        "(default: a random key kept in <home>/keys)",
    )
    session_hours: float = Field(
        12.0, gt=0, le=168, description="a page login lasts this long (one shift)"
    )

    @field_validator("session_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and (why := weak_secret(value, MIN_SESSION_SECRET_CHARS)) is not None:
            raise ValueError(f"refused: {why}; leave it out to use a random key in <home>/keys")
        return value

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.mode == "token" and not self.tokens:
            raise ValueError("mode token needs at least one entry in http.auth.tokens")
        if self.mode == "oidc" and self.oidc is None:
            raise ValueError("mode oidc needs the http.auth.oidc section")
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("http.auth.tokens: each name must be given once")
        return self


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the port on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    tls_cert_file: Path | None = Field(None, description="HTTPS certificate (PEM)")
    tls_key_file: Path | None = Field(None, description="HTTPS private key (PEM)")
    auth: AuthSettings = AuthSettings()

    @model_validator(mode="after")
    def _safe(self) -> HttpSettings:
        errors = []
        if self.auth.mode == "none" and not is_loopback(self.host):
            errors.append(
                f"http.auth.mode is none but http.host {self.host!r} is not a loopback address: "
                "anyone on the network could use the API; set http.auth.mode to token or oidc"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            errors.append("http.tls_cert_file and http.tls_key_file must be given together")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @property
    def https(self) -> bool:
        return self.tls_cert_file is not None


class SpoolSettings(_Section):
    path: Path | None = Field(None, description="default: <home>/spool")
    min_free_mb: int = Field(
        1024,
        ge=0,
        description="disk watermark: below this many MiB free, C-STORE answers 0xA700",
    )


class StoreSettings(_Section):
    backend: Literal["sqlite"] = "sqlite"
    sqlite_path: Path | None = Field(None, description="default: <home>/state.db")


class AssemblySettings(_Section):
    quiet_time_s: Seconds = Field(
        10.0, description="a study is complete when no instance arrived for this long"
    )
    quiet_time_by_calling_ae: dict[AETitle, Seconds] = Field(
        default_factory=dict, description="per sender overrides of quiet_time_s"
    )
    check_interval_s: Seconds = 0.5


class InferenceSettings(_Section):
    model_dirs: list[Path] = Field(
        default_factory=lambda: [Path("models")],
        description="folders holding model packages (each sub-folder with a manifest.yaml)",
    )
    providers: Literal["auto", "tensorrt", "cuda", "cpu"] = Field(
        "auto", description="auto = TensorRT/CUDA when really available, else CPU"
    )
    max_sessions_per_gpu: int = Field(1, ge=1, le=64)
    max_sessions_cpu: int = Field(1, ge=1, le=64)
    warm_up: bool = True
    max_job_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="a study whose processing crashes this many times goes to the dead "
        "letter (state failed, an alert), instead of crashing the node again",
    )


class RoutingSettings(_Section):
    file: Path | None = Field(
        None, description="routing rules (YAML); none = receive only, run no model"
    )
    reload_interval_s: Seconds = Field(2.0, description="how often the file is checked for changes")
    disabled_models: list[str] = Field(
        default_factory=list, description="kill switch: these models never run (also via the API)"
    )


class ResultsSettings(_Section):
    language: Literal["en", "fr"] = Field(
        "en", description="language of every text in result objects (both first-class)"
    )
    path: Path | None = Field(
        None, description="where result objects are kept (default: <home>/results)"
    )


class DeliverySettings(_Section):
    """Sending result objects back (C-STORE SCU) to the routing file's destinations."""

    calling_ae_title: AETitle | None = Field(
        None, description="our AE title when we send (default: dicom.ae_title)"
    )
    max_attempts: int = Field(
        8, ge=1, le=1000, description="tries before a delivery goes to the dead letter"
    )
    backoff_initial_s: Seconds = Field(5.0, description="wait after the first failed try")
    backoff_max_s: Seconds = Field(600.0, description="longest wait between tries")
    poll_interval_s: Seconds = Field(1.0, description="how often the outbox is looked at")
    timeout_s: Seconds = Field(
        30.0, description="connect, association and C-STORE response timeout"
    )
    batch_size: int = Field(200, ge=1, le=10_000, description="objects per association at most")


class RetentionSettings(_Section):
    """How long spooled images stay once their results are delivered."""

    spool_days: float | None = Field(
        None,
        gt=0,
        description="purge a study's images this many days after its last "
        "instance, once every result is delivered; none = keep",
    )
    check_interval_s: Seconds = Field(3600.0, description="how often retention runs")


class SyslogSettings(_Section):
    """Send audit messages to an audit record repository (RFC 5424 over TLS, RFC 5425)."""

    host: str
    port: Port = 6514
    ca_file: Path | None = Field(None, description="CA that the repository's certificate chains to")
    cert_file: Path | None = None
    key_file: Path | None = None
    app_name: str = "cds"


class AuditSettings(_Section):
    path: Path | None = Field(None, description="the audit trail (default: <home>/audit)")
    syslog: SyslogSettings | None = Field(
        None, description="also send each record there; spooled while it is down"
    )


class PrivacySettings(_Section):
    """De-identification of anything that leaves other than results to the PACS."""

    key_file: Path | None = Field(
        None,
        description="pseudonymisation key, kept on site: the same key gives the same "
        "pseudonyms and UIDs across exports; created 0600 if missing "
        "(default: <home>/keys/deid.key)",
    )
    exports_path: Path | None = Field(
        None,
        description="where 'cds export case' writes without --out (default: <home>/exports)",
    )
    modified_dates: bool = Field(
        False,
        description="exports take the Retain Longitudinal Temporal Information with Modified "
        "Dates option: study/series/acquisition/content dates shifted by a keyed per-patient "
        "offset instead of removed (intervals kept)",
    )


class ObservatorySettings(_Section):
    drift_baseline_days: Seconds = Field(28.0, description="baseline window (days)")
    drift_recent_days: Seconds = Field(7.0, description="recent window compared (days)")
    drift_baseline_runs: int | None = Field(
        None, ge=1, description="use the first N runs as the baseline instead of a window"
    )
    drift_psi_alert: Seconds = Field(0.25, description="PSI at or above this alerts")
    drift_min_runs: int = Field(30, ge=1, description="fewer runs in a window: no verdict")


class LogSettings(_Section):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """Everything the node needs; every field has a default."""

    model_config = SettingsConfigDict(
        env_prefix="CDS_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path = Field(Path("cds-home"), description="state, spool and keys live here")
    dicom: DicomSettings = DicomSettings()
    http: HttpSettings = HttpSettings()
    spool: SpoolSettings = SpoolSettings()
    store: StoreSettings = StoreSettings()
    assembly: AssemblySettings = AssemblySettings()
    inference: InferenceSettings = InferenceSettings()
    routing: RoutingSettings = RoutingSettings()
    results: ResultsSettings = ResultsSettings()
    delivery: DeliverySettings = DeliverySettings()
    retention: RetentionSettings = RetentionSettings()
    audit: AuditSettings = AuditSettings()
    privacy: PrivacySettings = PrivacySettings()
    observatory: ObservatorySettings = ObservatorySettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML file (passed as init kwargs) beats defaults.
        return (env_settings, init_settings)

    @property
    def spool_path(self) -> Path:
        return self.spool.path if self.spool.path is not None else self.home / "spool"

    @property
    def sqlite_path(self) -> Path:
        return (
            self.store.sqlite_path if self.store.sqlite_path is not None else self.home / "state.db"
        )

    @property
    def results_path(self) -> Path:
        return self.results.path if self.results.path is not None else self.home / "results"

    @property
    def audit_path(self) -> Path:
        return self.audit.path if self.audit.path is not None else self.home / "audit"

    @property
    def keys_path(self) -> Path:
        return self.home / "keys"

    @property
    def deid_key_path(self) -> Path:
        return (
            self.privacy.key_file
            if self.privacy.key_file is not None
            else self.keys_path / "deid.key"
        )

    @property
    def exports_path(self) -> Path:
        return (
            self.privacy.exports_path
            if self.privacy.exports_path is not None
            else self.home / "exports"
        )

    def quiet_time_for(self, calling_ae: str) -> float:
        return self.assembly.quiet_time_by_calling_ae.get(
            calling_ae.strip(), self.assembly.quiet_time_s
        )


def _format_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        out.append(f"{path}: {msg}")
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config file; errors name the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"], str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{path}:{where} not valid YAML"], str(path)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: top level must be a mapping of sections"], str(path))
    return data


def load_settings(config_file: Path | None = None, home: Path | None = None) -> Settings:
    """Build Settings from defaults, an optional YAML file and the environment.

    ``home`` (from ``--home``) overrides the file and the environment.
    Raises ConfigError listing every problem by path.
    """
    data: dict[str, Any] = read_yaml(config_file) if config_file is not None else {}
    if home is not None:
        data["home"] = str(home)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc), str(config_file) if config_file else None) from exc
    if home is not None and settings.home != home:
        settings = settings.model_copy(update={"home": home})
    return settings
