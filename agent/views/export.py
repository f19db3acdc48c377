"""``hypertail trace --json``: one trace as plain data, with the waterfall's offsets and totals."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from agent.views.model import TraceView
from agent.views.waterfall import bounds, millis, totals


def iso(ts: datetime | None) -> str | None:
    """A timestamp as RFC 3339 with microseconds (None stays None)."""
    return None if ts is None else ts.isoformat(timespec="microseconds")


def _num(cost: Decimal | None) -> float | None:
    return None if cost is None else float(cost)


def to_json(view: TraceView) -> dict[str, Any]:
    """The trace as plain data: every stored field, plus offsets from the trace's start."""
    start, _ = bounds(view)
    t = totals(view)
    h = view.header

    def off(at: datetime) -> float:
        return round(millis(at - start), 3)

    return {
        "trace_id": view.trace_id,
        "started_at": iso(start),
        "trace": None if h is None else {
            "name": h.name, "started_at": iso(h.started), "operation_type": h.operation_type, "user_id": h.user_id,
            "session_id": h.session_id, "status": h.status, "ended_at": iso(h.ended_at), "duration_ms": h.duration_ms,
            "error_type": h.error_type, "error_message": h.error_message,
            "total_input_tokens": h.total_input_tokens, "total_output_tokens": h.total_output_tokens,
            "total_cost_usd": _num(h.total_cost_usd), "metadata": h.metadata,
        },
        "spans": [{
            "span_id": s.span_id, "parent_span_id": s.parent_span_id, "name": s.name, "span_type": s.span_type,
            "status": s.status, "started_at": iso(s.started), "offset_ms": off(s.started), "duration_ms": s.duration_ms,
            "model": s.model, "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
            "cost_usd": _num(s.cost_usd), "error_type": s.error_type, "error_message": s.error_message,
            "metadata": s.metadata,
        } for s in view.spans],
        "logs": [{
            "timestamp": iso(lg.at), "offset_ms": off(lg.at), "level": lg.level, "logger": lg.logger,
            "event": lg.event, "span_id": lg.span_id, "source": lg.source, "metadata": lg.metadata,
        } for lg in view.logs],
        "chat_messages": [{
            "timestamp": iso(m.at), "role": m.role, "content": m.content, "model": m.model,
            "conversation_id": m.conversation_id, "turn_number": m.turn_number, "input_tokens": m.input_tokens,
            "output_tokens": m.output_tokens, "span_id": m.span_id,
        } for m in view.chat_messages],
        "document_events": [{
            "timestamp": iso(d.at), "event_type": d.event_type, "status": d.status, "document_id": d.document_id,
            "duration_ms": d.duration_ms, "chunk_count": d.chunk_count, "error_message": d.error_message,
        } for d in view.document_events],
        "totals": {
            "duration_ms": t.duration_ms, "spans": t.spans, "failed_spans": t.failed_spans,
            "input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "cost_usd": float(t.cost_usd),
            "logs": t.logs,
        },
    }
