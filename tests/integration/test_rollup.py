"""The percentile rollup against a real PostgreSQL.

Every aggregate row is checked twice, independently of the rollup's own SQL: against a plain
per-group ``percentile_cont`` query over the same spans, and against a pure-Python computation
from the values the test inserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from agent.ops.log import EVENTS
from agent.ops.rollup import (
    HOUR,
    METRIC_TYPES,
    MINUTE,
    ROLLUP_LOCK_KEY,
    Granularity,
    RollupResult,
    rollup_loop,
    run_rollup,
    truncate,
    window,
)

NOW = datetime(2026, 11, 1, 12, 30, 30, tzinfo=UTC)
KB1 = uuid.UUID("11111111-1111-4111-8111-111111111111")
KB2 = uuid.UUID("22222222-2222-4222-8222-222222222222")
TRACES = {"a" * 32: ("chat", KB1), "b" * 32: ("ingest", KB2), "c" * 32: ("chat", None)}
ORPHAN_TRACE = "d" * 32  # spans whose trace row never arrived: no operation_type, no kb_id
COLUMNS = {
    "span.duration_ms": "duration_ms",
    "span.input_tokens": "input_tokens",
    "span.output_tokens": "output_tokens",
    "span.cost_usd": "cost_usd",
}
# Minutes with closed-bucket spans, one in the open minute (12:30) and the open hour (12:00),
# and one (10:05) older than the 2-hour 1m lookback but inside the 2-day 1h lookback.
MINUTES = ["12:27", "12:28", "12:29", "12:00", "11:15", "11:40", "10:05", "12:30"]


@dataclass(frozen=True)
class Span:
    span_id: str
    timestamp: datetime
    trace_id: str
    span_type: str
    model: str | None
    duration_ms: int | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: Decimal | None

    def value(self, metric: str) -> float | None:
        v = getattr(self, COLUMNS[metric])
        return None if v is None else float(v)

    def dims(self) -> dict[str, str]:
        op, kb = TRACES.get(self.trace_id, (None, None))
        found = {"span_type": self.span_type, "model": self.model, "operation_type": op, "kb_id": kb}
        return {k: str(v) for k, v in found.items() if v is not None}


def make_spans(seed: int = 6) -> list[Span]:
    """A few spans per minute of MINUTES: LLM spans with tokens and cost, retrievals without."""
    rnd = random.Random(seed)
    out: list[Span] = []
    for minute in MINUTES:
        hh, mm = map(int, minute.split(":"))
        for _ in range(rnd.randint(4, 9)):
            out.append(_random_span(rnd, len(out), NOW.replace(hour=hh, minute=mm, second=rnd.randint(0, 59))))
    return out


def _random_span(rnd: random.Random, seq: int, ts: datetime) -> Span:
    trace = rnd.choice([*TRACES, ORPHAN_TRACE])
    kind = rnd.choice(["llm", "llm", "retrieval", "custom"])
    llm = kind == "llm"
    return Span(
        span_id=f"{seq + 1:016x}",
        timestamp=ts,
        trace_id=trace,
        span_type=kind,
        model=rnd.choice(["gpt-4o", "claude-sonnet"]) if llm else None,
        duration_ms=None if kind == "custom" and rnd.random() < 0.5 else rnd.randint(1, 3000),
        input_tokens=rnd.randint(10, 5000) if llm else None,
        output_tokens=rnd.randint(1, 800) if llm else None,
        cost_usd=Decimal(rnd.randint(1, 999_999)) / Decimal(1_000_000) if llm else None,
    )


async def insert_traces(conn: asyncpg.Connection) -> None:
    await conn.executemany(
        'INSERT INTO observability.traces (trace_id, "timestamp", name, operation_type, kb_id) '
        "VALUES ($1, $2, 'op', $3, $4)",
        [(tid, NOW - timedelta(hours=3), op, kb) for tid, (op, kb) in TRACES.items()],
    )


async def insert_spans(conn: asyncpg.Connection, spans: list[Span]) -> None:
    await conn.executemany(
        'INSERT INTO observability.spans (span_id, "timestamp", trace_id, span_type, model, duration_ms, '
        "input_tokens, output_tokens, cost_usd, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'completed')",
        [
            (s.span_id, s.timestamp, s.trace_id, s.span_type, s.model, s.duration_ms, s.input_tokens,
             s.output_tokens, s.cost_usd)
            for s in spans
        ],
    )


@pytest.fixture
async def spans(conn: asyncpg.Connection) -> list[Span]:
    data = make_spans()
    await insert_traces(conn)
    await insert_spans(conn, data)
    return data


# --- references ------------------------------------------------------------------------------

Key = tuple[datetime, str, str]  # bucket, metric_type, dimensions as canonical JSON


def key(bucket: datetime, metric: str, dims: dict[str, str]) -> Key:
    return bucket, metric, json.dumps(dims, sort_keys=True)


def percentile_cont(xs: list[float], q: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


def expected_groups(data: list[Span], g: Granularity, lookback: timedelta) -> dict[Key, list[float]]:
    """The values of every (bucket, metric, dimension set) the rollup must write, in Python."""
    lo, hi = window(NOW, g, lookback)
    groups: dict[Key, list[float]] = defaultdict(list)
    for s in data:
        if not lo <= s.timestamp < hi:
            continue
        bucket = truncate(s.timestamp, g.width)
        for metric in METRIC_TYPES:
            v = s.value(metric)
            if v is None:
                continue
            groups[key(bucket, metric, {"granularity": g.label})].append(v)
            for dim, val in s.dims().items():
                groups[key(bucket, metric, {"granularity": g.label, dim: val})].append(v)
    return groups


def python_stats(xs: list[float]) -> dict[str, float]:
    return {
        "count": len(xs), "sum": sum(xs), "min": min(xs), "max": max(xs), "avg": sum(xs) / len(xs),
        "p50": percentile_cont(xs, 0.5), "p95": percentile_cont(xs, 0.95), "p99": percentile_cont(xs, 0.99),
    }


_DIM_SQL = {"span_type": "s.span_type", "model": "s.model", "operation_type": "t.operation_type",
            "kb_id": "t.kb_id::text"}


async def postgres_stats(conn: asyncpg.Connection, k: Key, width: timedelta) -> dict[str, float]:
    """The same group computed by a plain query: one percentile_cont per fraction, no rollup SQL."""
    bucket, metric, dims_json = k
    dims = {d: v for d, v in json.loads(dims_json).items() if d != "granularity"}
    where = "".join(f" AND {_DIM_SQL[d]} = ${i}" for i, d in enumerate(dims, start=3))
    sql = f"""
        SELECT count(v) AS count, sum(v) AS sum, min(v) AS min, max(v) AS max, avg(v) AS avg,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY v) AS p95,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY v) AS p99
        FROM (SELECT s.{COLUMNS[metric]}::float8 AS v
              FROM observability.spans s LEFT JOIN observability.traces t ON t.trace_id = s.trace_id
              WHERE s."timestamp" >= $1 AND s."timestamp" < $2 {where}) x
        WHERE v IS NOT NULL"""
    row = await conn.fetchrow(sql, bucket, bucket + width, *dims.values())
    return dict(row)


async def stored(conn: asyncpg.Connection, granularity: str | None = None) -> dict[Key, dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, bucket, metric_type, dimensions, count, sum, min, max, avg, p50, p95, p99, updated_at "
        "FROM observability.metrics_aggregates WHERE $1::text IS NULL OR dimensions->>'granularity' = $1",
        granularity,
    )
    out = {key(r["bucket"], r["metric_type"], json.loads(r["dimensions"])): dict(r) for r in rows}
    assert len(out) == len(rows), "duplicate aggregate rows"
    return out


def assert_stats(actual: dict[str, Any], expected: dict[str, float], where: object) -> None:
    assert actual["count"] == expected["count"], where
    for name in ("sum", "min", "max", "avg", "p50", "p95", "p99"):
        assert actual[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), (where, name)


# --- tests -----------------------------------------------------------------------------------


def test_window_covers_closed_buckets_only() -> None:
    assert window(NOW, MINUTE, timedelta(hours=2)) == (NOW.replace(hour=10, second=0), NOW.replace(second=0))
    assert window(NOW, HOUR, timedelta(days=2)) == (
        datetime(2026, 10, 30, 12, tzinfo=UTC), datetime(2026, 11, 1, 12, tzinfo=UTC)
    )
    assert truncate(datetime(2026, 11, 1, 17, 59, 59, tzinfo=UTC), HOUR.width) == datetime(2026, 11, 1, 17, tzinfo=UTC)


@pytest.mark.parametrize("g", [MINUTE, HOUR], ids=["1m", "1h"])
async def test_values_equal_percentile_cont(conn: asyncpg.Connection, spans: list[Span], g: Granularity) -> None:
    result = await run_rollup(conn, now=NOW)
    assert result.ran
    lookback = timedelta(hours=2) if g is MINUTE else timedelta(days=2)
    expected = expected_groups(spans, g, lookback)
    rows = await stored(conn, g.label)
    assert set(rows) == set(expected)
    for k, xs in expected.items():
        assert_stats(rows[k], python_stats(xs), k)
        assert_stats(rows[k], await postgres_stats(conn, k, g.width), k)
    dims_seen = {tuple(sorted(json.loads(k[2]))) for k in rows}
    assert dims_seen == {
        ("granularity",), ("granularity", "span_type"), ("granularity", "model"),
        ("granularity", "operation_type"), ("granularity", "kb_id"),
    }


async def test_result_counts_buckets_and_rows(conn: asyncpg.Connection, spans: list[Span]) -> None:
    result = await run_rollup(conn, now=NOW)
    one_m = expected_groups(spans, MINUTE, timedelta(hours=2))
    one_h = expected_groups(spans, HOUR, timedelta(days=2))
    assert result.rows == len(one_m) + len(one_h) == len(await stored(conn))
    assert result.buckets == len({k[0] for k in one_m}) + len({k[0] for k in one_h})
    assert result.changed == result.rows


async def test_open_bucket_and_old_spans_are_not_aggregated(conn: asyncpg.Connection, spans: list[Span]) -> None:
    await run_rollup(conn, now=NOW)
    buckets_1m = {k[0] for k in await stored(conn, "1m")}
    buckets_1h = {k[0] for k in await stored(conn, "1h")}
    assert NOW.replace(second=0) not in buckets_1m  # 12:30 is still open
    assert NOW.replace(minute=0, second=0) not in buckets_1h  # so is the hour 12:00
    assert NOW.replace(hour=12, minute=0, second=0) in buckets_1m  # the minute 12:00 is closed
    assert NOW.replace(hour=10, minute=5, second=0) not in buckets_1m  # older than the 1m lookback
    assert NOW.replace(hour=10, minute=0, second=0) in buckets_1h


async def test_running_twice_changes_nothing(conn: asyncpg.Connection, spans: list[Span]) -> None:
    first = await run_rollup(conn, now=NOW)
    before = await stored(conn)
    second = await run_rollup(conn, now=NOW)
    assert second == RollupResult(ran=True, buckets=first.buckets, rows=first.rows, changed=0)
    assert await stored(conn) == before  # same ids, values and updated_at: nothing rewritten


async def test_late_span_updates_its_closed_bucket(conn: asyncpg.Connection, spans: list[Span]) -> None:
    await run_rollup(conn, now=NOW)
    bucket = NOW.replace(hour=11, minute=40, second=0)  # closed in both widths
    overall = key(bucket, "span.duration_ms", {"granularity": "1m"})
    before = (await stored(conn))[overall]
    late = Span("f" * 16, bucket + timedelta(seconds=30), "b" * 32, "llm", "late-model", 999_999, 1, 2, Decimal("0.5"))
    await insert_spans(conn, [late])
    result = await run_rollup(conn, now=NOW + timedelta(minutes=1))
    after = await stored(conn)
    assert after[overall]["count"] == before["count"] + 1
    assert after[overall]["max"] == 999_999
    model_key = key(bucket, "span.duration_ms", {"granularity": "1m", "model": "late-model"})
    assert after[model_key]["count"] == 1
    hour_key = key(bucket.replace(minute=0), "span.cost_usd", {"granularity": "1h", "model": "late-model"})
    assert after[hour_key]["sum"] == 0.5
    assert result.changed > 0


async def test_group_without_data_is_emptied(conn: asyncpg.Connection, spans: list[Span]) -> None:
    await run_rollup(conn, now=NOW)
    bucket = NOW.replace(hour=12, minute=27, second=0)
    gone = next(s for s in spans if s.model is not None and truncate(s.timestamp, MINUTE.width) == bucket)
    k = key(bucket, "span.input_tokens", {"granularity": "1m", "model": gone.model or ""})
    await conn.execute(
        "UPDATE observability.spans SET model = 'renamed' WHERE model = $1 AND \"timestamp\" >= $2 "
        "AND \"timestamp\" < $3", gone.model, bucket, bucket + MINUTE.width,
    )
    await run_rollup(conn, now=NOW)
    row = (await stored(conn))[k]
    assert row["count"] == 0
    assert (row["sum"], row["p50"], row["p99"]) == (None, None, None)
    renamed = key(bucket, "span.input_tokens", {"granularity": "1m", "model": "renamed"})
    assert (await stored(conn))[renamed]["count"] > 0


async def test_lock_held_elsewhere_skips_the_run(
    conn: asyncpg.Connection, conn2: asyncpg.Connection, spans: list[Span]
) -> None:
    await conn2.execute("SELECT pg_advisory_lock($1::bigint)", ROLLUP_LOCK_KEY)
    try:
        result = await run_rollup(conn, now=NOW)
    finally:
        await conn2.execute("SELECT pg_advisory_unlock($1::bigint)", ROLLUP_LOCK_KEY)
    assert result == RollupResult(ran=False, buckets=0, rows=0, reason="locked")
    assert await stored(conn) == {}
    assert (await run_rollup(conn, now=NOW)).ran  # the lock is gone again


async def test_concurrent_runs_never_duplicate(
    conn: asyncpg.Connection, conn2: asyncpg.Connection, spans: list[Span]
) -> None:
    results = await asyncio.gather(run_rollup(conn, now=NOW), run_rollup(conn2, now=NOW))
    assert any(r.ran for r in results)
    assert all(r.ran or r.reason == "locked" for r in results)
    expected = len(expected_groups(spans, MINUTE, timedelta(hours=2))) + len(
        expected_groups(spans, HOUR, timedelta(days=2))
    )
    assert len(await stored(conn)) == expected  # stored() also fails on duplicate keys


async def test_a_running_rollup_makes_the_other_agent_skip(
    conn: asyncpg.Connection, conn2: asyncpg.Connection, dsn: str, spans: list[Span]
) -> None:
    """Agent 1 holds the lock while blocked mid-run; agent 2 must skip, not wait or duplicate."""
    blocker = await asyncpg.connect(dsn)
    try:
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute("LOCK TABLE observability.metrics_aggregates IN EXCLUSIVE MODE")
        first = asyncio.create_task(run_rollup(conn, now=NOW))
        await _wait_for_advisory_lock(blocker)
        second = await run_rollup(conn2, now=NOW)
        assert second == RollupResult(ran=False, buckets=0, rows=0, reason="locked")
        assert not first.done()
        await blocking.rollback()
        assert (await asyncio.wait_for(first, timeout=30)).ran
    finally:
        await blocker.close()
    assert len(await stored(conn)) > 0


async def _wait_for_advisory_lock(conn: asyncpg.Connection) -> None:
    for _ in range(500):
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND ((classid::bigint << 32) | objid::bigint) = $1::bigint",
            ROLLUP_LOCK_KEY,
        )
        if held:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first rollup never took the advisory lock")


async def test_min_interval_skips_a_rollup_that_just_ran(conn: asyncpg.Connection, spans: list[Span]) -> None:
    assert (await run_rollup(conn, now=NOW, min_interval=timedelta(minutes=1))).ran
    soon = await run_rollup(conn, now=NOW + timedelta(seconds=20), min_interval=timedelta(minutes=1))
    assert soon == RollupResult(ran=False, buckets=0, rows=0, reason="recent")
    later = await run_rollup(conn, now=NOW + timedelta(seconds=61), min_interval=timedelta(minutes=1))
    assert later.ran
    row = await conn.fetchrow(
        "SELECT last_synced_at, sync_status FROM observability.provider_sync_status "
        "WHERE provider_name = 'hypertail' AND entity_type = 'rollup'"
    )
    assert (row["last_synced_at"], row["sync_status"]) == (NOW + timedelta(seconds=61), "synced")


async def test_database_clock_is_the_default(conn: asyncpg.Connection) -> None:
    recent = datetime.now(UTC) - timedelta(minutes=3)
    await insert_spans(conn, [Span("e" * 16, recent, ORPHAN_TRACE, "llm", "m", 5, 1, 1, None)])
    result = await run_rollup(conn)
    assert result.ran and result.rows > 0


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.events.append((level, event, kw))


async def test_loop_logs_done_and_survives_failures(conn: asyncpg.Connection, spans: list[Span]) -> None:
    stop = asyncio.Event()
    log = RecordingLog()
    calls = 0

    @contextlib.asynccontextmanager
    async def get_conn() -> AsyncIterator[asyncpg.Connection]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("connection refused")
        if calls == 3:
            stop.set()
        yield conn

    await asyncio.wait_for(rollup_loop(get_conn, 0.01, stop, log, min_interval=timedelta(0)), timeout=30)
    names = [(level, event) for level, event, _ in log.events]
    assert names[0] == ("warning", "rollup.failed")
    assert ("info", "rollup.done") in names
    assert "OSError: connection refused" in log.events[0][2]["error"]
    assert {event for _, event, _ in log.events} <= set(EVENTS)


async def test_loop_stops_when_asked(conn: asyncpg.Connection) -> None:
    stop = asyncio.Event()

    @contextlib.asynccontextmanager
    async def get_conn() -> AsyncIterator[asyncpg.Connection]:
        yield conn

    task = asyncio.create_task(rollup_loop(get_conn, 3600, stop, RecordingLog()))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, timeout=5)


async def test_runs_with_the_least_privilege_ingest_role(conn: asyncpg.Connection, spans: list[Span]) -> None:
    """The grants of `hypertail migrate --print-grants` are enough: no DELETE, no DDL needed."""
    from agent.sink.schema import grants_for

    role = f"ht_rollup_{uuid.uuid4().hex[:8]}"
    await conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        await conn.execute(grants_for(role))
        await conn.execute(f'SET ROLE "{role}"')
        first = await run_rollup(conn, now=NOW, min_interval=timedelta(seconds=30))
        await conn.execute("UPDATE observability.spans SET model = NULL WHERE model = 'gpt-4o'")
        second = await run_rollup(conn, now=NOW + timedelta(minutes=1), min_interval=timedelta(seconds=30))
        assert first.ran and second.ran and second.changed > 0
    finally:
        await conn.execute("RESET ROLE")
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')


async def test_a_last_run_in_the_future_does_not_block(conn: asyncpg.Connection, spans: list[Span]) -> None:
    await run_rollup(conn, now=NOW + timedelta(days=1))  # e.g. a clock that was stepped back since
    assert (await run_rollup(conn, now=NOW, min_interval=timedelta(minutes=1))).ran


async def test_requests_are_rolled_up_per_operation_type(conn: asyncpg.Connection) -> None:
    """trace.duration_ms: one value per trace (a request), overall and per operation_type (issue 13's
    dashboard counts requests from it), equal to percentile_cont over the traces; re-running changes nothing."""
    rng = random.Random(13)
    durations: dict[str, list[float]] = defaultdict(list)
    minute = truncate(NOW, MINUTE.width) - timedelta(minutes=5)
    for i in range(60):
        op = ("chat", "rag", None)[i % 3]
        ms = rng.randint(1, 5000)
        await conn.execute(
            "INSERT INTO observability.traces (trace_id, \"timestamp\", name, operation_type, status, duration_ms) "
            "VALUES ($1, $2, 'req', $3, 'completed', $4)", f"{i + 1:032x}", minute + timedelta(seconds=i % 60), op, ms)
        durations["*"].append(ms)
        if op:
            durations[op].append(ms)
    await conn.execute(
        "INSERT INTO observability.traces (trace_id, \"timestamp\", name, status) "
        "VALUES ($1, $2, 'open', 'in_progress')",
        "f" * 32, minute)  # no duration yet: not a value
    first = await run_rollup(conn, now=NOW)
    rows = await conn.fetch(
        "SELECT dimensions->>'operation_type' AS op, count, p95 FROM observability.metrics_aggregates "
        "WHERE metric_type = 'trace.duration_ms' AND bucket = $1 AND dimensions->>'granularity' = '1m'", minute)
    got = {r["op"] or "*": (r["count"], r["p95"]) for r in rows}
    assert set(got) == {"*", "chat", "rag"}
    for op, xs in durations.items():
        assert got[op][0] == len(xs) and got[op][1] == pytest.approx(percentile_cont(xs, 0.95)), op
    second = await run_rollup(conn, now=NOW)
    assert second.changed == 0 and second.rows == first.rows


async def test_log_lines_are_counted_per_level(conn: asyncpg.Connection) -> None:
    minute = truncate(NOW, MINUTE.width) - timedelta(minutes=3)
    levels = ["info"] * 5 + ["error"] * 2 + [None]
    for i, level in enumerate(levels):
        await conn.execute(
            "INSERT INTO observability.logs (id, \"timestamp\", level, event) VALUES ($1, $2, $3, 'e')",
            uuid.uuid4(), minute + timedelta(seconds=i), level)
    await run_rollup(conn, now=NOW)
    rows = await conn.fetch(
        "SELECT dimensions->>'level' AS level, count, sum FROM observability.metrics_aggregates "
        "WHERE metric_type = 'log.lines' AND bucket = $1 AND dimensions->>'granularity' = '1m'", minute)
    assert {r["level"]: (r["count"], r["sum"]) for r in rows} == {None: (8, 8.0), "info": (5, 5.0), "error": (2, 2.0)}
