"""An OTLP span -> its ``observability.spans`` row, a root's ``observability.traces`` row, and the
``chat_messages`` rows of a conversation it carries.

=====================  ==============================================================================
column                 from the span
=====================  ==============================================================================
``span_id``,           ``spanId``, ``traceId`` (hex of any case; base64 accepted); required, as is
``trace_id``           ``startTimeUnixNano``: without them the span cannot be a row
``parent_span_id``     ``parentSpanId``; empty (or all zero) means a root, which also becomes a
                       ``traces`` row
``timestamp``          ``startTimeUnixNano`` (the tables are partitioned by start time)
``duration_ms``        ``endTimeUnixNano`` - ``startTimeUnixNano``
``name``               ``name`` (cut to 255 characters)
``status``             ``failed`` when ``status.code`` is 2 (``STATUS_CODE_ERROR``), else ``completed``
``error_type``,        the last ``exception`` event's ``exception.type``/``exception.message``; else, for
``error_message``      a failed span, ``error.type`` and ``status.message``
LLM columns            :mod:`agent.parse.otlp.genai`
``metadata``           the attributes as one object, ``resource`` (the resource's attributes:
                       ``service.name`` ...), ``otel.scope.name``/``otel.scope.version``, ``span.kind``
                       (server, client, producer, consumer), ``events`` and ``links``
=====================  ==============================================================================

The ``traces`` row of a root: its id, start, name, status, ``ended_at``, duration and error, with
``session_id`` from ``session.id`` (or ``gen_ai.conversation.id``), ``user_id`` from ``user.id`` /
``enduser.id`` when it is a UUID, and the span's metadata without events and links. It merges
like a trace's start and end records: a root exported twice is one row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from agent import contract as c
from agent.model import Row
from agent.parse import fields as pf
from agent.parse.otlp import genai
from agent.parse.otlp.common import Group, LineIds, Turn, chat_rows, expected, keep_content, session_id, user_id
from agent.parse.otlp.schema import Event, Link, Span
from agent.parse.otlp.values import attributes, enum, nanos, otlp_id, text, time_of

_new: Final = tuple.__new__
_SPANS: Final = c.TABLE_OF_KIND[c.SPAN]
_TRACES: Final = c.TABLE_OF_KIND[c.TRACE]
_KINDS: Final = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
                 "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
_KIND_NAMES: Final = {2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS_CODES: Final = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_ERROR: Final = 2
_EXCEPTION: Final = "exception"
_HEX: Final = "16 hex digits (or base64 of 8 bytes), not all zero"


def span_rows(span: Span, g: Group, ids: LineIds, out: list[Row]) -> None:
    """Append the span's rows to ``out``; raises :class:`~agent.parse.otlp.common.Bad` when it
    cannot be one (then it adds nothing)."""
    span_id = otlp_id(span.span_id, 8)
    if span_id is None:
        raise expected("spanId", _HEX, span.span_id)
    trace_id = otlp_id(span.trace_id, 16)
    if trace_id is None:
        raise expected("traceId", "32 hex digits (or base64 of 16 bytes), not all zero", span.trace_id)
    start_ns = nanos(span.start_time_unix_nano)
    start = time_of(start_ns)
    if start is None or start_ns is None:
        raise expected("startTimeUnixNano", "nanoseconds since 1970 (a number or its decimal text)",
                       span.start_time_unix_nano)
    end_ns = nanos(span.end_time_unix_nano)
    duration = (end_ns - start_ns) // 1_000_000 if end_ns is not None and end_ns >= start_ns else None
    if duration is not None and duration > c.INT4_MAX:
        duration = None
    meta = attributes(span.attributes)
    invalid: dict[str, Any] = {}
    parent = otlp_id(span.parent_span_id, 8)
    root = not span.parent_span_id.strip("0")  # absent, or all zero as some encoders write "none"
    if parent is None and not root:
        invalid["parentSpanId"] = span.parent_span_id
    code = enum(span.status.code, _STATUS_CODES) if span.status is not None else 0
    status = c.FAILED if code == _ERROR else c.COMPLETED
    error_type, error_message = _error(span, meta, code)
    llm = genai.llm(meta)
    content = llm.content
    name = text(span.name, 255)
    if llm.conversation_id is not None and (llm.inputs or llm.outputs):
        answered = time_of(end_ns) or start
        turn = Turn(llm.conversation_id, trace_id, span_id, start, answered, meta, llm.model, llm.input_tokens,
                    llm.output_tokens, duration)
        out.extend(chat_rows(turn, llm, ids))
        keep_content(meta, content, llm.message_keys)
    elif content:
        keep_content(meta, content, [])
    trace_meta = pf.json_text(g.scoped(dict(meta))) if root else ""
    kind = _KIND_NAMES.get(enum(span.kind, _KINDS))
    if kind is not None:
        meta["span.kind"] = kind
    if span.events:
        meta["events"] = [_event(e) for e in span.events]
    if span.links:
        meta["links"] = [_link(link) for link in span.links]
    if invalid:
        meta[c.INVALID_MARKER] = invalid
    values = (span_id, start, trace_id, parent, name, llm.span_type, status, duration, error_type, error_message,
              llm.model, llm.input_tokens, llm.output_tokens, llm.cost_usd, llm.temperature, llm.input_preview,
              llm.output_preview, None, None, llm.result_count, pf.json_text(g.scoped(meta)))
    out.append(_new(Row, (_SPANS, values, False, ())))
    if root:
        out.append(_new(Row, (_TRACES, _trace(trace_id, start, name, status, end_ns, duration, error_type,
                                              error_message, meta, trace_meta), True, ())))


def _trace(trace_id: str, start: datetime, name: str, status: str, end_ns: int | None, duration: int | None,
           error_type: str | None, error_message: str | None, attrs: dict[str, Any], meta: str) -> tuple[Any, ...]:
    return (trace_id, start, name, None, user_id(attrs), session_id(attrs), None, status, time_of(end_ns), duration,
            error_type, error_message, None, None, None, meta)


def _error(span: Span, attrs: dict[str, Any], code: int) -> tuple[str | None, str | None]:
    """The span's error type and message: from its last exception event, else (failed) its status."""
    for e in reversed(span.events):
        if e.name == _EXCEPTION:
            ev = attributes(e.attributes)
            return _label(ev.get("exception.type"), 255), _label(ev.get("exception.message"), c.ERROR_MESSAGE_MAX)
    if code != _ERROR:
        return None, None
    message = span.status.message if span.status is not None else ""
    return _label(attrs.get("error.type"), 255), text(message, c.ERROR_MESSAGE_MAX) or None


def _label(v: Any, top: int) -> str | None:
    return text(v, top) or None if type(v) is str else None


def _event(e: Event) -> dict[str, Any]:
    at = time_of(nanos(e.time_unix_nano))
    out: dict[str, Any] = {"name": e.name, "timestamp": at.isoformat() if at is not None else None}
    if e.attributes:
        out["attributes"] = attributes(e.attributes)
    return out


def _link(link: Link) -> dict[str, Any]:
    out: dict[str, Any] = {"trace_id": otlp_id(link.trace_id, 16) or link.trace_id,
                           "span_id": otlp_id(link.span_id, 8) or link.span_id}
    if link.attributes:
        out["attributes"] = attributes(link.attributes)
    return out
