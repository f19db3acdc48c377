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


# --- application metrics and workflows (``hypertail metrics``, ``hypertail workflows``; issue 26) ---

@dataclass(frozen=True, slots=True)
class MetricFilter:
    """Which series ``hypertail metrics`` shows: written within ``since``, name containing ``name``."""

    since: timedelta
    name: str | None = None
    kind: str | None = None
    limit: int = 200


@dataclass(frozen=True, slots=True)
class MetricSeries:
    """One series (name, kind, attributes) over the window, merged across processes and intervals.

    ``total`` is a counter's increase (``rate`` per second between ``first`` and ``last_at``);
    ``last`` a gauge's latest value (``low``/``high`` its range); a histogram has ``count``,
    ``total`` (the sum of its values), ``low``/``high`` and ``p50``/``p95``/``p99`` (None when the
    buckets cannot give them, see docs/metrics.md).
    """

    name: str
    kind: str
    attributes: dict[str, Any]
    rows: int
    count: int
    first: datetime
    last_at: datetime
    total: float | None = None
    rate: float | None = None
    last: float | None = None
    low: float | None = None
    high: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True, slots=True)
class WorkflowFilter:
    """Which workflows ``hypertail workflows`` shows: last moved within ``since`` (None: any time),
    in ``state``, of ``workflow_type``."""

    since: timedelta | None = None
    state: str | None = None
    workflow_type: str | None = None
    limit: int = 200


@dataclass(frozen=True, slots=True)
class WorkflowView:
    """One workflow as ``observability.workflows`` gives it: current state, since when, its history."""

    workflow_id: str
    workflow_type: str | None
    state: str
    since: datetime
    time_in_state: timedelta
    started_at: datetime
    transitions: int
    consistent: bool
    trace_id: str | None
    history: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class WorkflowList:
    """Workflows per current state (all that match the filter), and the newest ``limit`` of them."""

    per_state: dict[str, int]
    workflows: tuple[WorkflowView, ...]
