"""Read one trace, or a list of recent traces, for ``hypertail trace`` and ``hypertail traces``.

Every query names the trace id (or a time window), which the indexes of schema.sql serve in
both modes: ``idx_*_trace_id`` on plain tables, and on TimescaleDB the same indexes per chunk
plus ``compress_segmentby = trace_id`` on compressed chunks. Driver errors become one-line
:class:`TraceReadError` s here, so the command prints one line and exits 1, never a traceback.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from agent.config import DatabaseSettings, mask_dsn
from agent.errors import CommandError, HypertailError
from agent.sink.classify import DRIVER_ERRORS, one_line
from agent.sink.connect import connect
from agent.views.model import (
    ChatView,
    DocEventView,
    LogView,
    SpanView,
    TraceFilter,
    TraceHeader,
    TraceSummary,
    TraceView,
)


class TraceReadError(CommandError):
    """The database could not be read (unreachable, no schema, no privilege)."""


class TraceNotFound(HypertailError):
    """No trace row, span, log line, chat message or document event has this trace id."""


HEADER_SQL = """
SELECT trace_id, "timestamp", name, operation_type, user_id::text AS user_id, session_id, status, ended_at,
       duration_ms, error_type, error_message, total_input_tokens, total_output_tokens, total_cost_usd,
       metadata::text AS metadata
FROM observability.traces WHERE trace_id = $1 ORDER BY "timestamp" DESC LIMIT 1
"""
SPANS_SQL = """
SELECT span_id, parent_span_id, "timestamp", name, span_type, status, duration_ms, model, input_tokens,
       output_tokens, cost_usd, error_type, error_message, metadata::text AS metadata
FROM observability.spans WHERE trace_id = $1 ORDER BY "timestamp", span_id
"""
LOGS_SQL = """
SELECT "timestamp", level, logger, event, span_id, source, metadata::text AS metadata
FROM observability.logs WHERE trace_id = $1 ORDER BY "timestamp", id
"""
CHAT_SQL = """
SELECT "timestamp", role, content, model, conversation_id, turn_number, input_tokens, output_tokens, span_id
FROM observability.chat_messages WHERE trace_id = $1 ORDER BY "timestamp", id
"""
DOCS_SQL = """
SELECT "timestamp", event_type, status, document_id::text AS document_id, duration_ms, chunk_count, error_message
FROM observability.document_events WHERE trace_id = $1 ORDER BY "timestamp", id
"""
HAS_LOGS_SQL = "SELECT to_regclass('observability.logs') IS NOT NULL"

# Recent traces with their span counts and, where the trace row has no totals (an app that
# writes spans through plain structlog), the sums of their spans. The spans are looked up by
# trace id from the trace's start on, which lets TimescaleDB skip older chunks.
LIST_SQL = """
SELECT t.trace_id, t."timestamp", t.name, t.operation_type, t.user_id::text AS user_id, t.status, t.duration_ms,
       s.n AS spans, s.failed AS failed_spans,
       coalesce(t.total_input_tokens, s.input_tokens) AS input_tokens,
       coalesce(t.total_output_tokens, s.output_tokens) AS output_tokens,
       coalesce(t.total_cost_usd, s.cost_usd) AS cost_usd
FROM observability.traces t
CROSS JOIN LATERAL (
    SELECT count(*) AS n, count(*) FILTER (WHERE sp.status = 'failed') AS failed,
           sum(sp.input_tokens)::bigint AS input_tokens, sum(sp.output_tokens)::bigint AS output_tokens,
           sum(sp.cost_usd) AS cost_usd
    FROM observability.spans sp
    WHERE sp.trace_id = t.trace_id AND sp."timestamp" >= t."timestamp" - interval '1 hour'
) s
WHERE t."timestamp" >= now() - $1::interval
  AND ($2::text IS NULL OR t.status = $2)
  AND ($3::text IS NULL OR t.operation_type = $3)
  AND ($4::uuid IS NULL OR t.user_id = $4)
  AND (NOT $6::bool OR s.failed > 0)
