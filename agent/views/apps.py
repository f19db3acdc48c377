"""``hypertail metrics`` and ``hypertail workflows``: plain-text tables, or JSON for scripts.

Plain text (no colour, no box drawing) so the same lines read well on a terminal and through a pipe
(``grep``, ``sort``, ``less``). Nothing is cut with an ellipsis: a row whose first column does not
fit the width gets that column on a line of its own, its values indented on the next.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from agent.views.export import iso
from agent.views.model import MetricSeries, WorkflowList, WorkflowView

KIND_WIDTH = 14  # "updown_counter"
GAP = "  "


def fmt_number(v: float | None) -> str:
    """Integers as integers (a counter's total stays exact), other values with 4 significant digits."""
    if v is None:
        return "-"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}"


def fmt_age(d: timedelta) -> str:
    """``45s``, ``12m05s``, ``3h07m``, ``2d04h``: the two largest units."""
    s = max(0, int(d.total_seconds()))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def series_label(s: MetricSeries) -> str:
    """``name{key=value,...}`` (attributes sorted), as Prometheus writes a series."""
    if not s.attributes:
        return s.name
    inner = ",".join(f"{k}={v if isinstance(v, str) else _json(v)}" for k, v in sorted(s.attributes.items()))
    return f"{s.name}{{{inner}}}"


def _json(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def metric_value(s: MetricSeries) -> str:
    """What a reader wants of each kind: a counter's total and rate, a gauge's last value and range,
    a histogram's count and percentiles."""
    if s.kind in ("counter", "updown_counter"):
        if s.total is None:  # cumulative rows only: the latest running total
            return f"{fmt_number(s.last)} (cumulative)"
        rate = "" if s.rate is None else f" ({fmt_number(s.rate)}/s)"
        return f"{fmt_number(s.total)}{rate}"
    if s.kind == "gauge":
        return f"{fmt_number(s.last)} (min {fmt_number(s.low)}, max {fmt_number(s.high)})"
    if s.kind == "histogram":  # min and max are in --json
        return f"n={s.count} p50={fmt_number(s.p50)} p95={fmt_number(s.p95)} p99={fmt_number(s.p99)}"
    return f"{fmt_number(s.last)} ({s.rows} rows)"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], width: int) -> list[str]:
    """Columns padded to their widest cell; the first column gives way: a cell too wide for what the
    others leave goes on its own line, the rest of its row on the next, under the header."""
    if not rows:
        return []
    rest = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header) if i > 0]
    tail_width = sum(rest) + len(GAP) * len(rest)
    first = min(max(len(header[0]), *(len(r[0]) for r in rows)), max(len(header[0]), width - tail_width))

    def line(cells: tuple[str, ...]) -> str:
        parts = [cells[0].ljust(first)] + [c.ljust(w) for c, w in zip(cells[1:], rest, strict=True)]
        return GAP.join(parts).rstrip()

    out = [line(header)]
    for r in rows:
        if len(r[0]) > first:
            out.append(r[0])
            out.append(line(("", *r[1:])))
        else:
            out.append(line(r))
    return out


def render_metrics(series: list[MetricSeries], width: int) -> list[str]:
    """One line per series (name and attributes, kind, value), sorted by name."""
    rows = [(series_label(s), s.kind, metric_value(s)) for s in series]
    return _table(("SERIES", "KIND", "VALUE"), rows, width)


def metrics_json(series: list[MetricSeries]) -> list[dict[str, Any]]:
    return [{
        "name": s.name, "kind": s.kind, "attributes": s.attributes, "rows": s.rows, "count": s.count,
        "first": iso(s.first), "last_at": iso(s.last_at), "total": s.total, "rate_per_s": s.rate, "last": s.last,
        "min": s.low, "max": s.high, "p50": s.p50, "p95": s.p95, "p99": s.p99,
    } for s in series]


def _workflow_row(w: WorkflowView, typed: bool) -> tuple[str, ...]:
    state = w.state if w.consistent else f"{w.state} *"
    return (w.workflow_id, *((w.workflow_type or "",) if typed else ()), state, fmt_age(w.time_in_state),
            str(w.transitions))


def render_workflows(wl: WorkflowList, width: int) -> list[str]:
    """Counts per state, then the workflows by state, longest in their state first."""
    out = _table(("STATE", "WORKFLOWS"), [(s, str(n)) for s, n in wl.per_state.items()], width)
    if not wl.workflows:
        return out
    typed = any(w.workflow_type for w in wl.workflows)
    header = ("WORKFLOW", *(("TYPE",) if typed else ()), "STATE", "IN STATE", "STEPS")
    out += ["", *_table(header, [_workflow_row(w, typed) for w in wl.workflows], width)]
    shown, total = len(wl.workflows), sum(wl.per_state.values())
    if shown < total:
        out.append(f"({shown} of {total} shown; --limit, --state or --type for others)")
    if not all(w.consistent for w in wl.workflows):
        out.append("* a transition's from_state differs from the state before it (clocks that disagree "
                   "between hosts, or two processes moving one workflow at once): see --json history")
    return out


def workflows_json(wl: WorkflowList) -> dict[str, Any]:
    return {
        "per_state": wl.per_state,
        "workflows": [{
            "workflow_id": w.workflow_id, "workflow_type": w.workflow_type, "state": w.state, "since": iso(w.since),
            "seconds_in_state": w.time_in_state.total_seconds(), "started_at": iso(w.started_at),
            "transitions": w.transitions, "consistent": w.consistent, "trace_id": w.trace_id,
            "history": list(w.history),
        } for w in wl.workflows],
    }
