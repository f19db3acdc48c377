"""The application side of the log-line contract: one call to set up, then record helpers.

``configure()`` routes structlog (with orjson) to a file that the hypertail sidecar tails;
``trace()``, ``span()``, ``llm_call()``, ``chat_message()`` and ``document_event()`` write the
records of :mod:`agent.contract`. The application never talks to the database, and nothing here
raises into it: a bad value is rendered as text, a failed write is counted (see :func:`stats`).

Trace context lives in a ``contextvars.ContextVar``, so it follows asyncio tasks by itself and
threads through :func:`wrap` (or ``asyncio.to_thread``, which copies the context too).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from agent import contract as c
from agent.emit.context import (
    TraceContext,
    current,
    current_ids,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    use,
    wrap,
)
from agent.emit.metrics import configure_metrics, counter, gauge, histogram, shutdown_metrics
from agent.emit.metrics import flush as flush_metrics
from agent.emit.output import STATE, STATS, dumps, dumps_text, make_add_trace_context, write_record
from agent.emit.records import iso, span, split, trace
from agent.emit.workflows import workflow
from agent.emit.writer import LineWriter, WriterLogger

__all__ = [
    "TraceContext", "chat_message", "configure", "configure_metrics", "counter", "current",
    "document_event", "dropped", "flush_metrics", "format_traceparent", "gauge", "histogram",
    "json_renderer", "llm_call", "new_span_id", "new_trace_id", "parse_traceparent", "processors",
    "shutdown", "span", "stats", "trace", "use", "workflow", "wrap",
]


# --- setup -------------------------------------------------------------------------------------

def processors(record_type_key: str = c.DEFAULT_RECORD_TYPE_KEY, *, text: bool = False) -> list[Any]:
    """The processor chain hypertail expects, for apps that configure structlog themselves.

    contextvars, level, an RFC 3339 UTC ``timestamp``, the active trace ids on ordinary log lines,
    exception text, and orjson rendering that never fails. Use it as ``processors=`` of
    ``structlog.configure`` with a logger factory that writes bytes (``BytesLoggerFactory``), or
    with ``text=True`` where ``str`` is needed (stdlib ``logging`` through ``ProcessorFormatter``).
    """
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        make_add_trace_context(current_ids, record_type_key),
        structlog.processors.format_exc_info,
        json_renderer(text=text),
    ]


def json_renderer(*, text: bool = False) -> structlog.processors.JSONRenderer:
    """orjson rendering that never fails (bytes, or ``str`` with ``text=True``)."""
    return structlog.processors.JSONRenderer(serializer=dumps_text if text else dumps)


def configure(
    path: str | os.PathLike[str] | None = None,
    *,
    fd: int | None = None,
    max_bytes: int = 64 * 2**20,
    backup_count: int = 5,
    level: int | str = "info",
    record_type_key: str = c.DEFAULT_RECORD_TYPE_KEY,
    extra_processors: Sequence[Any] = (),
) -> None:
    """Send structlog output, records included, as JSON lines to ``path`` (or ``fd``, or stdout).

    A file is rotated by rename (``path.1`` .. ``path.<backup_count>``) once it would pass
    ``max_bytes``; the sidecar follows renames. Several processes may configure the same
    ``path``: rotation is coordinated between them (see :class:`LineWriter`). Missing folders of
    ``path`` are created (as ``mkdir -p`` would), here and whenever they disappear later.
    ``level`` filters ordinary log lines only: records are always written; the default ``"info"``
    drops ``log.debug`` lines, pass ``level="debug"`` to keep them. ``extra_processors`` run
    before rendering. Errors creating or opening ``path`` (permissions) are raised here, at setup,
    where they can be fixed; after that nothing raises: a line that cannot be written is counted
    (:func:`dropped`).
    """
    writer = LineWriter(os.fspath(path) if path is not None else None, fd=fd,
                        max_bytes=max_bytes, backup_count=backup_count)
    chain = processors(record_type_key)
    chain[-1:-1] = list(extra_processors)
    structlog.configure(
        processors=chain,
        logger_factory=lambda *args: WriterLogger(writer),
        wrapper_class=structlog.make_filtering_bound_logger(_level(level)),
        cache_logger_on_first_use=True,
    )
    old = STATE.writer
    STATE.writer, STATE.key = writer, record_type_key
    STATE.logger = structlog.wrap_logger(
        WriterLogger(writer), processors=chain, wrapper_class=structlog.make_filtering_bound_logger(0),
    ).bind()
    if old is not None:
        old.close()


def shutdown() -> None:
    """Undo :func:`configure`: write pending metrics, close the file, put structlog back to its defaults."""
    shutdown_metrics()
    old = STATE.writer
    STATE.writer, STATE.key = None, c.DEFAULT_RECORD_TYPE_KEY
    STATE.logger = structlog.get_logger("hypertail")
    structlog.reset_defaults()
    if old is not None:
        old.close()


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number: int = logging.getLevelName(level.upper())
    return number


def dropped() -> int:
    """Records lost so far (write errors such as a full disk or a closed file)."""
    return STATS.snapshot()["dropped"]


def stats() -> dict[str, int]:
    """``written`` lines, ``dropped`` records and ``coerced`` values (rendered with ``str()``)."""
    return STATS.snapshot()


# --- one-shot records ---------------------------------------------------------------------------

def llm_call(model: str, *, input_tokens: int | None = None, output_tokens: int | None = None,
             cost_usd: float | None = None, temperature: float | None = None,
             input_preview: str | None = None, output_preview: str | None = None,
             duration_ms: int | None = None, name: str = "llm", status: str = c.COMPLETED,
             error_type: str | None = None, error_message: str | None = None,
             **metadata: Any) -> str | None:
    """One finished LLM call as a span of type ``llm`` under the current span; returns its id.

    Its start is taken as now minus ``duration_ms``. Tokens and cost count into the trace totals.
    """
    try:
        s = span(name, "llm", model=model, input_tokens=input_tokens, output_tokens=output_tokens,
                 cost_usd=cost_usd, temperature=temperature, input_preview=input_preview,
                 output_preview=output_preview, status=status, error_type=error_type,
                 error_message=error_message, **metadata)
        return s.done(0 if duration_ms is None else duration_ms)
    except Exception:
        STATS.add(dropped=1)
        return None


def _one_shot(kind: str, fields: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a chat message or document event in the current trace (ids and write time added)."""
    try:
        record: dict[str, Any] = {}
        known = frozenset(c.FIELD_BY_NAME[kind]) - {c.METADATA}
        extra: dict[str, Any] = {}
        split(fields, known, record, extra)
        extra.update(meta)
        ctx = current()
        if ctx is not None:
            record.setdefault("trace_id", ctx.trace_id)
            if kind == c.CHAT_MESSAGE and ctx.span_id:
                record.setdefault("span_id", ctx.span_id)
        record[c.WRITTEN_AT] = iso(datetime.now(UTC))
        if extra:
            record[c.METADATA] = extra
        write_record(kind, record)
    except Exception:
        STATS.add(dropped=1)


