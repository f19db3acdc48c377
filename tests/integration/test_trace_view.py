"""The read side of issue 13: `hypertail trace` and `hypertail traces` on real tables (both modes)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from pathlib import Path

import asyncpg
import pytest

from agent.cli import main
from agent.sink.traces import TraceNotFound, TraceReadError, fetch_trace, list_traces, read_trace
from agent.views.export import to_json
from agent.views.model import TraceFilter
from agent.views.tree import KEEP, FoldRow, LogRow, SpanRow, rows
from agent.views.waterfall import render
from tests.tracedata import IDS, SPANS, T0, TRACE_ID, insert_known_trace, insert_span


def config(tmp_path: Path, dsn: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(f'[database]\ndsn = "{dsn}"\nconnect_timeout_s = 2\n')
    return p


async def test_reads_everything_under_the_trace_id(conn: asyncpg.Connection) -> None:
    await insert_known_trace(conn)
    view = await read_trace(conn, TRACE_ID)
    assert view is not None and view.header is not None and view.header.name == "answer question"
    assert {s.name for s in view.spans} == set(SPANS)
    assert [lg.event for lg in view.logs] == ["retrieve.hits", "request.done"]  # not the line outside the trace
    assert len(view.chat_messages) == 1 and len(view.document_events) == 1
    assert await read_trace(conn, "f" * 32) is None


async def test_rows_nest_by_parent_and_interleave_logs(conn: asyncpg.Connection) -> None:
    await insert_known_trace(conn)
    view = await read_trace(conn, TRACE_ID)
    assert view is not None
    got = [(type(r).__name__, r.depth, r.span.name if isinstance(r, SpanRow) else r.log.event)
           for r in rows(view)]
    assert got == [
        ("SpanRow", 0, "request"),
        ("SpanRow", 1, "retrieve"), ("LogRow", 2, "retrieve.hits"),
        ("SpanRow", 1, "llm"), ("SpanRow", 1, "rerank"), ("SpanRow", 1, "stream"),
        ("SpanRow", 0, "orphan"),
        ("LogRow", 0, "request.done"),
    ]
    orphan = next(r for r in rows(view) if isinstance(r, SpanRow) and r.span.name == "orphan")
    assert orphan.orphan


def bar_cells(line: str, left: int, right: int) -> tuple[int, int]:
    """[first, last) cells of the bar in ``line`` between the axis marks."""
    area = line[left:right + 1]
    marks = [i for i, ch in enumerate(area) if ch in "█░▓"]
    return marks[0], marks[-1] + 1


def check_bars(lines: list[str], width: int) -> None:
    """Every span's bar starts at floor(offset / total * width) and covers its duration."""
    axis = next(line for line in lines if "├" in line and "┤" in line)
    left, right = axis.index("├"), axis.index("┤")
    cells = right - left + 1
    total = 1000
    for name, (_, off, dur, _, _) in SPANS.items():
        line = next(x for x in lines if f" {name} [" in x or x.startswith(f"{name} ["))
        first, last = bar_cells(line, left, right)
        assert first == math.floor(off / total * cells), (name, line)
        if dur is None:
            assert last == cells, (name, line)  # still running: open to the end of the axis
        else:
            assert last == max(first + 1, math.ceil((off + dur) / total * cells)), (name, line)
    for off in (150, 950):  # the log lines, found by their offset in the details
        line = next(x for x in lines if f"+{off} ms" in x)
        assert line[left:right + 1].index("•") == math.floor(off / total * cells), line
    assert all(len(x) <= width for x in lines if "█" in x or "├" in x)


@pytest.mark.parametrize("width", [100, 120, 200])
async def test_waterfall_bars_sit_on_the_common_axis(conn: asyncpg.Connection, width: int) -> None:
    await insert_known_trace(conn)
    view = await read_trace(conn, TRACE_ID)
    assert view is not None
    lines = [t.plain for t in render(view, width)]
    assert all(len(x) <= width for x in lines if "├" in x or "█" in x)
    check_bars(lines, width)
    check_bars([t.plain for t in render(view, 60)], 60)  # narrow: the bars still line up
    text = "\n".join(lines)
    assert "gpt-4o" in text and "1200/300 tok" in text and "$0.012500" in text
    assert "TimeoutError" in text and "(parent missing)" in text
    assert "totals" in text and "A sidecar." in text and "chunk" in text


