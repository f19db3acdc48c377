"""``hypertail trace``: one trace as a terminal waterfall (the same data as JSON: :mod:`agent.views.export`).

Layout, left to right: the label (indented by nesting), the bar area, the details (duration,
status, model, tokens, cost, error). Every bar is placed on one time axis that runs from the
earliest thing in the trace to the latest, so a bar's first cell is ``floor(offset / total *
width)`` and it covers its duration (at least one cell). The axis line above the bars marks
the area with ``├`` and ``┤``, which is how the tmux test finds it. Colour comes from ``rich``
(errors red) and disappears by itself when the output is not a terminal or ``NO_COLOR`` is set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from rich.text import Text

from agent.views.model import SpanView, TraceView
from agent.views.table import Column, fit
from agent.views.tree import LogRow, Row, SpanRow, rows

MAX_ROWS = 400  # beyond this many rows (after folding) the rest is summarised; --all shows all
TYPE_STYLE = {"llm": "magenta", "retrieval": "cyan", "embedding": "blue", "rerank": "cyan", "tool": "yellow"}
LEVEL_STYLE = {"warning": "yellow", "error": "red", "critical": "bold red", "debug": "dim"}
FULL, OPEN, FOLDED, LOG_MARK = "█", "░", "▓", "•"


def millis(delta: timedelta) -> float:
    """A duration in milliseconds (fractional)."""
    return delta.total_seconds() * 1000


@dataclass(frozen=True, slots=True)
class Axis:
    """The common time axis: ``start`` is cell 0, ``total_ms`` spans ``width`` cells."""

    start: datetime
    total_ms: float
    width: int

    def cell(self, at: datetime) -> int:
        x = math.floor(millis(at - self.start) / self.total_ms * self.width)
        return min(max(x, 0), self.width - 1)

    def cells(self, start: datetime, duration_ms: float | None) -> tuple[int, int]:
        """[first, last) cells of a bar; an open bar (no duration yet) runs to the axis end."""
        a = self.cell(start)
        if duration_ms is None:
            return a, self.width
        b = math.ceil((millis(start - self.start) + duration_ms) / self.total_ms * self.width)
        return a, min(max(b, a + 1), self.width)


@dataclass(frozen=True, slots=True)
class Totals:
    duration_ms: float
    spans: int
    failed_spans: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    logs: int


def bounds(view: TraceView) -> tuple[datetime, datetime]:
    """Earliest and latest instants of the trace: spans, their ends, logs, and the trace row."""
    times: list[datetime] = []
    for s in view.spans:
        times.append(s.started)
        if s.ended is not None:
            times.append(s.ended)
    times.extend(log.at for log in view.logs)
    times.extend(m.at for m in view.chat_messages)
    times.extend(d.at for d in view.document_events)
    h = view.header
    if h is not None:
        times.append(h.started)
        if h.ended_at is not None:
            times.append(h.ended_at)
        if h.duration_ms is not None:
            times.append(h.started + timedelta(milliseconds=h.duration_ms))
    return min(times), max(times)


def totals(view: TraceView) -> Totals:
    """The trace row's totals where it has them, else the sums over its spans."""
    start, end = bounds(view)
    h = view.header
    spans = view.spans
    tin = sum(s.input_tokens or 0 for s in spans)
    tout = sum(s.output_tokens or 0 for s in spans)
    cost = sum((s.cost_usd or Decimal(0) for s in spans), Decimal(0))
    if h is not None:
        tin = h.total_input_tokens if h.total_input_tokens is not None else tin
        tout = h.total_output_tokens if h.total_output_tokens is not None else tout
        cost = h.total_cost_usd if h.total_cost_usd is not None else cost
    duration = float(h.duration_ms) if h is not None and h.duration_ms is not None else millis(end - start)
    return Totals(duration, len(spans), sum(s.status == "failed" for s in spans), tin, tout, cost, len(view.logs))


# --- text -------------------------------------------------------------------------------------

def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "running"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    return f"{ms / 60_000:.1f} min"


def fmt_cost(cost: Decimal | None) -> str:
    return "" if cost is None else f"${cost:.6f}"


def _tokens(i: int | None, o: int | None) -> str:
    return "" if i is None and o is None else f"{i or 0}/{o or 0} tok"


def _span_label(r: SpanRow) -> str:
    s = r.span
    mark = "✗ " if s.status == "failed" else ""
    return f"{'  ' * r.depth}{mark}{s.name} [{s.span_type}]"