def chat_message(role: str, content: str, *, conversation_id: str | None = None,
                 turn_number: int | None = None, session_id: str | None = None, user_id: Any = None,
                 kb_id: Any = None, model: str | None = None, input_tokens: int | None = None,
                 output_tokens: int | None = None, latency_ms: int | None = None,
                 sources: Iterable[Any] | None = None, citations: Iterable[Any] | None = None,
                 feedback_type: str | None = None, feedback_comment: str | None = None,
                 id: Any = None, **metadata: Any) -> None:
    """One conversation turn, with the sources retrieved for it and the citations it made."""
    fields = {"role": role, "content": content, "conversation_id": conversation_id,
              "turn_number": turn_number, "session_id": session_id, "user_id": user_id, "kb_id": kb_id,
              "model": model, "input_tokens": input_tokens, "output_tokens": output_tokens,
              "latency_ms": latency_ms, "sources": sources, "citations": citations,
              "feedback_type": feedback_type, "feedback_comment": feedback_comment, "id": id}
    _one_shot(c.CHAT_MESSAGE, fields, metadata)


def document_event(event_type: str, status: str = c.COMPLETED, *, document_id: Any = None,
                   kb_id: Any = None, duration_ms: int | None = None, chunk_count: int | None = None,
                   token_count: int | None = None, page_count: int | None = None,
                   file_size_bytes: int | None = None, error_message: str | None = None,
                   id: Any = None, **metadata: Any) -> None:
    """One step of document processing: upload, parse, chunk, embed, index, delete..."""
    fields = {"event_type": event_type, "status": status, "document_id": document_id, "kb_id": kb_id,
              "duration_ms": duration_ms, "chunk_count": chunk_count, "token_count": token_count,
              "page_count": page_count, "file_size_bytes": file_size_bytes,
              "error_message": error_message, "id": id}
    _one_shot(c.DOCUMENT_EVENT, fields, metadata)
