"""Service settings: environment variables (``COUNTYREAD_*``) over an optional TOML file.

Precedence, highest first: explicit keyword arguments, environment variables, the TOML
file named by ``COUNTYREAD_CONFIG`` (or ``--config`` on the command line), defaults.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from countyread.domain import Urgency
from countyread.errors import ConfigurationError

_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev-insecure-secret"}


class Settings(BaseSettings):
    """All runtime settings of CountyRead, validated at start-up."""

    model_config = SettingsConfigDict(env_prefix="COUNTYREAD_", extra="forbid")

    environment: Literal["development", "production", "test"] = "development"
    data_dir: Path = Field(default=Path("./var"), description="file store, database, logs")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite inside data_dir"
    )

    # DICOM node
    ae_title: str = "COUNTYREAD"
    dicom_host: str = "0.0.0.0"
    dicom_port: int = Field(default=11112, ge=0, le=65535, description="0: any free port")
    accept_any_ae: bool = False
    stable_quiet_s: float = Field(default=10.0, gt=0, description="series quiet time")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = Field(default=None, description="require client certs signed by it")
    max_associations: int = Field(default=32, ge=1)
    dimse_timeout_s: float = Field(default=60.0, gt=0)
    dicom_engine: Literal["fast", "pynetdicom"] = Field(
        default="fast", description="DICOM upper layer: our fast acceptor or pynetdicom")

    # API
    api_host: str = "0.0.0.0"
    api_port: int = Field(default=8000, ge=1, le=65535)
    secret_key: str = "dev-insecure-secret"
    token_ttl_s: int = Field(default=8 * 3600, gt=0)
    claim_ttl_s: int = Field(default=30 * 60, gt=0)
    login_max_failures: int = Field(
        default=5, ge=1, description="failed logins per user (4x per client) before lockout")
    login_lockout_s: int = Field(default=15 * 60, gt=0, description="lockout window")
    deadline_critical_s: int = Field(default=30 * 60, gt=0)
    deadline_urgent_s: int = Field(default=4 * 3600, gt=0)
    deadline_routine_s: int = Field(default=24 * 3600, gt=0)

    # Workers and models
    workers: int = Field(default=1, ge=0, description="analysis worker threads in serve")
    job_lease_s: float = Field(default=600.0, gt=0)
    queue_backend: Literal["database", "celery"] = Field(
        default="database",
        description="database: workers poll the job table; celery: Redis wake-ups as well")
    broker_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Celery broker (queue_backend=celery)")
    celery_queue: str = Field(default="countyread.analyze", min_length=1)
    sweep_interval_s: float = Field(
        default=30.0, gt=0, description="celery: re-publish wake-ups of jobs left waiting")
    models_dir: Path | None = Field(default=None, description="default: shipped models/")
    providers: str = Field(default="auto", description="auto, or a comma list: tensorrt,cuda,cpu")
    enable_tensorrt: bool = False
    intra_op_threads: int = Field(default=0, ge=0, description="0: one per core")

    # Results back
    alert_min_urgency: Urgency = Field(
        default=Urgency.CRITICAL,
        description="AI urgency that sends an unreviewed alert to nodes opted in with ALERT")
    export_retry_base_s: float = Field(default=5.0, gt=0)
    export_retry_max_s: float = Field(default=600.0, gt=0)

    # Retention (countyread/retention.py); 0 keeps everything
    retention_days: int = Field(
        default=0, ge=0, description="remove source images of delivered studies after N days")
    quarantine_retention_days: int = Field(
        default=0, ge=0, description="remove quarantined files after N days")

    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("COUNTYREAD_CONFIG")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        # PS3.5 6.2: AE titles are at most 16 characters, no backslash or control chars.
        stripped = value.strip()
        if not stripped or len(stripped) > 16 or "\\" in stripped:
            raise ValueError("must be 1 to 16 characters without backslash")
        if any(ord(ch) < 32 or ord(ch) > 126 for ch in stripped):
            raise ValueError("must be printable ASCII")
        return stripped

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.environment == "production" and self.secret_key in _PLACEHOLDER_SECRETS:
            raise ValueError("COUNTYREAD_SECRET_KEY must be set to a real secret in production")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("COUNTYREAD_TLS_CERT and COUNTYREAD_TLS_KEY go together")
        return self

    @property
    def uses_placeholder_secret(self) -> bool:
        return self.secret_key in _PLACEHOLDER_SECRETS

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'countyread.db').resolve()}"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into one readable ConfigurationError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"COUNTYREAD_{field.upper()}" if err["loc"] else field
            if err["type"] == "extra_forbidden":
                lines.append(f"  unknown setting {field!r} (check the spelling)")
            else:
                lines.append(f"  {env}: {err['msg']}")
        raise ConfigurationError("invalid settings:\n" + "\n".join(lines)) from None