def _span_details(s: SpanView, orphan: bool) -> str:
    parts = [fmt_ms(s.duration_ms), "(parent missing)" if orphan else "", s.status if s.status != "completed" else ""]
    parts += [s.model or "", _tokens(s.input_tokens, s.output_tokens), fmt_cost(s.cost_usd)]
    if s.status == "failed" and (s.error_type or s.error_message):
        parts.append(f"{s.error_type or 'error'}: {s.error_message or ''}".strip())
    return "  ".join(p for p in parts if p)


def _label(r: Row) -> str:
    if isinstance(r, SpanRow):
        return _span_label(r)
    if isinstance(r, LogRow):
        lg = r.log
        return f"{'  ' * r.depth}{LOG_MARK} {(lg.level or 'log').upper()} {lg.event or ''}".rstrip()
    if not r.name:
        what = f"{r.count} spans" if r.count else f"{r.logs} log lines"
        return f"{'  ' * r.depth}⋯ {what} below"
    return f"{'  ' * r.depth}⋯ {r.count} more {r.name} [{r.span_type}]"


def _details(r: Row, axis: Axis) -> str:
    if isinstance(r, SpanRow):
        return _span_details(r.span, r.orphan)
    if isinstance(r, LogRow):
        lg = r.log
        return "  ".join(p for p in (f"+{fmt_ms(millis(lg.at - axis.start))}", lg.logger or "") if p)
    span = None if r.ended is None else millis(r.ended - r.started)
    extra = [f"{r.nested} nested" if r.nested else "", f"{r.logs} logs" if r.logs else ""]
    parts = [fmt_ms(span), _tokens(r.input_tokens or None, r.output_tokens or None),
             fmt_cost(r.cost_usd) if r.cost_usd else "", *extra, "(--all unfolds)"]
    return "  ".join(p for p in parts if p)


def _style(r: Row) -> str:
    if isinstance(r, SpanRow):
        if r.span.status == "failed":
            return "bold red"
        return TYPE_STYLE.get(r.span.span_type, "green")
    if isinstance(r, LogRow):
        return LEVEL_STYLE.get((r.log.level or "").lower(), "")
    return "dim"


def _bar(r: Row, axis: Axis) -> str:
    cells = [" "] * axis.width
    if isinstance(r, LogRow):
        cells[axis.cell(r.log.at)] = LOG_MARK
        return "".join(cells)
    if isinstance(r, SpanRow):
        a, b = axis.cells(r.span.started, r.span.duration_ms)
        glyph = FULL if r.span.duration_ms is not None else OPEN
    else:
        a, b = axis.cells(r.started, None if r.ended is None else millis(r.ended - r.started))
        glyph = FOLDED
    for i in range(a, b):
        cells[i] = glyph
    return "".join(cells)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def pack(parts: list[Text], width: int) -> list[Text]:
    """Parts joined by two spaces into lines of at most ``width`` cells, breaking only between
    parts (a part wider than a line is cut), so a header never wraps mid-word on a narrow terminal."""
    lines: list[Text] = []
    current: Text | None = None
    for part in parts:
        if not part.plain:
            continue
        if current is not None and current.cell_len + 2 + part.cell_len <= width:
            current.append("  ")
            current.append_text(part)
            continue
        if current is not None:
            lines.append(current)
        current = part.copy()
        current.truncate(width, overflow="ellipsis")
    if current is not None:
        lines.append(current)
    for line in lines:
        line.no_wrap, line.overflow = True, "crop"
    return lines


def _header_lines(view: TraceView, t: Totals, start: datetime, width: int) -> list[Text]:
    h = view.header
    parts = [Text(f"trace {view.trace_id}", style="bold")]
    if h is None:
        parts.append(Text("(no trace record yet: spans and logs only)", style="bold"))
    else:
        status_style = "bold red" if h.status == "failed" else ("yellow" if h.status == "in_progress" else "green")
        parts += [Text(h.name, style="bold"), Text(h.operation_type or ""), Text(h.status, style=status_style)]
        if h.status == "failed" and (h.error_type or h.error_message):
            parts.append(Text(f"{h.error_type or 'error'}: {h.error_message or ''}", style="red"))
    when = [f"started {start.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]} UTC", f"{t.spans} spans", f"{t.logs} log lines"]
    if h is not None and h.user_id:
        when.append(f"user {h.user_id}")
    return pack(parts, width) + pack([Text(w, style="dim") for w in when], width)


