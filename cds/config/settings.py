"""One typed Settings object, validated at start.

Sources, lowest to highest priority: built-in defaults, the YAML file given
with ``--config``, then environment variables ``CDS_<SECTION>__<KEY>`` (for
example ``CDS_DICOM__PORT=11113``). Every error is reported with its path
(``dicom.port: must be 1..65535``) and the node refuses to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cds.config.compute import ExecutorSettings, InferenceSettings
from cds.config.dicom import (
    DicomSettings,
)
from cds.config.http import (
    MIN_SESSION_SECRET_CHARS,
    MIN_TOKEN_CHARS,
    ApiToken,
    AuthSettings,
    HttpSettings,
    OidcSettings,
    Role,
    is_loopback,
    weak_secret,
)
from cds.config.types import AETitle, Port, Seconds, _Section
from cds.config.workflow import WorkflowSettings
from cds.errors import ConfigError

__all__ = [
    "MIN_SESSION_SECRET_CHARS",
    "MIN_TOKEN_CHARS",
    "AETitle",
    "ApiToken",
    "AuthSettings",
    "HttpSettings",
    "OidcSettings",
    "Port",
    "Role",
    "Seconds",
    "Settings",
    "is_loopback",
    "load_settings",
    "redact_url",
    "weak_secret",
]


class SpoolSettings(_Section):
    path: Path | None = Field(None, description="default: <home>/spool")
    min_free_mb: int = Field(
        1024,
        ge=0,
        description="disk watermark: below this many MiB free, C-STORE answers 0xA700",
    )


def redact_url(url: str) -> str:
    """A database URL as it may be shown or logged: its password (in the authority or a
    ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}:***@{host}" if at and ":" in user else parts.netloc
    query = "&".join(
        "password=***" if kv.partition("=")[0].lower() == "password" else kv
        for kv in parts.query.split("&")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))


class StoreSettings(_Section):
    backend: Literal["sqlite", "postgresql"] = Field(
        "sqlite",
        description="sqlite: one file, embedded (one node); postgresql: a server, shared "
        "by several nodes (needs the extra cds[postgres] and store.url)",
    )
    sqlite_path: Path | None = Field(None, description="default: <home>/state.db")
    url: str | None = Field(
        None,
        repr=False,
        description="postgresql://user@host:5432/cds (store.backend postgresql); a "
        "password here is never shown or logged, PGPASSWORD or ~/.pgpass keep it out",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_serializer("url")
    def _url_shown(self, value: str | None) -> str | None:
        return None if value is None else redact_url(value)

    @model_validator(mode="after")
    def _url_with_postgresql(self) -> StoreSettings:
        if self.backend == "postgresql" and self.url is None:
            raise ValueError("store.url is required when store.backend is postgresql")
        return self


class NodeSettings(_Section):
    name: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="this node's name among several on one PostgreSQL store: recorded "
        "with what it receives, claims and runs (cds studies, cds jobs); unique per "
        "node (default: the host name)",
    )
    lease_s: Seconds = Field(
        60.0,
        ge=1.0,
        description="how long this node's claim on a study, a job or a quiet-time check "
        "lasts unless it renews it (every quarter of it, on the assembly tick): a node "
        "killed holding one is taken over by another node this long after its last "
        "renewal; the same on every node of one store",
    )


class AssemblySettings(_Section):
    quiet_time_s: Seconds = Field(
        10.0, description="a study is complete when no instance arrived for this long"
    )
    quiet_time_by_calling_ae: dict[AETitle, Seconds] = Field(
        default_factory=dict, description="per sender overrides of quiet_time_s"
    )
    check_interval_s: Seconds = 0.5


class ExplainLimits(_Section):
    """Bounds on one explain of files (``POST /api/route/explain`` paths, ``cds route
    explain``). Past one the explain stops and is refused (HTTP 413 / CLI exit 2)."""

    max_files: int = Field(10_000, ge=1, le=1_000_000, description="files found, in all")
    max_total_mb: int = Field(2048, ge=1, description="bytes read from the files, in all (MiB)")
    max_seconds: Seconds = Field(30.0, description="wall time of listing and reading")


_NOT_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _check_explain_root(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError("must be an absolute path")
    if value == Path("/") or any(value == p or p in value.parents for p in _NOT_ROOTS):
        raise ValueError("must not be /, /proc, /sys or /dev (or under them)")
    return value


class RoutingSettings(_Section):
    file: Path | None = Field(
        None, description="routing rules (YAML); none = receive only, run no model"
    )
    reload_interval_s: Seconds = Field(2.0, description="how often the file is checked for changes")
    disabled_models: list[str] = Field(
        default_factory=list, description="kill switch: these models never run (also via the API)"
    )
    explain_roots: list[Annotated[Path, AfterValidator(_check_explain_root)]] = Field(
        default_factory=list,
        description="folders whose DICOM files POST /api/route/explain may read (by real "
        "path, links resolved); empty = explain received studies only",
    )
    explain_limits: ExplainLimits = ExplainLimits()


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
    poll_interval_s: Seconds = Field(
        1.0, description="how often the outboxes (deliveries, notifications) are looked at"
    )
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
    node: NodeSettings = NodeSettings()
    dicom: DicomSettings = DicomSettings()
    http: HttpSettings = HttpSettings()
    spool: SpoolSettings = SpoolSettings()
    store: StoreSettings = StoreSettings()
    assembly: AssemblySettings = AssemblySettings()
    inference: InferenceSettings = InferenceSettings()
    executor: ExecutorSettings = ExecutorSettings()
    routing: RoutingSettings = RoutingSettings()
    results: ResultsSettings = ResultsSettings()
    delivery: DeliverySettings = DeliverySettings()
    retention: RetentionSettings = RetentionSettings()
    audit: AuditSettings = AuditSettings()
    privacy: PrivacySettings = PrivacySettings()
    observatory: ObservatorySettings = ObservatorySettings()
    log: LogSettings = LogSettings()
    workflow: WorkflowSettings = WorkflowSettings()  # IHE AI Workflow (UPS-RS), off

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

    @model_validator(mode="after")
    def _lease_outlasts_the_tick(self) -> Settings:
        """Claims are renewed on the assembly tick: a lease no longer than a few ticks
        lapses while its node lives, and another node runs the same work again."""
        tick, lease = self.assembly.check_interval_s, self.node.lease_s
        if lease < 4 * tick:
            raise ValueError(
                f"node.lease_s ({lease:g} s) must be at least 4 x assembly.check_interval_s "
                f"({tick:g} s): claims are renewed on that tick"
            )
        return self

    @model_validator(mode="after")
    def _reuse_port_with_postgresql(self) -> Settings:
        """Nodes sharing one port each receive part of what senders send: only a
        PostgreSQL store makes them one node (one study, claimed and routed once)."""
        if self.dicom.reuse_port and self.store.backend != "postgresql":
            raise _error_at(
                "dicom.reuse_port",
                "requires store.backend postgresql: nodes on SQLite do not coordinate "
                "between processes, so each would route the part of a study it received "
                "as a study of its own",
            )
        return self


def _error_at(path: str, message: str) -> PydanticCustomError:
    """An error of a check across sections, reported under ``path`` (not the top level)."""
    return PydanticCustomError("cross_section", message, {"path": path})


def _format_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "cross_section":
            path = str(err.get("ctx", {}).get("path", path))
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
