"""Ordinary log lines end to end (issue 13): an app writes traces, spans and log lines inside and
outside traces; after the agent drains, every log line is one row of observability.logs with the
ids that were active when it was written, exactly once across a kill -9; ``skip`` stores none;
and ``hypertail trace ID --json`` gives back what the app wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from tests.e2e.harness import Agent, assert_exact

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(dsn)
    yield c
    await c.close()


def run_app(out: Path, ids: Path, traces: int, via: str = "emit", start: int = 0) -> dict[int, list[str | None]]:
    subprocess.run([sys.executable, "-m", "tests.e2e.apps.logging_app", "--out", str(out), "--ids", str(ids),
                    "--traces", str(traces), "--via", via, "--start", str(start)], check=True, cwd=ROOT)
    return {int(k): v for k, v in json.loads(ids.read_text()).items()}


async def log_rows(db: asyncpg.Connection) -> dict[int, list[asyncpg.Record]]:
    out: dict[int, list[asyncpg.Record]] = {}
    for r in await db.fetch("SELECT (metadata->>'seq')::int AS seq, * FROM observability.logs"):
        out.setdefault(r["seq"], []).append(r)
    return out


def drain(agent: Agent) -> None:
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(120) == 0, agent.output()


@pytest.mark.parametrize("via", ["emit", "structlog"])
async def test_every_log_line_is_one_row_with_its_ids(agent: Agent, logs: Path, db: asyncpg.Connection,
                                                      tmp_path: Path, via: str) -> None:
    ids = run_app(logs / "app.log", tmp_path / "ids.json", traces=40, via=via)
    drain(agent)
    rows = await log_rows(db)
    assert_exact(Counter({s: len(r) for s, r in rows.items()}), len(ids))
    for seq, (trace_id, span_id) in ids.items():
        r = rows[seq][0]
        assert (r["trace_id"], r["span_id"]) == (trace_id, span_id), seq
        assert r["source"] == "app" and r["level"] in ("debug", "info", "warning", "error")
    inside = sum(1 for t, _ in ids.values() if t)
    assert 0 < inside < len(ids)  # lines both inside and outside traces
    assert await db.fetchval("SELECT count(*) FROM hypertail.dead_letters") == 0
    assert await db.fetchval("SELECT count(*) FROM observability.spans") == 40 * 3


async def test_exactly_once_across_kill9(agent: Agent, logs: Path, db: asyncpg.Connection, tmp_path: Path) -> None:
    ids = run_app(logs / "app.log", tmp_path / "ids.json", traces=300)
    agent.env = {"HYPERTAIL_TEST_KILL_AFTER_COMMITS": "2", "HYPERTAIL_BATCH__MAX_ROWS": "97"}
    agent.start()
    assert agent.wait(60) == -9, agent.output()
    first = await log_rows(db)
    assert 0 < len(first) < len(ids)
    agent.env = {"HYPERTAIL_BATCH__MAX_ROWS": "97"}
    drain(agent)
    rows = await log_rows(db)
    assert_exact(Counter({s: len(r) for s, r in rows.items()}), len(ids))
    assert all(rows[s][0]["trace_id"] == t for s, (t, _) in ids.items())


async def test_skip_stores_none_and_min_level_filters(agent: Agent, logs: Path, db: asyncpg.Connection,
                                                      tmp_path: Path) -> None:
    run_app(logs / "app.log", tmp_path / "ids.json", traces=10)
    agent.source_toml = 'app_logs = "skip"'
    drain(agent)
    assert await db.fetchval("SELECT count(*) FROM observability.logs") == 0
    assert await db.fetchval("SELECT count(*) FROM observability.spans") == 30
    more = run_app(logs / "more.log", tmp_path / "ids2.json", traces=10, start=10_000)
    agent.source_toml = 'app_logs = "store"\napp_logs_min_level = "warning"'
    drain(agent)
    rows = await log_rows(db)
    assert rows and all(s >= 10_000 for s in rows) and set(rows) <= set(more)  # only the new file's lines
    assert {r[0]["level"] for r in rows.values()} == {"warning", "error"}
    assert len(rows) == 20  # per trace one warning and one error


async def test_trace_json_equals_what_the_app_wrote(agent: Agent, logs: Path, db: asyncpg.Connection,
                                                    tmp_path: Path) -> None:
    ids = run_app(logs / "app.log", tmp_path / "ids.json", traces=5)
    drain(agent)
    lines = [orjson.loads(x) for x in (logs / "app.log").read_bytes().splitlines()]
    trace_id = next(t for t, _ in ids.values() if t)
    out = subprocess.run([sys.executable, "-m", "agent.cli", "trace", trace_id, "--config", str(agent.config_path),
                          "--json"], capture_output=True, text=True, cwd=ROOT, check=True)
    got = json.loads(out.stdout)
    wrote_spans = {x["span_id"]: x for x in lines if x.get("record_type") == "span" and x["trace_id"] == trace_id}
    assert {s["span_id"] for s in got["spans"]} == set(wrote_spans)
    for s in got["spans"]:
        w = wrote_spans[s["span_id"]]
        for key in ("parent_span_id", "name", "span_type", "status", "duration_ms", "model", "input_tokens",
                    "output_tokens", "cost_usd", "started_at"):
            assert s[key] == w.get(key), (key, s, w)
    wrote_trace = [x for x in lines if x.get("record_type") == "trace" and x["trace_id"] == trace_id][-1]
    for key in ("name", "operation_type", "status", "duration_ms", "total_input_tokens", "total_output_tokens",
                "total_cost_usd", "started_at", "ended_at"):
        assert got["trace"][key] == wrote_trace.get(key), key
    wrote_logs = [x for x in lines if "record_type" not in x and x.get("trace_id") == trace_id]
    assert [_log(x) for x in wrote_logs] == [_log_row(x) for x in got["logs"]]


def _log(x: dict[str, Any]) -> tuple[Any, ...]:
    meta = {k: v for k, v in x.items() if k not in ("event", "level", "timestamp", "trace_id", "span_id")}
    return x["event"], x["level"], x.get("span_id"), x["timestamp"].replace("Z", "+00:00"), meta


def _log_row(x: dict[str, Any]) -> tuple[Any, ...]:
    return x["event"], x["level"], x["span_id"], x["timestamp"], x["metadata"]
