"""The rows of a waterfall: spans nested by parent, log lines at their times, big groups folded.

Pure layout logic, separate from drawing so that tests (and ``--json``) see the same order. A
trace of 10,000 spans is made readable by *folding*: among the children of one span, a name
that repeats more than :data:`FOLD_AT` times shows its first :data:`KEEP` spans and one line for
the rest (their count, time range, tokens and cost). Failed spans are never folded away: an
error is what a user opens the waterfall for. When a trace is still too big for the row budget
(thousands of distinct names), the deepest levels are folded instead: below a depth chosen so
that the rows fit, a span shows one line for everything nested under it.

Parent links are data, not a promise: a span whose parent never landed is drawn at the top
level, and spans whose parents form a cycle (corrupt or hand-written data) are drawn too, from
the earliest of them, instead of vanishing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from agent.views.model import LogView, SpanView, TraceView

FOLD_AT = 8
KEEP = 3


@dataclass(frozen=True, slots=True)
class SpanRow:
    span: SpanView
    depth: int
    orphan: bool = False  # its parent span never landed


@dataclass(frozen=True, slots=True)
class LogRow:
    log: LogView
    depth: int


@dataclass(frozen=True, slots=True)
class FoldRow:
    """Spans folded into a line (with everything below them): the later spans of one ``name``
    under one parent, or (``name`` empty) everything nested under one span at the depth limit."""

    name: str
    span_type: str
    depth: int
    count: int
    nested: int
    started: datetime
    ended: datetime | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    logs: int


Row = SpanRow | LogRow | FoldRow


class _Tree:
    """Children per span id (None: the trace's top level), spans and logs together."""

    def __init__(self, view: TraceView) -> None:
        ids = {s.span_id for s in view.spans}
        self.orphans = {s.span_id for s in view.spans if s.parent_span_id is not None and s.parent_span_id not in ids}
        self.spans: dict[str | None, list[SpanView]] = defaultdict(list)
        for s in view.spans:
            self.spans[s.parent_span_id if s.parent_span_id in ids else None].append(s)
        self.logs: dict[str | None, list[LogView]] = defaultdict(list)
        for log in view.logs:
            self.logs[log.span_id if log.span_id in ids else None].append(log)
        self._adopt_cycles(view)

    def _descendants(self, start: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(start)
        while stack:
            sid = stack.pop()
            if sid in seen:
                continue
            seen.add(sid)
            stack.extend(k.span_id for k in self.spans.get(sid, ()))
        return seen

    def _adopt_cycles(self, view: TraceView) -> None:
        """Spans not reachable from the top level sit on a parent cycle: lift the earliest of each."""
        reached = self._descendants([s.span_id for s in self.spans.get(None, [])])
        for s in sorted(view.spans, key=lambda s: (s.started, s.span_id)):
            if s.span_id not in reached:
                self.spans[None].append(s)
                self.orphans.add(s.span_id)
                reached |= self._descendants([s.span_id])

    def below(self, span_id: str) -> tuple[int, int]:
        """How many spans and log lines are under ``span_id`` (iteratively: traces can be deep)."""
        found = self._descendants([span_id]) - {span_id}
        logs = sum(len(self.logs.get(sid, ())) for sid in found) + len(self.logs.get(span_id, ()))
        return len(found), logs


def _fold(group: list[SpanView], tree: _Tree, depth: int) -> FoldRow:
    nested = logs = 0
    for s in group:
        n, m = tree.below(s.span_id)
        nested, logs = nested + n, logs + m + len(tree.logs.get(s.span_id, ()))
    ends = [e for e in (s.ended for s in group) if e is not None]
    return FoldRow(
        name=group[0].name, span_type=group[0].span_type, depth=depth, count=len(group), nested=nested,
        started=min(s.started for s in group), ended=max(ends) if len(ends) == len(group) else None,
        input_tokens=sum(s.input_tokens or 0 for s in group), output_tokens=sum(s.output_tokens or 0 for s in group),
        cost_usd=sum((s.cost_usd or Decimal(0) for s in group), Decimal(0)), logs=logs,
    )


def _children(tree: _Tree, parent: str | None, depth: int, fold: bool) -> list[tuple[datetime, int, Row]]:
    """The entries directly under ``parent`` in time order; spans before logs at the same instant."""
    spans = tree.spans.get(parent, [])
    entries: list[tuple[datetime, int, Row]] = [(log.at, 1, LogRow(log, depth)) for log in tree.logs.get(parent, [])]
    groups: dict[tuple[str, str], list[SpanView]] = defaultdict(list)
    for s in spans:
        groups[(s.name, s.span_type)].append(s)
    for members in groups.values():
        members.sort(key=lambda s: (s.started, s.span_id))
        shown, folded = members, []
        if fold and len(members) > FOLD_AT:
            shown = [s for i, s in enumerate(members) if i < KEEP or s.status == "failed"]
            folded = [s for i, s in enumerate(members) if i >= KEEP and s.status != "failed"]
        for s in shown:
            entries.append((s.started, 0, SpanRow(s, depth, s.span_id in tree.orphans)))
        if folded:
            entries.append((folded[0].started, 0, _fold(folded, tree, depth)))
    entries.sort(key=lambda e: (e[0], e[1], e[2].span.span_id if isinstance(e[2], SpanRow) else ""))
    return entries


def _fold_below(tree: _Tree, span_id: str, depth: int) -> FoldRow:
    """Everything nested under ``span_id`` as one line (the depth limit was reached)."""
    kids = tree.spans.get(span_id, [])
    if not kids:
        logs = tree.logs.get(span_id, [])
        at = min(lg.at for lg in logs)
        return FoldRow("", "", depth, 0, 0, at, max(lg.at for lg in logs), 0, 0, Decimal(0), len(logs))
    f = _fold(kids, tree, depth)
    own_logs = len(tree.logs.get(span_id, ()))
    return FoldRow("", "", depth, f.count, f.nested, f.started, f.ended, f.input_tokens, f.output_tokens,
                   f.cost_usd, f.logs + own_logs)


def _walk(tree: _Tree, fold: bool, cap: int | None) -> list[Row]:
    """Depth-first rows (iterative, so a 10,000-deep chain cannot overflow the stack); below depth
    ``cap`` a span's contents become one fold line."""
    out: list[Row] = []
    seen: set[str] = set()
    stack: list[Row] = [e[2] for e in reversed(_children(tree, None, 0, fold))]
    while stack:
        row = stack.pop()
        if isinstance(row, SpanRow):
            sid = row.span.span_id
            if sid in seen:
                continue
            seen.add(sid)
        out.append(row)
        if not isinstance(row, SpanRow):
            continue
        if cap is not None and row.depth >= cap:
            if tree.spans.get(sid) or tree.logs.get(sid):
                out.append(_fold_below(tree, sid, row.depth + 1))
            continue
        stack.extend(e[2] for e in reversed(_children(tree, sid, row.depth + 1, fold)))
    return out


def rows(view: TraceView, *, fold: bool = True, max_rows: int | None = None) -> list[Row]:
    """The rows of the waterfall: everything with ``fold=False``; else repeated names folded, and
    if that is still more than ``max_rows``, the deepest depth limit whose rows fit."""
    tree = _Tree(view)
    full = _walk(tree, fold, None)
    if not fold or max_rows is None or len(full) <= max_rows:
        return full
    deepest = max(r.depth for r in full)
    lo, hi, best = 0, deepest - 1, _walk(tree, fold, 0)
    while lo <= hi:
        mid = (lo + hi) // 2
        got = _walk(tree, fold, mid)
        if len(got) <= max_rows:
            best, lo = got, mid + 1
        else:
            hi = mid - 1
    return best
