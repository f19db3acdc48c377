"""An OpenTelemetry app end to end (issue 23): the real SDK writes nested spans with GenAI
attributes (and the prompts, so a batch line is several MiB), failed spans with exceptions and log
records inside spans through its OTLP JSON file exporters, and ``agent.emit`` writes into the same
traces; the agent reads the files of an ``otlp_json`` source beside a structlog one, is kill -9'd
after its third commit and started again. Then every span is one row, every root one trace row,
every log record one logs row with its trace id, the LLM columns are filled, failed spans are
``failed``, the chat of each conversation is in chat_messages, nothing is a dead letter, and
``hypertail trace ID`` draws the trace, the emit span under the OTel span that was current."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.harness import Agent

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 300
OTEL_SOURCE = """
[[sources]]
name = "otel"
paths = ["{logs}/**/*.jsonl"]
format = "otlp_json"
"""


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


def ht(agent: Agent, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args, "--config", str(agent.config_path)],
                          capture_output=True, text=True, cwd=ROOT, check=True, env={"COLUMNS": "160", "PATH": ""})


async def test_an_opentelemetry_app_exactly_once(agent: Agent, logs: Path, tmp_path: Path,
                                                 db: asyncpg.Connection) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    subprocess.run([sys.executable, "-m", "tests.e2e.apps.otel_app", "--out", str(staging),
                    "--requests", str(REQUESTS)], check=True, cwd=ROOT, timeout=120)
    oracle: dict[str, list[dict[str, Any]]] = json.loads((staging / "oracle.json").read_text())
    sizes = [len(line) for line in (staging / "spans.jsonl").read_bytes().splitlines()]
    assert max(sizes) > 2 << 20  # an exporter's batch with prompts: beyond the former 1 MiB line limit
    for name in ("spans.jsonl", "logs.jsonl", "app.log"):
        shutil.move(staging / name, logs / name)

    agent.extra_toml = OTEL_SOURCE.format(logs=logs)
    agent.env = {"HYPERTAIL_TEST_KILL_AFTER_COMMITS": "3", "HYPERTAIL_BATCH__MAX_ROWS": "2"}
    agent.start()
    assert agent.wait(120) == -9, agent.output()
    committed = await db.fetchval("SELECT coalesce(sum(committed_offset), 0) FROM hypertail.checkpoints")
    written = sum(f.stat().st_size for f in logs.iterdir())
    assert 0 < committed < written  # killed mid-way: some lines in, the rest read after the restart
    agent.env = {"HYPERTAIL_BATCH__MAX_ROWS": "2"}
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(180) == 0, agent.output()

    assert await db.fetch("SELECT reason FROM hypertail.dead_letters") == []
    want = {s["span_id"]: s for s in oracle["spans"]}
    rows = {r["span_id"]: r for r in await db.fetch(
        "SELECT span_id, trace_id, parent_span_id, name, span_type, status, model, input_tokens, output_tokens, "
        "temperature, error_type, error_message, metadata::text AS metadata FROM observability.spans")}
    emit_ids = {e["emit_span_id"] for e in oracle["emit_spans"]}
    assert set(rows) == set(want) | emit_ids  # every span one row (and the emit spans beside them)
    assert len(rows) == len(want) + len(emit_ids)
    for span_id, s in want.items():
        r = rows[span_id]
        assert (r["trace_id"], r["parent_span_id"], r["name"]) == (s["trace_id"], s["parent"], s["name"])
        assert r["status"] == ("failed" if s["failed"] else "completed"), r
        assert json.loads(r["metadata"])["resource"]["service.name"] == "rag-api"
    chats = [r for r in rows.values() if r["name"] == "chat gpt-4o"]
    assert len(chats) == REQUESTS
    assert all((r["span_type"], r["model"], r["temperature"]) == ("llm", "gpt-4o-2024-08-06", 0.2)
               and r["input_tokens"] >= 1000 and r["output_tokens"] >= 100 for r in chats)
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert len(failed) == REQUESTS // 5
    assert all(r["error_type"] == "TimeoutError" and "timed out" in r["error_message"] for r in failed)

    roots = {s["trace_id"] for s in oracle["spans"] if s["parent"] is None}
    traces = await db.fetch("SELECT trace_id, name, status FROM observability.traces")
    assert sorted(t["trace_id"] for t in traces) == sorted(roots)  # every root one trace row
    assert {(t["name"], t["status"]) for t in traces} == {("POST /ask", "completed")}

    logged = await db.fetch("SELECT trace_id, span_id, level, source FROM observability.logs WHERE source = 'otel'")
    assert sorted((r["trace_id"], r["span_id"]) for r in logged) == sorted(
        (x["trace_id"], x["span_id"]) for x in oracle["logs"])  # every log record one row, with its ids
    assert sum(r["level"] == "error" for r in logged) == REQUESTS // 5
    emitted = await db.fetch("SELECT trace_id, span_id FROM observability.logs WHERE source = 'app'")
    assert {(r["trace_id"], r["span_id"]) for r in emitted} == {(e["trace_id"], e["emit_span_id"])
                                                                for e in oracle["emit_spans"]}
    for e in oracle["emit_spans"]:  # agent.emit inside an OTel span: the same trace, under that span
        r = rows[e["emit_span_id"]]
        assert (r["trace_id"], r["parent_span_id"], r["span_type"]) == (e["trace_id"], e["span_id"], "rerank")

    chat_rows = await db.fetch("SELECT role, content, conversation_id, trace_id FROM observability.chat_messages")
    assert len(chat_rows) == 2 * REQUESTS  # each call's question and answer, the system prompt once per call not
    assert {r["conversation_id"] for r in chat_rows} == {f"conv-{k}" for k in range(10)}
    assert {r["content"] for r in chat_rows if r["role"] == "assistant"} == {f"answer {i}." for i in range(REQUESTS)}

    one = oracle["spans"][-1]["trace_id"]  # the last request's: it failed (REQUESTS % 5 == 0)
    shown = json.loads(ht(agent, "trace", one, "--json").stdout)
    assert shown["trace"]["name"] == "POST /ask"
    assert sorted(s["name"] for s in shown["spans"]) == sorted(
        ["POST /ask", "retrieval kb", "chat gpt-4o", "rerank", "execute_tool search"])
    assert shown["totals"]["failed_spans"] == 1 and len(shown["logs"]) == 4
    drawn = ht(agent, "trace", one).stdout
    for name in ("POST /ask", "chat gpt-4o", "rerank", "execute_tool search", "tool failed"):
        assert name in drawn, drawn