def render(view: TraceView, width: int, *, fold: bool = True, max_rows: int = MAX_ROWS) -> list[Text]:
    """The waterfall as lines (rich Text, styled), each at most ``width`` cells: nothing wraps
    (the header and footer break between their parts, chat and document lines are aligned
    columns whose text is cut)."""
    start, end = bounds(view)
    t = totals(view)
    all_rows = rows(view, fold=fold, max_rows=max_rows)
    shown = all_rows if not fold else all_rows[:max_rows]
    labels = [_label(r) for r in shown]
    axis_probe = Axis(start, max(millis(end - start), 1.0), 1)
    details = [_details(r, axis_probe) for r in shown]
    lw = min(max([len(x) for x in labels] + [16]), max(16, int(width * 0.30)))
    dw = min(max([len(x) for x in details] + [8]), max(8, int(width * 0.40)))
    bw = max(10, width - lw - dw - 2)
    axis = Axis(start, max(millis(end - start), 1.0), bw)
    out = _header_lines(view, t, start, width)
    scale = f"0 ms{fmt_ms(axis.total_ms).rjust(bw - 4)}"
    out.append(Text(" " * (lw + 1) + scale, style="dim", no_wrap=True, overflow="crop"))
    out.append(Text(" " * (lw + 1) + "├" + "─" * (bw - 2) + "┤", style="dim", no_wrap=True, overflow="crop"))
    for r, label, detail in zip(shown, labels, details, strict=True):
        style = _style(r)
        line = Text(_cut(label, lw).ljust(lw) + " ", style=style if isinstance(r, SpanRow | LogRow) else "dim",
                    no_wrap=True, overflow="crop")
        line.append(_bar(r, axis), style=style)
        line.append(" " + _cut(detail, dw), style="red" if style == "bold red" else "dim")
        out.append(line)
    if len(shown) < len(all_rows):
        out.append(Text(f"… {len(all_rows) - len(shown)} more rows not shown (--all shows every span)", style="dim"))
    out.extend(_footer(view, t, start, width))
    return out


def _footer(view: TraceView, t: Totals, start: datetime, width: int) -> list[Text]:
    failed = f" ({t.failed_spans} failed)" if t.failed_spans else ""
    totals = [Text("totals", style="bold"), Text(f"duration {fmt_ms(t.duration_ms)}"),
              Text.assemble(f"spans {t.spans}", (failed, "bold red")),
              Text(f"tokens {t.input_tokens} in / {t.output_tokens} out"), Text(f"cost {fmt_cost(t.cost_usd)}"),
              Text(f"logs {t.logs}")]
    out = [Text(""), *pack(totals, width)]
    if view.chat_messages:
        out.append(Text(f"chat messages ({len(view.chat_messages)})", style="bold"))
        rows = [(f"+{fmt_ms(millis(m.at - start))}", m.role, m.model or "", _tokens(m.input_tokens, m.output_tokens),
                 repr(m.content.replace("\n", " "))) for m in view.chat_messages]
        out += [_plain(line) for line in fit(CHAT_COLUMNS, rows, width, header=False, indent="  ").lines]
    if view.document_events:
        out.append(Text(f"document events ({len(view.document_events)})", style="bold"))
        docs = [(f"+{fmt_ms(millis(d.at - start))}", d.event_type, d.status,
                 fmt_ms(d.duration_ms) if d.duration_ms is not None else "",
                 f"document {d.document_id}" if d.document_id else "",
                 f"{d.chunk_count} chunks" if d.chunk_count is not None else "", d.error_message or "")
                for d in view.document_events]
        lines = fit(DOC_COLUMNS, docs, width, header=False, indent="  ").lines
        out += [_plain(line, "red" if d.status == "failed" else "") for line, d in zip(lines, view.document_events,
                                                                                        strict=True)]
    return out


# Chat messages and document events under the waterfall: aligned columns, the text cut to fit.
CHAT_COLUMNS = (Column("AT", right=True, keep=9), Column("ROLE", keep=8), Column("MODEL", keep=3, shrink=8),
                Column("TOKENS", right=True, keep=2), Column("CONTENT", keep=7, shrink=12))
DOC_COLUMNS = (Column("AT", right=True, keep=9), Column("EVENT", keep=8), Column("STATUS", keep=7),
               Column("DURATION", right=True, keep=5), Column("DOCUMENT", keep=2, shrink=12),
               Column("CHUNKS", right=True, keep=3), Column("ERROR", keep=6, shrink=12))


def _plain(line: str, style: str = "") -> Text:
    return Text(line, style=style, no_wrap=True, overflow="crop")
