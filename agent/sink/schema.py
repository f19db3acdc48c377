"""Apply and inspect ``schema.sql``; print least-privilege grants for an ingest role."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

from agent.config import DatabaseSettings, SchemaSettings, mask_dsn
from agent.errors import CommandError, SchemaError
from agent.sink.classify import DRIVER_ERRORS, one_line
from agent.sink.connect import connect
from agent.sink.layout import HypertableLayout, hypertable_layout

SCHEMA_VERSION = 4  # 2: observability.logs; 3: backfill functions, checkpoints.data_time, compression by
# creation time; 4: observability.metrics, workflow_transitions and the workflows view


def schema_sql() -> str:
    """The text of schema.sql shipped inside the package."""
    return resources.files("agent").joinpath("schema.sql").read_text(encoding="utf-8")


PRELOAD_LINE = "shared_preload_libraries = 'timescaledb'"


@dataclass(frozen=True, slots=True)
class SchemaMode:
    """What the schema runs on: TimescaleDB (with its version) or plain PostgreSQL.

    ``fallback`` says why plain mode was chosen where TimescaleDB was wanted (``auto``); the agent
    logs it as a warning and ``migrate`` prints it.
    """

    timescaledb: str | None
    server_version: str
    fallback: str | None = None

    def describe(self) -> str:
        if self.timescaledb:
            return f"TimescaleDB {self.timescaledb}"
        return "plain PostgreSQL"


@dataclass(frozen=True, slots=True)
class TimescaleProbe:
    """What the server offers: the extension in this database, on disk, and its loader."""

    installed: str | None
    available: str | None
    preloaded: bool


class TimescaleUnavailable(SchemaError):
    """``schema.timescaledb = "require"`` on a server where the extension cannot be created.

    Not a :class:`~agent.errors.SinkError`: retrying cannot help, and the operator asked for
    TimescaleDB explicitly, so the command exits 1 with the reason instead of running degraded.
    """


PROBE_SQL = """
SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS installed,
       (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb') AS available,
       current_setting('timescaledb.disable_load', true) IS NOT NULL AS preloaded
"""


async def probe_timescaledb(conn: asyncpg.Connection) -> TimescaleProbe:
    """Look without touching: CREATE EXTENSION on a server that does not preload the library
    fails with a FATAL error that closes the connection, so that case is found beforehand."""
    r = await conn.fetchrow(PROBE_SQL)
    return TimescaleProbe(installed=r["installed"], available=r["available"], preloaded=bool(r["preloaded"]))


def unavailable_reason(probe: TimescaleProbe) -> str | None:
    """Why ``CREATE EXTENSION timescaledb`` cannot work here, or None when it can (or did)."""
    if probe.installed:
        return None
    if probe.available is None:
        return "TimescaleDB is not installed on this PostgreSQL server (no timescaledb in pg_available_extensions)"
    if not probe.preloaded:
        return (
            f"TimescaleDB {probe.available} is installed but not preloaded: add the line "
            f"{PRELOAD_LINE} to postgresql.conf and restart PostgreSQL"
        )
    return None


async def _choose_timescaledb(conn: asyncpg.Connection, wanted: str) -> str | None:
    """Create the extension when wanted and possible; return why plain mode is used (or None).

    Raises :class:`TimescaleUnavailable` under ``require``. Runs inside the schema transaction;
    the CREATE EXTENSION attempt has its own savepoint so a refusal (no privilege) leaves the
    transaction usable for plain mode.
    """
    if wanted == "off":
        return "schema.timescaledb = off"
    probe = await probe_timescaledb(conn)
    reason = unavailable_reason(probe)
    if reason is None and not probe.installed:
        try:
            async with conn.transaction():
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except asyncpg.PostgresError as exc:
            reason = f"CREATE EXTENSION timescaledb failed: {exc.sqlstate} {exc}"
    if reason is not None and wanted == "require":
        raise TimescaleUnavailable(f"schema.timescaledb = require, but {reason}")
    return reason


HYPERTABLE_SQL = """
SELECT h.hypertable_schema AS schema, h.hypertable_name AS table
FROM timescaledb_information.hypertables h WHERE h.hypertable_schema = 'observability'
"""


async def detect_mode(conn: asyncpg.Connection, fallback: str | None = None) -> SchemaMode:
    """The mode the tables are really in: TimescaleDB only when the spans table is a hypertable."""
    ts = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    if ts is not None:
        hypertables = {r["table"] for r in await conn.fetch(HYPERTABLE_SQL)}
        ts = ts if "spans" in hypertables else None
    version = await conn.fetchval("SHOW server_version")
    return SchemaMode(timescaledb=ts, server_version=str(version), fallback=fallback)


# pg_advisory_xact_lock key: the bytes of "htschema". Agents starting together apply one at a time.
SCHEMA_LOCK_KEY = 0x6874736368656D61


def schema_fingerprint(timescaledb: bool) -> str:
    """What was applied: this schema.sql's text and the mode it was applied in."""
    digest = hashlib.sha256(schema_sql().encode())
    digest.update(b"timescaledb=on" if timescaledb else b"timescaledb=off")
    return digest.hexdigest()


async def _applied_fingerprint(conn: asyncpg.Connection) -> str | None:
    if not await conn.fetchval("SELECT to_regclass('hypertail.schema_version') IS NOT NULL"):
        return None
    columns = await conn.fetchval(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'hypertail.schema_version'::regclass "
        "AND attname = 'checksum' AND NOT attisdropped")
    if not columns:  # a schema from before the checksum column
        return None
    value = await conn.fetchval("SELECT checksum FROM hypertail.schema_version WHERE version = $1", SCHEMA_VERSION)
    return str(value) if value is not None else None


async def apply_schema(
    conn: asyncpg.Connection, policy: SchemaSettings, *, only_if_changed: bool = False
) -> SchemaMode:
    """Apply schema.sql (idempotent) with the configured mode and policy lengths, in one transaction.

    Concurrent applies (many sidecars starting at once) take turns on an advisory lock. With
    ``only_if_changed`` (the agent's start) nothing is applied when this very schema.sql was
    already applied in the same mode: DDL takes ACCESS EXCLUSIVE locks, and re-running it while
    other agents ingest only makes them wait or deadlock. ``hypertail migrate`` always applies,
    which also repairs what someone dropped.
    """
    async with conn.transaction():
        await conn.execute("SET LOCAL client_min_messages = warning")
        await conn.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
        fallback = await _choose_timescaledb(conn, policy.timescaledb)
        fingerprint = schema_fingerprint(fallback is None)
        if not (only_if_changed and await _applied_fingerprint(conn) == fingerprint):
            for name, value in (
                ("hypertail.timescaledb", "off" if fallback else "on"),
                ("hypertail.compress_after_days", policy.compress_after_days),
                ("hypertail.retention_days", policy.retention_days),
                ("hypertail.chat_retention_days", policy.chat_retention_days),
                ("hypertail.logs_retention_days", policy.logs_retention_days),
                ("hypertail.metrics_retention_days", policy.metrics_retention_days),
                ("hypertail.workflows_retention_days", policy.workflows_retention_days),
            ):
                await conn.execute("SELECT set_config($1, $2, true)", name, str(value))
            await conn.execute(schema_sql())
            await conn.execute("UPDATE hypertail.schema_version SET checksum = $1 WHERE version = $2",
                               fingerprint, SCHEMA_VERSION)
    return await detect_mode(conn, None if policy.timescaledb == "off" else fallback)


async def installed_version(conn: asyncpg.Connection) -> int | None:
    """The newest applied schema version, or None when schema.sql was never applied."""
    exists = await conn.fetchval("SELECT to_regclass('hypertail.schema_version') IS NOT NULL")
    if not exists:
        return None
    value = await conn.fetchval("SELECT max(version) FROM hypertail.schema_version")
    return int(value) if value is not None else None


# What the ingest role needs (rendered by grants_for, checked by `check-config --connect`): USAGE on
# the two schemas, and per table the privileges of INGEST_TABLE_GRANTS (see grants_for for why).
INGEST_SCHEMAS = ("observability", "hypertail")
INGEST_TABLE_GRANTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("SELECT", "INSERT"), ("observability.chat_messages", "observability.document_events", "observability.logs")),
    (("SELECT", "INSERT"), ("observability.metrics", "observability.workflow_transitions")),
    (("SELECT", "INSERT", "UPDATE"), ("observability.traces", "observability.spans")),
    (("SELECT", "INSERT", "UPDATE"), ("observability.metrics_aggregates", "observability.provider_sync_status")),
    (("SELECT",), ("hypertail.schema_version",)),
    (("SELECT", "INSERT", "UPDATE", "DELETE"), ("hypertail.checkpoints",)),
    (("SELECT", "INSERT"), ("hypertail.dead_letters",)),
)
# The backfill functions (agent.sink.backfill), which run as their owner.
INGEST_FUNCTIONS = ("hypertail.decompress_chunk(regclass)", "hypertail.postpone_compression(text[], interval)")