ORDER BY t."timestamp" DESC, t.trace_id
LIMIT $5
"""


def _json(text: str | None) -> dict[str, Any]:
    value = orjson.loads(text) if text else {}
    return value if isinstance(value, dict) else {"metadata": value}


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _header(r: asyncpg.Record) -> TraceHeader:
    return TraceHeader(
        trace_id=r["trace_id"], started=_utc(r["timestamp"]), name=r["name"], operation_type=r["operation_type"],
        user_id=r["user_id"], session_id=r["session_id"], status=r["status"],
        ended_at=_utc(r["ended_at"]) if r["ended_at"] else None, duration_ms=r["duration_ms"],
        error_type=r["error_type"], error_message=r["error_message"], total_input_tokens=r["total_input_tokens"],
        total_output_tokens=r["total_output_tokens"], total_cost_usd=r["total_cost_usd"],
        metadata=_json(r["metadata"]),
    )


def _span(r: asyncpg.Record) -> SpanView:
    return SpanView(
        span_id=r["span_id"], parent_span_id=r["parent_span_id"], started=_utc(r["timestamp"]), name=r["name"],
        span_type=r["span_type"], status=r["status"], duration_ms=r["duration_ms"], model=r["model"],
        input_tokens=r["input_tokens"], output_tokens=r["output_tokens"], cost_usd=r["cost_usd"],
        error_type=r["error_type"], error_message=r["error_message"], metadata=_json(r["metadata"]),
    )


def _log(r: asyncpg.Record) -> LogView:
    return LogView(at=_utc(r["timestamp"]), level=r["level"], logger=r["logger"], event=r["event"],
                   span_id=r["span_id"], source=r["source"], metadata=_json(r["metadata"]))


def _chat(r: asyncpg.Record) -> ChatView:
    return ChatView(at=_utc(r["timestamp"]), role=r["role"], content=r["content"], model=r["model"],
                    conversation_id=r["conversation_id"], turn_number=r["turn_number"],
                    input_tokens=r["input_tokens"], output_tokens=r["output_tokens"], span_id=r["span_id"])


def _doc(r: asyncpg.Record) -> DocEventView:
    return DocEventView(at=_utc(r["timestamp"]), event_type=r["event_type"], status=r["status"],
                        document_id=r["document_id"], duration_ms=r["duration_ms"], chunk_count=r["chunk_count"],
                        error_message=r["error_message"])


async def read_trace(conn: asyncpg.Connection, trace_id: str) -> TraceView | None:
    """Everything stored under ``trace_id`` (lower-case hex), or None when nothing is."""
    header = await conn.fetchrow(HEADER_SQL, trace_id)
    spans = tuple(_span(r) for r in await conn.fetch(SPANS_SQL, trace_id))
    logs: tuple[LogView, ...] = ()
    if await conn.fetchval(HAS_LOGS_SQL):  # a schema from before the logs table
        logs = tuple(_log(r) for r in await conn.fetch(LOGS_SQL, trace_id))
    chats = tuple(_chat(r) for r in await conn.fetch(CHAT_SQL, trace_id))
    docs = tuple(_doc(r) for r in await conn.fetch(DOCS_SQL, trace_id))
    if header is None and not (spans or logs or chats or docs):
        return None
    return TraceView(trace_id, _header(header) if header else None, spans, logs, chats, docs)


async def list_traces(conn: asyncpg.Connection, f: TraceFilter) -> list[TraceSummary]:
    """The newest traces that match ``f``, newest first."""
    rows = await conn.fetch(LIST_SQL, f.since, f.status, f.operation, f.user_id, f.limit, f.failed_spans)
    return [
        TraceSummary(
            trace_id=r["trace_id"], started=_utc(r["timestamp"]), name=r["name"], operation_type=r["operation_type"],
            user_id=r["user_id"], status=r["status"], duration_ms=r["duration_ms"], spans=int(r["spans"]),
            failed_spans=int(r["failed_spans"]), input_tokens=r["input_tokens"], output_tokens=r["output_tokens"],
            cost_usd=r["cost_usd"],
        )
        for r in rows
    ]


async def fetch_trace(db: DatabaseSettings, dsn: str, trace_id: str) -> TraceView:
    """Connect, read one trace, close; raises :class:`TraceNotFound` or :class:`TraceReadError`."""
    try:
        conn = await connect(db, dsn)
        try:
            view = await read_trace(conn, trace_id)
        finally:
            await conn.close()
    except DRIVER_ERRORS as exc:
        raise TraceReadError(f"cannot read trace {trace_id} from {mask_dsn(dsn)}: {one_line(exc)}") from None
    if view is None:
        raise TraceNotFound(f"no trace {trace_id} in {mask_dsn(dsn)} (no trace row, span or log line has that id)")
    return view


async def fetch_traces(db: DatabaseSettings, dsn: str, f: TraceFilter) -> list[TraceSummary]:
    """Connect, list recent traces, close; raises :class:`TraceReadError`."""
    try:
        conn = await connect(db, dsn)
        try:
            return await list_traces(conn, f)
        finally:
            await conn.close()
    except DRIVER_ERRORS as exc:
        raise TraceReadError(f"cannot list traces from {mask_dsn(dsn)}: {one_line(exc)}") from None
