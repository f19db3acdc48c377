"""emit -> file -> parse: what the app side writes becomes the rows the agent expects."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent import contract as c
from agent import emit
from agent.model import Row
from agent.parse import parse

USER = uuid.UUID("8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f")  # what the app passes; rows hold the text
KB = uuid.UUID("1d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e50")
DOC = uuid.UUID("2d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e51")


def parsed(path: Path) -> list[Row]:
    out = []
    for line in path.read_bytes().splitlines():
        result = parse(line, fallback_id=lambda: str(uuid.UUID(int=1)))
        assert isinstance(result, Row), (result, line)
        assert result.warnings == (), (result, line)
        out.append(result)
    return out


def as_dict(row: Row) -> dict[str, Any]:
    values = dict(zip(c.COLUMNS[row.table], row.values, strict=True))
    for name in ("metadata", "sources", "citations"):
        if values.get(name) is not None:
            values[name] = orjson.loads(values[name])
    return values


def test_trace_start_and_end_with_nested_spans_and_llm_calls(log_path: Path) -> None:
    before = datetime.now(UTC)
    with emit.trace("answer question", operation_type="rag_query", user_id=USER, session_id="s-1",
                    kb_id=KB, tenant="acme") as t:
        with emit.span("retrieve", "retrieval", document_id=DOC) as retrieve:
            with emit.span("embed query", "embedding", input_tokens=7, cost_usd=0.000001):
                pass
            retrieve.set(result_count=4, index="main")
        llm_id = emit.llm_call("gpt-4o", input_tokens=1200, output_tokens=300, cost_usd=0.0125, temperature=0.2,
                               input_preview="q" * 800, output_preview="a" * 20, duration_ms=40, attempt=1)
        t.set(answer_length=20)
    after = datetime.now(UTC)
    start, embed, retrieve_row, llm, end = (as_dict(r) for r in parsed(log_path))

    assert start["trace_id"] == end["trace_id"] == t.trace_id and start["timestamp"] == end["timestamp"]
    assert before <= start["timestamp"] <= after and start["status"] == "in_progress"
    assert (start["name"], start["operation_type"], start["user_id"], start["session_id"], start["kb_id"]) == \
           ("answer question", "rag_query", str(USER), "s-1", str(KB))
    assert start["metadata"] == {"tenant": "acme"} and start["ended_at"] is None
    assert end["status"] == "completed" and end["ended_at"] >= end["timestamp"]
    assert abs(end["duration_ms"] - (end["ended_at"] - end["timestamp"]) / timedelta(milliseconds=1)) <= 1
    assert (end["total_input_tokens"], end["total_output_tokens"]) == (1207, 300)
    assert end["total_cost_usd"] == Decimal("0.012501")
    assert end["metadata"] == {"tenant": "acme", "answer_length": 20}

    assert embed["parent_span_id"] == retrieve_row["span_id"] and retrieve_row["parent_span_id"] is None
    assert {embed["trace_id"], retrieve_row["trace_id"], llm["trace_id"]} == {t.trace_id}
    assert retrieve_row["result_count"] == 4 and retrieve_row["document_id"] == str(DOC)
    assert retrieve_row["metadata"] == {"index": "main"} and retrieve_row["span_type"] == "retrieval"
    assert embed["cost_usd"] == Decimal("0.000001") and embed["input_tokens"] == 7
    assert llm["span_id"] == llm_id and llm["span_type"] == "llm" and llm["model"] == "gpt-4o"
    assert (llm["input_tokens"], llm["output_tokens"], llm["temperature"]) == (1200, 300, 0.2)
    assert llm["cost_usd"] == Decimal("0.012500") and llm["input_preview"] == "q" * 500
    assert llm["duration_ms"] >= 40 and llm["metadata"] == {"attempt": 1}


def test_trace_rows_merge_on_their_key(log_path: Path) -> None:
    with emit.trace("t"):
        pass
    start, end = parsed(log_path)
    assert start.merge and end.merge and start.values[:2] == end.values[:2]


def test_failed_trace_and_long_running_span(log_path: Path) -> None:
    with pytest.raises(ValueError, match="x" * 10), emit.trace("fails"), \
            emit.span("slow", "tool", write_start=True):
        raise ValueError("x" * 5000)
    _, span_start, span_end, end = (as_dict(r) for r in parsed(log_path))
    assert span_start["status"] == "in_progress" and span_end["status"] == "failed"
    assert span_start["span_id"] == span_end["span_id"] and span_start["timestamp"] == span_end["timestamp"]
    assert end["status"] == "failed" and end["error_type"] == "ValueError"
    assert end["error_message"] == "x" * c.ERROR_MESSAGE_MAX
    assert parsed(log_path)[1].merge and not parsed(log_path)[2].merge


def test_chat_messages_with_sources_and_citations(log_path: Path) -> None:
    sources = [{"document_id": str(DOC), "chunk": 3, "score": 0.87, "text": "a\x00b"}]
    with emit.trace("chat") as t, emit.span("generate", "llm") as s:
        emit.chat_message("user", "What is hypertail?", conversation_id="conv-1", turn_number=1,
                          session_id="s-1", user_id=USER, kb_id=KB)
        emit.chat_message("assistant", "A sidecar.", conversation_id="conv-1", turn_number=2, model="gpt-4o",
                          input_tokens=10, output_tokens=3, latency_ms=850, sources=sources, citations=[0],
                          feedback_type="thumbs_up", feedback_comment="nice", id=USER, channel="web")
    rows = parsed(log_path)
    user, assistant = (as_dict(r) for r in rows[1:3])
    assert user["role"] == "user" and user["content"] == "What is hypertail?" and user["sources"] is None
    ids = (user["trace_id"], user["span_id"], user["user_id"], user["kb_id"])
    assert ids == (t.trace_id, s.span_id, str(USER), str(KB))
    assert user["id"] == str(uuid.UUID(int=1))  # no app id: the caller's deterministic one
    assert assistant["id"] == str(USER) and assistant["metadata"] == {"channel": "web"}
    assert assistant["sources"] == [{**sources[0], "text": "a\ufffdb"}] and assistant["citations"] == [0]
    assert (assistant["latency_ms"], assistant["feedback_type"], assistant["feedback_comment"]) == \
           (850, "thumbs_up", "nice")
    assert rows[1].table == "chat_messages" and not rows[1].merge


@pytest.mark.parametrize("event_type", ["upload", "parse", "chunk", "embed", "index", "delete"])
def test_document_events(log_path: Path, event_type: str) -> None:
    with emit.trace("ingest") as t:
        emit.document_event(event_type, "started", document_id=DOC, kb_id=KB)
        emit.document_event(event_type, document_id=DOC, kb_id=KB, duration_ms=120, chunk_count=12,
                            token_count=3400, page_count=5, file_size_bytes=2**33, source="s3")
        emit.document_event(event_type, "failed", document_id=DOC, error_message="e" * 3000)
    started, done, failed = (as_dict(r) for r in parsed(log_path)[1:4])
    assert started["event_type"] == done["event_type"] == event_type and started["status"] == "started"
    assert (done["duration_ms"], done["chunk_count"], done["token_count"], done["page_count"]) == (120, 12, 3400, 5)
    assert done["file_size_bytes"] == 2**33 and done["metadata"] == {"source": "s3"}
    assert done["document_id"] == str(DOC) and done["kb_id"] == str(KB) and done["trace_id"] == t.trace_id
    assert failed["status"] == "failed" and len(failed["error_message"]) == c.ERROR_MESSAGE_MAX
    assert len({started["id"], done["id"], failed["id"]}) == 1  # same fallback in this test: the caller's


async def test_many_tasks_and_threads_write_whole_lines(log_path: Path) -> None:
    tasks, per_task, threads, per_thread = 50, 20, 8, 150

    async def task_work(i: int) -> None:
        async with emit.trace(f"task {i}"):
            for j in range(per_task):
                async with emit.span(f"step {j}", "custom", input_preview="p" * 300, chunk_count=j):
                    await asyncio.sleep(0)

    def thread_work(i: int) -> None:
        with emit.trace(f"thread {i}"):
            for j in range(per_thread):
                with emit.span(f"step {j}", "custom", output_preview="o" * 400, chunk_count=j):
                    emit.document_event("embed", chunk_count=j)

    workers = [threading.Thread(target=thread_work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    await asyncio.gather(*(task_work(i) for i in range(tasks)))
    for w in workers:
        w.join()

    rows = parsed(log_path)
    spans = [r for r in rows if r.table == "spans"]
    assert len(rows) == 2 * (tasks + threads) + tasks * per_task + 2 * threads * per_thread
    assert len(spans) == tasks * per_task + threads * per_thread
    assert len({r.values[0] for r in spans}) == len(spans)  # unique span ids
    traces = {r.values[0] for r in rows if r.table == "traces"}
    assert len(traces) == tasks + threads
    assert {r.values[2] for r in spans} == traces  # every span in its own worker's trace
