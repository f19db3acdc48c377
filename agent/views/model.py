"""What ``hypertail trace`` and ``hypertail traces`` read, as plain immutable values.

The sink fills these from the tables; the views render them. Times are aware UTC datetimes,
costs are :class:`~decimal.Decimal` as stored (``numeric(10, 6)``), so nothing is rounded
between the database and the JSON a script reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """The trace row (absent when only spans of the trace have landed)."""

    trace_id: str
    started: datetime
    name: str
    operation_type: str | None
    user_id: str | None
    session_id: str | None
    status: str
    ended_at: datetime | None
    duration_ms: int | None
    error_type: str | None
    error_message: str | None
    total_input_tokens: int | None
    total_output_tokens: int | None
    total_cost_usd: Decimal | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpanView:
    """One span row. ``duration_ms`` is None while the span is still in progress."""

    span_id: str
    parent_span_id: str | None
    started: datetime
    name: str
    span_type: str
    status: str
    duration_ms: int | None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Decimal | None = None
    error_type: str | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> datetime | None:
        return None if self.duration_ms is None else self.started + timedelta(milliseconds=self.duration_ms)


@dataclass(frozen=True, slots=True)
class LogView:
    """One ordinary log line of the trace (``span_id`` names the span that was active)."""

    at: datetime
    level: str | None
    logger: str | None
    event: str | None
    span_id: str | None
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatView:
    at: datetime
    role: str
    content: str
    model: str | None
    conversation_id: str | None
    turn_number: int | None
    input_tokens: int | None
    output_tokens: int | None
    span_id: str | None


@dataclass(frozen=True, slots=True)
class DocEventView:
    at: datetime
    event_type: str
    status: str
    document_id: str | None
    duration_ms: int | None
    chunk_count: int | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class TraceView:
    """Everything stored under one trace id."""

    trace_id: str
    header: TraceHeader | None
    spans: tuple[SpanView, ...]
    logs: tuple[LogView, ...] = ()
    chat_messages: tuple[ChatView, ...] = ()
    document_events: tuple[DocEventView, ...] = ()


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One line of ``hypertail traces``: tokens and cost are the trace's own totals, else its spans' sums."""

    trace_id: str
    started: datetime
    name: str
    operation_type: str | None
    user_id: str | None
    status: str
    duration_ms: int | None
    spans: int
    failed_spans: int
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: Decimal | None


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """What ``hypertail traces`` asks for; None means "any". ``failed_spans``: only traces in
    which some span failed (the trace's own ``status`` is the request's outcome)."""

    since: timedelta
    status: str | None = None
    operation: str | None = None
    user_id: str | None = None
    limit: int = 50
    failed_spans: bool = False