def grants_for(role: str) -> str:
    """Least-privilege GRANTs for an ingest role, as SQL text.

    INSERT where COPY writes (plus SELECT, which asyncpg's COPY needs to read the columns' types
    and ON CONFLICT to check keys); UPDATE only where merges upsert (traces and spans merge start
    and end records; the rollup and sync-status tables are upserted); the state schema needs
    read/write on checkpoints (DELETE too: the agent prunes checkpoints of files long gone, see
    agent.sink.prune) and insert on dead letters. No DELETE on any observability table. No
    TEMPORARY: nothing is staged in temporary tables (upserts read typed arrays), so nothing
    outlives a transaction on a pooler. EXECUTE on the two backfill functions, which run as their
    owner and only decompress a chunk of an observability hypertable or postpone its compression
    policy (agent.sink.backfill): without them a backfill into compressed chunks still works, slowly.
    """
    r = _quote_ident(role)
    lines = [f"GRANT USAGE ON SCHEMA {', '.join(INGEST_SCHEMAS)} TO {r};"]
    lines += [f"GRANT {', '.join(privs)} ON {', '.join(tables)} TO {r};" for privs, tables in INGEST_TABLE_GRANTS]
    lines.append(f"GRANT EXECUTE ON FUNCTION {', '.join(INGEST_FUNCTIONS)} TO {r};")
    return "\n".join(lines) + "\n"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class MigrateResult:
    """What ``hypertail migrate`` reports: the mode, where, and the hypertables it left."""

    mode: SchemaMode
    database: str
    layout: list[HypertableLayout]


async def migrate(db: DatabaseSettings, dsn: str, policy: SchemaSettings) -> MigrateResult:
    """Connect, apply the schema and read the layout back; driver errors become one-line
    :class:`CommandError` messages (SQLSTATE, message, hint), never a traceback."""
    try:
        conn = await connect(db, dsn)
        try:
            async with conn.transaction():  # one transaction, so it works through a pooler too
                mode = await apply_schema(conn, policy)
                layout = await hypertable_layout(conn)
        finally:
            await conn.close()
    except DRIVER_ERRORS as exc:
        raise CommandError(f"migrate failed on {mask_dsn(dsn)}: {one_line(exc)}") from None
    return MigrateResult(mode, mask_dsn(dsn), layout)
