"""What the CLI prints at 80 columns and into a pipe (issue 22): tables that give way column by
column instead of cutting every header to one letter, a waterfall whose header does not wrap,
chat and document lines in aligned columns."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from agent.views.listing import age, table
from agent.views.model import ChatView, DocEventView, SpanView, TraceHeader, TraceSummary, TraceView
from agent.views.table import Column, cut, fit
from agent.views.waterfall import render

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
TID = "4bf92f3577b34da6a3ce929d0e0e4736"


def summary(i: int, name: str = "ingest_document", status: str = "completed", day: int = 0) -> TraceSummary:
    return TraceSummary(
        trace_id=f"{i + 1:032x}", started=T0 + dt.timedelta(days=day, seconds=i), name=name,
        operation_type="document_processing", user_id=None, status=status, duration_ms=1200, spans=5,
        failed_spans=1 if status == "failed" else 0, input_tokens=1200, output_tokens=230,
        cost_usd=Decimal("0.000420"),
    )


def test_traces_at_80_columns_keep_whole_columns_and_say_which_are_left_out() -> None:
    traces = [summary(0), summary(1, status="failed"), summary(2, name="chat_request")]
    lines, footer = table(traces, 80)
    assert all(len(line) <= 80 for line in lines + footer)
    caption, header, *rows = lines
    assert caption == "3 traces, newest first (times UTC on 2026-05-01)"
    assert header.split() == ["STARTED", "TRACE", "ID", "NAME", "STATUS", "DURATION"]
    assert rows[0].split() == ["12:00:00", traces[0].trace_id, "ingest_document", "completed", "1.20", "s"]
    assert "…" not in "".join(lines)
    assert footer == ["hidden at 80 columns: OPERATION, SPANS, TOKENS IN/OUT, COST (--json shows all)"]


def test_traces_in_a_pipe_are_whole_rows_with_full_timestamps() -> None:
    traces = [summary(0), summary(1, day=1)]
    lines, footer = table(traces, None)
    assert footer == [] and lines[0].split()[0] == "STARTED"  # no caption: the header is the first line
    assert lines[1].split()[:3] == ["2026-05-01", "12:00:00", traces[0].trace_id]
    assert lines[2].split()[-3:] == ["5", "1200/230", "$0.000420"]


def test_a_very_narrow_terminal_cuts_only_the_free_text() -> None:
    traces = [summary(0, name="a_rather_long_operation_name_for_a_trace")]
    lines, _ = table(traces, 64)
    assert all(len(line) <= 64 for line in lines)
    row = lines[-1]
    assert traces[0].trace_id in row and "completed" in row and row.count("…") == 1


def test_fit_takes_back_a_column_that_fits_once_a_wider_one_went() -> None:
    cols = [Column("A", keep=9), Column("WIDE", keep=1), Column("B", keep=2), Column("C", keep=5)]
    rows = [("a" * 10, "w" * 30, "b" * 5, "c" * 5)]
    fitted = fit(cols, rows, 30)
    assert fitted.hidden == ["WIDE"] and fitted.lines[1] == "aaaaaaaaaa  bbbbb  ccccc"


def test_cut_counts_terminal_cells() -> None:
    assert cut("漢字漢字漢字", 7) == "漢字漢…"
    assert cut("/var/log/app/deep/app.log", 12, left=True) == "…eep/app.log"
    assert cut("short", 10) == "short"


@pytest.mark.parametrize(("since", "text"), [(dt.timedelta(days=1), "1d"), (dt.timedelta(hours=1), "1h"),
                                             (dt.timedelta(minutes=90), "90m"), (dt.timedelta(seconds=45), "45s"),
                                             (dt.timedelta(hours=36), "36h")])
def test_since_is_said_as_it_was_written(since: dt.timedelta, text: str) -> None:
    assert age(since) == text


def trace_view() -> TraceView:
    header = TraceHeader(
        trace_id=TID, started=T0, name="chat_request", operation_type="chat",
        user_id="8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f", session_id="conv-1", status="failed",
        ended_at=T0 + dt.timedelta(seconds=2), duration_ms=2000, error_type="TimeoutError",
        error_message="the model did not answer within 2 s", total_input_tokens=1200, total_output_tokens=230,
        total_cost_usd=Decimal("0.000420"),
    )
    spans = (SpanView("00f067aa0ba902b7", None, T0, "retrieve", "retrieval", "completed", 300),
             SpanView("00f067aa0ba902b8", None, T0 + dt.timedelta(milliseconds=400), "llm", "llm", "completed", 1500,
                      model="gpt-4o-mini", input_tokens=1200, output_tokens=230, cost_usd=Decimal("0.000420")))
    chats = (
        ChatView(T0 + dt.timedelta(milliseconds=5), "user", "How do I rotate the API keys?", None, "conv-1", 1,
                 None, None, None),
        ChatView(T0 + dt.timedelta(milliseconds=1950), "assistant", "Here is what I found in the knowledge base "
                 "about rotating keys, with a long answer that cannot fit on one line of eighty columns.",
                 "gpt-4o-mini", "conv-1", 2, 1200, 230, None),
    )
    docs = (DocEventView(T0 + dt.timedelta(milliseconds=50), "embed", "failed", str(TID[:8] + "-1c2b-4a5d-9e6f-"
                                                                                     "0a1b2c3d4e5f"), 12, None,
                         "embedding service returned 503"),)
    return TraceView(TID, header, spans, chat_messages=chats, document_events=docs)


def test_the_waterfall_at_80_columns_wraps_nothing() -> None:
    lines = [t.plain for t in render(trace_view(), 80)]
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert lines[0].startswith(f"trace {TID}  chat_request")
    assert any("TimeoutError: the model did not answer within 2 s" in line for line in lines[:3])
    assert any(line.startswith("started 2026-05-01 12:00:00.000 UTC") for line in lines)


def test_chat_lines_are_aligned_columns() -> None:
    lines = [t.plain for t in render(trace_view(), 100)]
    chat = lines[lines.index("chat messages (2)") + 1:][:2]
    assert [line.index("user") for line in chat[:1]] == [line.index("assistant") for line in chat[1:]]
    assert chat[0].index("'How") == chat[1].index("'Here")  # the text starts at one column for both
    assert chat[1].endswith("…") and len(chat[1]) <= 100
