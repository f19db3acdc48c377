"""``hypertail traces``: recent traces as a table, or as JSON for scripts.

On a terminal the table fits its width (see :mod:`agent.views.table`): the trace id stays whole
(it is what ``hypertail trace`` takes), the name gives way first, then the columns that matter
least (tokens, cost, operation, span count) are left out and a last line says which. Start
times are ``HH:MM:SS`` when every trace shown started on the same (UTC) day, which the caption
names. In a pipe every column is printed whole with full timestamps, one trace per line.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agent.views.export import iso
from agent.views.model import TraceSummary
from agent.views.table import Column, fit
from agent.views.waterfall import fmt_cost, fmt_ms

COLUMNS = (
    Column("STARTED", keep=6), Column("TRACE ID", keep=10), Column("NAME", keep=8, shrink=8),
    Column("OPERATION", keep=3, shrink=8), Column("STATUS", keep=9), Column("DURATION", right=True, keep=5),
    Column("SPANS", right=True, keep=4), Column("TOKENS IN/OUT", right=True, keep=1),
    Column("COST", right=True, keep=2),
)


def _tokens(i: int | None, o: int | None) -> str:
    return "" if i is None and o is None else f"{i or 0}/{o or 0}"


def to_json(traces: list[TraceSummary]) -> list[dict[str, Any]]:
    return [{
        "trace_id": t.trace_id, "started_at": iso(t.started), "name": t.name, "operation_type": t.operation_type,
        "user_id": t.user_id, "status": t.status, "duration_ms": t.duration_ms, "spans": t.spans,
        "failed_spans": t.failed_spans, "input_tokens": t.input_tokens, "output_tokens": t.output_tokens,
        "cost_usd": None if t.cost_usd is None else float(t.cost_usd),
    } for t in traces]


def row_style(t: TraceSummary) -> str:
    """How a row is coloured on a terminal: failed red, in progress yellow."""
    return "red" if t.status == "failed" else ("yellow" if t.status == "in_progress" else "")


def table(traces: list[TraceSummary], width: int | None) -> tuple[list[str], list[str]]:
    """The caption lines and the table's lines (header first), newest trace first.

    ``width`` None: a pipe (every column whole, full timestamps, no caption)."""
    days = {t.started.date() for t in traces}
    short = width is not None and len(days) == 1
    rows = [(
        t.started.strftime("%H:%M:%S" if short else "%Y-%m-%d %H:%M:%S"), t.trace_id, t.name,
        t.operation_type or "", t.status, fmt_ms(t.duration_ms) if t.duration_ms is not None else "running",
        f"{t.spans}" + (f" ({t.failed_spans} failed)" if t.failed_spans else ""),
        _tokens(t.input_tokens, t.output_tokens), fmt_cost(t.cost_usd),
    ) for t in traces]
    fitted = fit(COLUMNS, rows, width)
    caption: list[str] = []
    if width is not None:
        day = f" on {next(iter(days)).isoformat()}" if short else ""
        caption.append(f"{len(traces)} trace{'s' if len(traces) != 1 else ''}, newest first (times UTC{day})")
    footer = [f"hidden at {width} columns: {', '.join(fitted.hidden)} (--json shows all)"] if fitted.hidden else []
    return caption + fitted.lines, footer


def age(since: timedelta) -> str:
    """``--since`` as the user wrote it: 90s, 30m, 1h, 7d (the largest unit that is whole)."""
    seconds = since.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
