"""``hypertail traces``: recent traces as a table, or as JSON for scripts."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from agent.views.export import iso
from agent.views.model import TraceSummary
from agent.views.waterfall import fmt_cost, fmt_ms


def _tokens(i: int | None, o: int | None) -> str:
    return "" if i is None and o is None else f"{i or 0}/{o or 0}"


def to_json(traces: list[TraceSummary]) -> list[dict[str, Any]]:
    return [{
        "trace_id": t.trace_id, "started_at": iso(t.started), "name": t.name, "operation_type": t.operation_type,
        "user_id": t.user_id, "status": t.status, "duration_ms": t.duration_ms, "spans": t.spans,
        "failed_spans": t.failed_spans, "input_tokens": t.input_tokens, "output_tokens": t.output_tokens,
        "cost_usd": None if t.cost_usd is None else float(t.cost_usd),
    } for t in traces]


def table(traces: list[TraceSummary]) -> Table:
    """One row per trace, newest first; the trace id is whole so it can be pasted into ``hypertail trace``."""
    tb = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (("STARTED (UTC)", "left"), ("TRACE ID", "left"), ("OPERATION", "left"),
                          ("NAME", "left"), ("STATUS", "left"), ("DURATION", "right"), ("SPANS", "right"),
                          ("TOKENS IN/OUT", "right"), ("COST", "right")):
        tb.add_column(name, justify=justify, no_wrap=name in ("TRACE ID", "STARTED (UTC)"))  # type: ignore[arg-type]
    for t in traces:
        style = "red" if t.status == "failed" else ("yellow" if t.status == "in_progress" else "")
        spans = f"{t.spans}" + (f" ({t.failed_spans}✗)" if t.failed_spans else "")
        tokens = _tokens(t.input_tokens, t.output_tokens)
        tb.add_row(t.started.strftime("%Y-%m-%d %H:%M:%S"), t.trace_id, t.operation_type or "", t.name, t.status,
                   fmt_ms(t.duration_ms) if t.duration_ms is not None else "running", spans, tokens,
                   fmt_cost(t.cost_usd), style=style)
    return tb
