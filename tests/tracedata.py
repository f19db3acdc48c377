"""A hand-built trace of known shape, written with SQL, for the read side (trace/traces, views).

Offsets from T0 in milliseconds, chosen so that bars land on distinct cells at any width:

    request [http]           0 .. 1000   (the trace row: 1000 ms, completed)
      retrieve [retrieval] 100 ..  300   log "retrieve.hits" at 150 (span_id = retrieve)
      llm [llm]            300 ..  900   gpt-4o 1200/300 tok $0.012500
      rerank [rerank]      400 ..  500   failed TimeoutError
      stream [tool]        600 .. open   still in progress (no duration)
    orphan [custom]        700 ..  800   its parent span never landed
    log "request.done" at 950 (no span)
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import asyncpg

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
IDS = {name: f"{i + 1:016x}" for i, name in enumerate(("request", "retrieve", "llm", "rerank", "stream", "orphan"))}
MISSING_PARENT = "00000000deadbeef"
# name -> (parent, offset ms, duration ms | None, span_type, status)
SPANS: dict[str, tuple[str | None, int, int | None, str, str]] = {
    "request": (None, 0, 1000, "http", "completed"),
    "retrieve": ("request", 100, 200, "retrieval", "completed"),
    "llm": ("request", 300, 600, "llm", "completed"),
    "rerank": ("request", 400, 100, "rerank", "failed"),
    "stream": ("request", 600, None, "tool", "in_progress"),
    "orphan": (MISSING_PARENT, 700, 100, "custom", "completed"),
}
LOGS = [(150, "info", "retrieve.hits", "retrieve"), (950, "warning", "request.done", None)]


def at(ms: int) -> dt.datetime:
    return T0 + dt.timedelta(milliseconds=ms)


async def insert_span(conn: asyncpg.Connection, trace_id: str, span_id: str, parent: str | None, start: dt.datetime,
                      duration: int | None, span_type: str = "custom", status: str = "completed", name: str = "op",
                      **extra: Any) -> None:
    cols = {"span_id": span_id, "timestamp": start, "trace_id": trace_id, "parent_span_id": parent, "name": name,
            "span_type": span_type, "status": status, "duration_ms": duration, **extra}
    names = ", ".join(f'"{c}"' for c in cols)
    marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    await conn.execute(f"INSERT INTO observability.spans ({names}) VALUES ({marks})", *cols.values())


async def insert_log(conn: asyncpg.Connection, trace_id: str | None, span_id: str | None, when: dt.datetime,
                     level: str, event: str, source: str = "app") -> None:
    await conn.execute(
        "INSERT INTO observability.logs (id, \"timestamp\", trace_id, span_id, level, logger, event, source, metadata) "
        "VALUES ($1, $2, $3, $4, $5, 'app.main', $6, $7, '{\"k\": 1}')",
        uuid.uuid4(), when, trace_id, span_id, level, event, source)


async def insert_known_trace(conn: asyncpg.Connection, trace_id: str = TRACE_ID) -> None:
    await conn.execute(
        "INSERT INTO observability.traces (trace_id, \"timestamp\", name, operation_type, user_id, status, ended_at, "
        "duration_ms, total_input_tokens, total_output_tokens, total_cost_usd) "
        "VALUES ($1, $2, 'answer question', 'chat', '8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f', 'completed', $3, 1000, "
        "1200, 300, 0.0125)", trace_id, T0, at(1000))
    for name, (parent, off, dur, typ, status) in SPANS.items():
        extra: dict[str, Any] = {}
        if name == "llm":
            extra = {"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 300, "cost_usd": Decimal("0.0125")}
        if name == "rerank":
            extra = {"error_type": "TimeoutError", "error_message": "no answer in 100 ms"}
        parent_id = IDS.get(parent, parent) if parent else None
        await insert_span(conn, trace_id, IDS[name], parent_id, at(off), dur, typ, status, name, **extra)
    for off, level, event, span in LOGS:
        await insert_log(conn, trace_id, IDS[span] if span else None, at(off), level, event)
    await insert_log(conn, None, None, at(500), "info", "outside.any.trace")
    await conn.execute(
        "INSERT INTO observability.chat_messages (id, \"timestamp\", trace_id, role, content, model) "
        "VALUES ($1, $2, $3, 'assistant', 'A sidecar.', 'gpt-4o')", uuid.uuid4(), at(920), trace_id)
    await conn.execute(
        "INSERT INTO observability.document_events (id, \"timestamp\", trace_id, event_type, status, duration_ms) "
        "VALUES ($1, $2, $3, 'chunk', 'completed', 120)", uuid.uuid4(), at(50), trace_id)
