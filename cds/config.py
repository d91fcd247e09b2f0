"""One typed Settings object, validated at start.

Sources, lowest to highest priority: built-in defaults, the YAML file given
with ``--config``, then environment variables ``CDS_<SECTION>__<KEY>`` (for
example ``CDS_DICOM__PORT=11113``). Every error is reported with its path
(``dicom.port: must be 1..65535``) and the node refuses to start.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
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


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080


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
