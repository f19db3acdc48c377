"""Read what ``hypertail status`` shows: checkpoints and recent dead letters per file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from agent.config import DatabaseSettings, mask_dsn
from agent.errors import CommandError
from agent.sink.classify import DRIVER_ERRORS, one_line
from agent.sink.connect import connect
from agent.sink.layout import HypertableLayout, compress_age, hypertable_layout

STATUS_SQL = """
SELECT c.file_key, c.agent_id, c.source, c.path, c.device, c.inode, c.committed_offset, c.updated_at, c.data_time,
       (SELECT count(*) FROM hypertail.dead_letters d
         WHERE d.file_key = c.file_key AND d.received_at > now() - interval '1 hour') AS dead_1h
FROM hypertail.checkpoints c
WHERE c.fingerprint <> '' AND ($1::text IS NULL OR c.agent_id = $1)
ORDER BY c.source, c.path, c.updated_at
"""


@dataclass(frozen=True, slots=True)
class CheckpointStatus:
    file_key: str
    agent_id: str
    source: str
    path: str
    device: int
    inode: int
    committed_offset: int
    last_commit: datetime
    dead_letters_1h: int
    data_time: datetime | None = None  # the time column of the file's last committed row


async def read_status(conn: asyncpg.Connection, agent_id: str | None) -> list[CheckpointStatus]:
    rows = await conn.fetch(STATUS_SQL, agent_id)
    return [
        CheckpointStatus(
            r["file_key"], r["agent_id"], r["source"], r["path"], r["device"], r["inode"],
            r["committed_offset"], r["updated_at"], r["dead_1h"], r["data_time"],
        )
        for r in rows
    ]


AGENTS_SQL = """
SELECT entity_id AS agent_id, sync_status, error_message, retry_count, last_synced_at, updated_at
FROM observability.provider_sync_status
WHERE provider_name = 'hypertail' AND entity_type = 'agent' AND ($1::text IS NULL OR entity_id = $1)
ORDER BY entity_id
"""


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """An agent's own row in provider_sync_status: running, starting, stalled (and why), error."""

    agent_id: str
    status: str
    error: str | None
    retries: int
    last_commit: datetime | None
    reported_at: datetime


@dataclass(frozen=True, slots=True)
class StatusReport:
    files: list[CheckpointStatus]
    agents: list[AgentStatus]
    hypertables: list[HypertableLayout]
    compress_after: timedelta | None = None  # the youngest data a compression policy compresses


async def status_report(db: DatabaseSettings, dsn: str, agent_id: str | None) -> StatusReport:
    """Everything ``hypertail status`` shows, read in one connection; driver errors become one line."""
    try:
        conn = await connect(db, dsn)
        try:
            async with conn.transaction(readonly=True):  # one transaction: works through a pooler too
                files = await read_status(conn, agent_id)
                agents = [
                    AgentStatus(r["agent_id"], r["sync_status"], r["error_message"], r["retry_count"],
                                r["last_synced_at"], r["updated_at"])
                    for r in await conn.fetch(AGENTS_SQL, agent_id)
                ]
                layout = await hypertable_layout(conn)
                age = await compress_age(conn)
        finally:
            await conn.close()
    except DRIVER_ERRORS as exc:
        raise CommandError(f"status failed on {mask_dsn(dsn)}: {one_line(exc)}") from None
    return StatusReport(files, agents, layout, age)


TABLES = (
    "traces", "spans", "chat_messages", "document_events", "logs", "metrics", "workflow_transitions",
    "metrics_aggregates", "provider_sync_status",
)


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows per observability table (for ``hypertail demo``)."""
    return {t: int(await conn.fetchval(f"SELECT count(*) FROM observability.{t}")) for t in TABLES}


async def richest_trace(conn: asyncpg.Connection, since: datetime | None = None,
                        ) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """The completed trace with the most spans (started at ``since`` or later, when given: the
    demo shows one of its own run, not of an earlier one), and its spans in start order."""
    trace = await conn.fetchrow(
        "SELECT t.* FROM observability.traces t WHERE t.status = 'completed' "
        "AND ($1::timestamptz IS NULL OR t.timestamp >= $1) ORDER BY "
        "(SELECT count(*) FROM observability.spans s WHERE s.trace_id = t.trace_id AND s.model IS NOT NULL) DESC, "
        "(SELECT count(*) FROM observability.spans s WHERE s.trace_id = t.trace_id) DESC, t.timestamp LIMIT 1",
        since,
    )
    if trace is None:
        return None, []
    spans = await conn.fetch(
        "SELECT * FROM observability.spans WHERE trace_id = $1 ORDER BY \"timestamp\", span_id", trace["trace_id"]
    )
    return trace, list(spans)


async def recreate_database(admin_dsn: str, name: str) -> None:
    """Drop and create ``name`` on the server of ``admin_dsn`` (the demo's private database)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def create_database_once(admin_dsn: str, name: str) -> None:
    """Create ``name`` on the server of ``admin_dsn`` unless it exists (the demo keeps earlier runs)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def counts_if_created(dsn: str) -> dict[str, int]:
    """Rows per table so far; empty before the schema exists (the demo's first run)."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass('observability.spans')") is None:
            return {}
        return await table_counts(conn)
    finally:
        await conn.close()