async def test_failed_spans_are_red(conn: asyncpg.Connection) -> None:
    await insert_known_trace(conn)
    view = await read_trace(conn, TRACE_ID)
    assert view is not None
    line = next(t for t in render(view, 120) if "rerank [" in t.plain)
    assert any("red" in str(span.style) for span in line.spans)


async def test_json_has_the_stored_fields(conn: asyncpg.Connection) -> None:
    await insert_known_trace(conn)
    view = await read_trace(conn, TRACE_ID)
    assert view is not None
    data = json.loads(json.dumps(to_json(view)))
    llm = next(s for s in data["spans"] if s["name"] == "llm")
    assert llm == {
        "span_id": IDS["llm"], "parent_span_id": IDS["request"], "name": "llm", "span_type": "llm",
        "status": "completed", "started_at": "2026-11-01T12:00:00.300000+00:00", "offset_ms": 300.0,
        "duration_ms": 600, "model": "gpt-4o", "input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.0125,
        "error_type": None, "error_message": None, "metadata": {},
    }
    assert data["totals"] == {"duration_ms": 1000.0, "spans": 6, "failed_spans": 1, "input_tokens": 1200,
                              "output_tokens": 300, "cost_usd": 0.0125, "logs": 2}
    assert data["logs"][0]["span_id"] == IDS["retrieve"] and data["logs"][0]["metadata"] == {"k": 1}


async def test_a_trace_of_spans_only_still_in_progress(conn: asyncpg.Connection) -> None:
    """No trace row yet (its end record has not landed, nor its start): spans alone are shown."""
    tid = "a" * 32
    await insert_span(conn, tid, "1" * 16, None, T0, None, status="in_progress", name="root")
    await insert_span(conn, tid, "2" * 16, "1" * 16, T0 + dt.timedelta(milliseconds=10), 5, name="child")
    view = await read_trace(conn, tid)
    assert view is not None and view.header is None
    lines = [t.plain for t in render(view, 100)]
    assert "no trace record yet" in lines[0]
    root = next(x for x in lines if "root [" in x)
    assert "░" in root and "running" in root


async def test_ten_thousand_spans_are_folded(conn: asyncpg.Connection) -> None:
    tid = "b" * 32
    await insert_span(conn, tid, "f" * 16, None, T0, 20_000, "http", name="batch")
    await conn.execute(
        "INSERT INTO observability.spans (span_id, \"timestamp\", trace_id, parent_span_id, name, span_type, status, "
        "duration_ms, input_tokens) SELECT lpad(to_hex(g), 16, '0'), $1::timestamptz + g * interval '1 ms', $2, $3, "
        "'embed', 'embedding', CASE WHEN g = 5000 THEN 'failed' ELSE 'completed' END, 5, 10 "
        "FROM generate_series(1, 9999) g", T0, tid, "f" * 16)
    view = await read_trace(conn, tid)
    assert view is not None and len(view.spans) == 10_000
    folded = rows(view)
    assert len(folded) == 1 + KEEP + 1 + 1  # the root, the first KEEP, the failed one, one fold line
    fold = next(r for r in folded if isinstance(r, FoldRow))
    assert fold.count == 9999 - KEEP - 1 and fold.input_tokens == 10 * fold.count
    assert len(rows(view, fold=False)) == 10_000
    text = [t.plain for t in render(view, 120)]
    assert any(f"⋯ {fold.count} more embed [embedding]" in x for x in text)
    assert not any(isinstance(r, LogRow) for r in folded)


async def test_traces_lists_recent_ones_with_filters(conn: asyncpg.Connection) -> None:
    now = await conn.fetchval("SELECT now()")
    for i, (status, op) in enumerate([("completed", "chat"), ("failed", "chat"), ("completed", "rag")]):
        tid = f"{i + 1:032x}"
        await conn.execute(
            "INSERT INTO observability.traces (trace_id, \"timestamp\", name, operation_type, status, duration_ms) "
            "VALUES ($1, $2, 'req', $3, $4, 10)", tid, now - dt.timedelta(minutes=10 * (i + 1)), op, status)
        await insert_span(conn, tid, f"{i + 1:016x}", None, now - dt.timedelta(minutes=10 * (i + 1)), 5,
                          input_tokens=7, cost_usd=0.5)
    got = await list_traces(conn, TraceFilter(since=dt.timedelta(hours=1)))
    assert [t.trace_id[-1] for t in got] == ["1", "2", "3"]  # newest first
    assert got[0].spans == 1 and got[0].input_tokens == 7 and str(got[0].cost_usd) == "0.500000"
    failed = await list_traces(conn, TraceFilter(since=dt.timedelta(hours=1), status="failed"))
    assert [t.trace_id[-1] for t in failed] == ["2"]
    chat = await list_traces(conn, TraceFilter(since=dt.timedelta(minutes=25), operation="chat", limit=1))
    assert [t.trace_id[-1] for t in chat] == ["1"]


