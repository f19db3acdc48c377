"""OTLP lines through the sink (issue 23): a line's rows, in several tables, commit with its offset
exactly once; a span exported twice is one row; a line whose rows the database refuses is one dead
letter while the lines around it commit; a dead-lettered line replays into all its rows."""

from __future__ import annotations

import asyncpg
import orjson

from agent.config import DatabaseSettings, Settings
from agent.model import Block, DeadLetter, FileIdentity, FileRef, Item, Rows
from agent.ops.metrics import Metrics
from agent.runner.parsing import LineParser
from agent.sink.deadletters import DeadLetterFilter, DeadLetterStore
from agent.sink.writer import Writer
from tests.integration.support import writer_on
from tests.otlp import T0, TRACE, exception, log_record, logs_line, metrics_line, span, traces_line

OTEL = FileRef("otel", "/logs/otel.jsonl", FileIdentity(1, 7, "cd" * 32, 64))
SETTINGS = Settings.model_validate({"agent": {"id": "agent-test"},
                                    "sources": [{"name": "otel", "paths": ["/logs/*.jsonl"], "format": "otlp_json"}]})


def items_of(lines: list[bytes], start: int = 0) -> list[Item]:
    bounds = [start]
    for line in lines:
        bounds.append(bounds[-1] + len(line) + 1)
    return LineParser(SETTINGS, Metrics()).parse_block(Block(OTEL, bounds, lines))


def lines() -> list[bytes]:
    root, child = "00f067aa0ba902b7", "1111111111111111"
    return [
        traces_line(span(root, name="ask", duration_ms=50),
                    span(child, parent=root, name="chat", status=2, events=[exception("TimeoutError", "slow")],
                         attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                     "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2, "seq": 1})),
        logs_line(log_record("inside", trace_id=TRACE, span_id=child), log_record("after", severity=17)),
        metrics_line({"name": "requests", "sum": {"isMonotonic": True, "aggregationTemporality": 1, "dataPoints": [
            {"startTimeUnixNano": str(T0), "timeUnixNano": str(T0 + 10**10), "asInt": "3"}]}}),
    ]


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    out = {}
    for t in ("spans", "traces", "logs", "metrics"):
        out[t] = await conn.fetchval(f"SELECT count(*) FROM observability.{t}")
    out["dead_letters"] = await conn.fetchval("SELECT count(*) FROM hypertail.dead_letters")
    return out


async def test_an_otlp_lines_rows_commit_once_with_its_offset(writer: Writer, conn: asyncpg.Connection,
                                                               dsn: str) -> None:
    items = items_of(lines())
    stats = await writer.commit(items)
    assert stats.rows == {"spans": 2, "traces": 1, "logs": 2, "metrics": 1}
    assert await counts(conn) == {"spans": 2, "traces": 1, "logs": 2, "metrics": 1, "dead_letters": 0}
    end = items[-1].line.end
    assert await conn.fetchval("SELECT committed_offset FROM hypertail.checkpoints") == end
    chat = await conn.fetchrow("SELECT * FROM observability.spans WHERE name = 'chat'")
    assert (chat["status"], chat["error_type"], chat["model"], chat["input_tokens"], chat["span_type"]) == \
        ("failed", "TimeoutError", "gpt-4o", 10, "llm")
    assert orjson.loads(chat["metadata"])["resource"]["service.name"] == "rag-api"
    log = await conn.fetchrow("SELECT * FROM observability.logs WHERE event = 'inside'")
    assert (log["trace_id"], log["span_id"], log["source"]) == (TRACE, "1111111111111111", "otel")
    # Read again (another agent process after a crash, say): the same lines are no new rows.
    other = await writer_on(await asyncpg.connect(dsn), "agent-test")
    try:
        again = await other.commit(items_of(lines()))
    finally:
        await other.session.close(grace_s=2)
    assert again.skipped_lines == 3
    assert await counts(conn) == {"spans": 2, "traces": 1, "logs": 2, "metrics": 1, "dead_letters": 0}


async def test_a_span_exported_twice_is_one_row(writer: Writer, conn: asyncpg.Connection) -> None:
    twice = span("00f067aa0ba902b7", attributes={"n": 1})
    later = span("00f067aa0ba902b7", attributes={"n": 2, "late": True})
    first = traces_line(twice, twice)
    stats = await writer.commit(items_of([first, traces_line(later)]))
    assert stats.dead_letters == []
    assert await conn.fetchval("SELECT count(*) FROM observability.spans") == 1
    assert await conn.fetchval("SELECT count(*) FROM observability.traces") == 1
    assert orjson.loads(await conn.fetchval("SELECT metadata FROM observability.spans"))["late"] is True
    await writer.commit(items_of([traces_line(twice)], start=len(first) + len(traces_line(later)) + 2))
    assert await conn.fetchval("SELECT count(*) FROM observability.spans") == 1


REFUSE = """
CREATE OR REPLACE FUNCTION refuse() RETURNS trigger AS $$
BEGIN
    IF NEW.metadata ? 'refuse' THEN RAISE EXCEPTION 'refused span' USING ERRCODE = '22P02'; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse BEFORE INSERT ON observability.spans FOR EACH ROW EXECUTE FUNCTION refuse();
"""


async def test_a_line_whose_rows_the_database_refuses_is_one_dead_letter(writer: Writer, conn: asyncpg.Connection,
                                                                         dsn: str) -> None:
    await conn.execute(REFUSE)
    bad = traces_line(span("2222222222222222"), span("3333333333333333", attributes={"refuse": 1}))
    items = items_of([lines()[0], bad, lines()[1]])
    stats = await writer.commit(items)
    assert [(i.line.start, dl.reason) for i, dl in stats.dead_letters] == [
        (items[1].line.start, "database refused the row: 22P02 InvalidTextRepresentationError: refused span")]
    assert await counts(conn) == {"spans": 2, "traces": 1, "logs": 2, "metrics": 0, "dead_letters": 1}
    assert await conn.fetchval("SELECT count(*) FROM observability.spans WHERE span_id = '2222222222222222'") == 0
    # Fixed (the trigger dropped), a replay stores the line's rows in one transaction.
    await conn.execute("DROP TRIGGER refuse ON observability.spans")
    async with DeadLetterStore(DatabaseSettings(), dsn) as store:
        [dead] = await store.in_file_order(DeadLetterFilter())
        [item] = items_of([bad], start=dead.byte_offset)
        assert type(item.result) is Rows
        assert await store.replay(dead.id, item.result.rows)
        assert not await store.replay(dead.id, item.result.rows)  # replayed already: nothing written
    # its two roots share the trace id and start of the first line's root: still one trace row
    assert await counts(conn) == {"spans": 4, "traces": 1, "logs": 2, "metrics": 0, "dead_letters": 0}


async def test_a_line_with_a_bad_record_stores_the_rest_and_is_a_dead_letter_too(writer: Writer,
                                                                                 conn: asyncpg.Connection) -> None:
    line = traces_line(span("00f067aa0ba902b7"), span("not-an-id"))
    [item] = items_of([line])
    assert type(item.result) is Rows and isinstance(item.result.dead, DeadLetter)
    stats = await writer.commit([item])
    assert stats.rows == {"spans": 1, "traces": 1} and len(stats.dead_letters) == 1
    row = await conn.fetchrow("SELECT byte_offset, line_length, field, reason FROM hypertail.dead_letters")
    assert (row["byte_offset"], row["line_length"], row["field"]) == (0, len(line) + 1, "spanId")
    assert row["reason"].startswith("resourceSpans[0].scopeSpans[0].spans[1]: spanId: expected 16 hex digits")
