"""Apply and inspect ``schema.sql``; print least-privilege grants for an ingest role."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import asyncpg

from agent.config import SchemaSettings

SCHEMA_VERSION = 1


def schema_sql() -> str:
    """The text of schema.sql shipped inside the package."""
    return resources.files("agent").joinpath("schema.sql").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class SchemaMode:
    """What the server gave us: TimescaleDB (with its version) or plain PostgreSQL."""

    timescaledb: str | None
    server_version: str

    def describe(self) -> str:
        if self.timescaledb:
            return f"TimescaleDB {self.timescaledb}"
        return "plain PostgreSQL"


async def detect_mode(conn: asyncpg.Connection) -> SchemaMode:
    ts = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    version = await conn.fetchval("SHOW server_version")
    return SchemaMode(timescaledb=ts, server_version=str(version))


async def apply_schema(conn: asyncpg.Connection, policy: SchemaSettings) -> SchemaMode:
    """Apply schema.sql (idempotent) with the configured policy lengths, in one transaction."""
    async with conn.transaction():
        await conn.execute("SET LOCAL client_min_messages = warning")
        for name, value in (
            ("hypertail.compress_after_days", policy.compress_after_days),
            ("hypertail.retention_days", policy.retention_days),
            ("hypertail.chat_retention_days", policy.chat_retention_days),
        ):
            await conn.execute("SELECT set_config($1, $2, true)", name, str(value))
        await conn.execute(schema_sql())
    return await detect_mode(conn)


async def installed_version(conn: asyncpg.Connection) -> int | None:
    """The newest applied schema version, or None when schema.sql was never applied."""
    exists = await conn.fetchval("SELECT to_regclass('hypertail.schema_version') IS NOT NULL")
    if not exists:
        return None
    value = await conn.fetchval("SELECT max(version) FROM hypertail.schema_version")
    return int(value) if value is not None else None


def grants_for(role: str) -> str:
    """Least-privilege GRANTs for an ingest role, as SQL text.

    INSERT where COPY writes (plus SELECT, which the per-connection staging tables need for
    ``CREATE TEMP TABLE ... (LIKE ...)``); UPDATE only where merges upsert (traces and spans
    merge start and end records; the rollup and sync-status tables are upserted); the state schema
    needs read/write on checkpoints and insert on dead letters; TEMPORARY for the staging table
    that conflicting batches fall back to.
    """
    r = _quote_ident(role)
    obs = "observability"
    lines = [
        f"GRANT USAGE ON SCHEMA {obs}, hypertail TO {r};",
        f"GRANT SELECT, INSERT ON {obs}.chat_messages, {obs}.document_events TO {r};",
        f"GRANT SELECT, INSERT, UPDATE ON {obs}.traces, {obs}.spans TO {r};",
        f"GRANT SELECT, INSERT, UPDATE ON {obs}.metrics_aggregates, {obs}.provider_sync_status TO {r};",
        f"GRANT SELECT ON hypertail.schema_version TO {r};",
        f"GRANT SELECT, INSERT, UPDATE ON hypertail.checkpoints TO {r};",
        f"GRANT SELECT, INSERT ON hypertail.dead_letters TO {r};",
        f"DO $$ BEGIN EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO {_sql_literal_ident(role)}', "
        "current_database()); END $$;",
    ]
    return "\n".join(lines) + "\n"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_literal_ident(name: str) -> str:
    # The role inside a format() string literal: quote as identifier, then escape for the literal.
    return _quote_ident(name).replace("'", "''")