async def test_cli_trace_json_and_errors(dsn: str, conn: asyncpg.Connection, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    await insert_known_trace(conn)
    cfg = str(config(tmp_path, dsn))
    assert await asyncio.to_thread(main, ["trace", TRACE_ID.upper(), "--config", cfg, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trace"]["name"] == "answer question"
    assert await asyncio.to_thread(main, ["trace", "c" * 32, "--config", cfg]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no trace cccc" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["trace", "xyz", "--config", cfg])
    assert exit_.value.code == 2
    assert await asyncio.to_thread(main, ["trace", TRACE_ID, "--config", cfg, "--width", "100"]) == 0
    check_bars(capsys.readouterr().out.splitlines(), 100)
    assert await asyncio.to_thread(main, ["traces", "--config", cfg, "--since", "3650d", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["trace_id"] == TRACE_ID


async def test_unreachable_database_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(config(tmp_path, "postgresql://nobody@127.0.0.1:1/none"))
    assert await asyncio.to_thread(main, ["trace", TRACE_ID, "--config", cfg]) == 1
    assert await asyncio.to_thread(main, ["traces", "--config", cfg]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("hypertail: cannot ") for line in err)
    with pytest.raises(TraceReadError):
        await fetch_trace(__import__("agent.config").config.DatabaseSettings(connect_timeout_s=2),
                          "postgresql://nobody@127.0.0.1:1/none", TRACE_ID)
    _ = TraceNotFound


async def test_a_big_tree_of_distinct_names_is_folded_by_depth(conn: asyncpg.Connection) -> None:
    """10,000 spans, 50 children per span, 40 names among siblings: no name repeats enough to fold,
    so the deepest levels are folded until the rows fit the budget; nothing is lost from the totals."""
    tid = "c" * 32
    await conn.execute(
        "INSERT INTO observability.spans (span_id, \"timestamp\", trace_id, parent_span_id, name, span_type, status, "
        "duration_ms) SELECT lpad(to_hex(g), 16, '0'), $1::timestamptz + g * interval '1 ms', $2, "
        "CASE WHEN g = 0 THEN NULL ELSE lpad(to_hex(g / 50), 16, '0') END, 'step ' || (g % 40), 'tool', "
        "'completed', 2 FROM generate_series(0, 9999) g", T0, tid)
    view = await read_trace(conn, tid)
    assert view is not None
    got = rows(view, max_rows=400)
    assert 50 < len(got) <= 400
    shown = sum(isinstance(r, SpanRow) for r in got)
    folded = sum(r.count + r.nested for r in got if isinstance(r, FoldRow))
    assert shown + folded == 10_000
    assert any(isinstance(r, FoldRow) and not r.name for r in got)
    text = [t.plain for t in render(view, 120)]
    assert any("spans below" in x for x in text) and not any("more rows not shown" in x for x in text)


async def test_spans_on_a_parent_cycle_are_still_drawn(conn: asyncpg.Connection) -> None:
    tid = "d" * 32
    await insert_span(conn, tid, "1" * 16, None, T0, 100, name="root")
    await insert_span(conn, tid, "2" * 16, "3" * 16, T0 + dt.timedelta(milliseconds=10), 5, name="a")
    await insert_span(conn, tid, "3" * 16, "2" * 16, T0 + dt.timedelta(milliseconds=20), 5, name="b")
    await insert_span(conn, tid, "4" * 16, "4" * 16, T0 + dt.timedelta(milliseconds=30), 5, name="self")
    view = await read_trace(conn, tid)
    assert view is not None
    names = [r.span.name for r in rows(view) if isinstance(r, SpanRow)]
    assert sorted(names) == ["a", "b", "root", "self"]
