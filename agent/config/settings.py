"""The configuration's shape: one pydantic model per TOML section, and :class:`Settings` for all.

Strict on purpose: an unknown key or a wrong type is an error (see :mod:`agent.config.load` for
how it is reported), because a log shipper that silently ignores a typo (``max_age_ms`` spelled
``max_agems``) loses data in production. Secrets never come from the TOML file: the database
password comes from ``password_file``, ``HYPERTAIL_DATABASE__PASSWORD`` or ``PGPASSWORD``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "HYPERTAIL_"
CONFIG_ENV = "HYPERTAIL_CONFIG"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    """Where rows go. Leave ``dsn`` unset to run against an embedded PostgreSQL."""

    dsn: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None
    statement_timeout_ms: int = Field(default=30_000, ge=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    retry_initial_ms: int = Field(default=100, ge=1)
    retry_max_ms: int = Field(default=5000, ge=1)

    @field_validator("dsn")
    @classmethod
    def _dsn_is_postgres(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql:// (a libpq URI)")
        return v

    def resolved_password(self) -> str | None:
        """The password from the environment setting or the password file, if any."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return None


class SourceSettings(_Section):
    """One group of files to tail. ``paths`` and ``exclude`` are globs; ``**`` crosses folders."""

    name: str = Field(min_length=1)
    paths: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)
    start_at: Literal["beginning", "end"] = "beginning"
    # What the lines are: JSON lines as agent.emit and structlog write them, or OTLP JSON Lines as
    # OpenTelemetry's file exporters write them (each line a batch of spans, log records or metric
    # data points; any other line is read as a structlog line). See docs/opentelemetry.md.
    format: Literal["structlog", "otlp_json"] = "structlog"
    record_type_key: str = Field(default="record_type", min_length=1)
    # Ordinary log lines (no record_type_key): stored in observability.logs, or only counted.
    app_logs: Literal["store", "skip"] = "store"
    # With "store", lines below this level are only counted; None (default) stores every level.
    app_logs_min_level: Literal["debug", "info", "warning", "error", "critical"] | None = None

    @field_validator("paths")
    @classmethod
    def _no_empty_globs(cls, v: list[str]) -> list[str]:
        if any(not p.strip() for p in v):
            raise ValueError("globs must not be empty strings")
        return v


class TailSettings(_Section):
    """How files are read. The defaults suit ordinary application logs."""

    # An OpenTelemetry exporter writes a batch of up to 512 spans or log records a line: ~0.3 MiB
    # for GenAI spans without message content, several MiB with it (bench/otel.py, docs/opentelemetry.md).
    max_line_bytes: int = Field(default=16 << 20, ge=1024)
    oversize_prefix_bytes: int = Field(default=4096, ge=1)
    max_open_files: int = Field(default=256, ge=1)
    rescan_interval_ms: int = Field(default=1000, ge=10)
    read_interval_ms: int = Field(default=250, ge=10)
    use_events: bool = True
    debounce_ms: int = Field(default=20, ge=1)
    rotate_grace_ms: int = Field(default=5000, ge=0)
    idle_close_s: float = Field(default=60.0, gt=0)
    follow_symlinks: Literal["within_roots", "never", "always"] = "within_roots"


class BatchSettings(_Section):
    """When a batch is flushed, and how much may wait in memory before reading pauses."""

    max_rows: int = Field(default=5000, ge=1)
    max_bytes: int = Field(default=4 << 20, ge=1024)
    max_age_ms: int = Field(default=200, ge=1)
    memory_budget_bytes: int = Field(default=64 << 20, ge=1 << 20)


class AgentSettings(_Section):
    """Who this agent is (ids derived from it must stay stable across restarts)."""

    id: str = Field(default_factory=socket.gethostname, min_length=1)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    data_dir: Path | None = None
    # The embedded PostgreSQL (no database.dsn) outlives the command unless this is false.
    embedded_keep_running: bool = True
    checkpoint_retention_days: int = Field(default=30, ge=0)
    # The agent's own log on stdout: the lowest level written, and JSON lines or readable ones
    # (auto: readable on a terminal, JSON otherwise). `hypertail run --log-level/--log-format` beat these.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"


class HttpSettings(_Section):
    """Probes and Prometheus metrics."""

    enabled: bool = True
    listen: str = "127.0.0.1:8686"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port with a port from 1 to 65535, e.g. 0.0.0.0:8686")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class OpsSettings(_Section):
    """Background jobs: sync status, readiness lag budget, metrics rollup."""

    sync_interval_ms: int = Field(default=2000, ge=100)
    ready_max_lag_bytes: int = Field(default=256 << 20, ge=0)
    rollup_enabled: bool = True
    rollup_interval_s: float = Field(default=60.0, gt=0)
    rollup_lookback_1m_s: int = Field(default=900, ge=60)
    rollup_lookback_1h_s: int = Field(default=3 * 3600, ge=3600)
    # An ingest.progress line this often while there is work (lines read or bytes behind); 0: never.
    progress_interval_s: float = Field(default=60.0, ge=0)


class SchemaSettings(_Section):
    """Schema management. Turn ``apply_on_start`` off when the agent's role may not run DDL."""

    apply_on_start: bool = True
    # auto: TimescaleDB when the extension can really be created, else plain mode with a warning;
    # require: refuse to run without it; off: plain PostgreSQL tables even where it is installed.
    timescaledb: Literal["auto", "require", "off"] = "auto"
    compress_after_days: int = Field(default=7, ge=1)
    retention_days: int = Field(default=90, ge=1)
    chat_retention_days: int = Field(default=365, ge=1)
    logs_retention_days: int = Field(default=14, ge=1)
    # Application metrics (one row per series per interval) and workflow transitions (issue 26).
    metrics_retention_days: int = Field(default=90, ge=1)
    workflows_retention_days: int = Field(default=365, ge=1)


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    sources: list[SourceSettings] = Field(default_factory=list)
    tail: TailSettings = Field(default_factory=TailSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    # "schema" shadows a BaseModel attribute, hence the alias. An alias escapes env_prefix in
    # pydantic-settings, so the HYPERTAIL_SCHEMA__* name is listed for the environment.
    schema_: SchemaSettings = Field(
        default_factory=SchemaSettings, alias="schema", validation_alias=AliasChoices("HYPERTAIL_SCHEMA", "schema")
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: it beats the file (passed as init kwargs).
        return (env_settings, init_settings)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, v: list[SourceSettings]) -> list[SourceSettings]:
        names = [s.name for s in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return v
