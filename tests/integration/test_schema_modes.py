"""schema.timescaledb (auto/require/off) and re-applying over compressed hypertables (issue 9).

The TimescaleDB cases need the extension on the test server (CI's TimescaleDB pass); the plain
cases run on any server, and on the embedded default (no TimescaleDB files) they check `auto`'s
fallback and `require`'s refusal.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import asyncpg
import pytest

from agent.config import SchemaSettings
from agent.sink.layout import hypertable_layout
from agent.sink.schema import TimescaleUnavailable, apply_schema, probe_timescaledb
from tests.conftest import pause_policies
from tests.integration import catalog

FIRST_RELEASE = (Path(__file__).parent / "fixtures" / "schema_first_release.sql").read_text()
OLD = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)


async def _has_timescaledb(conn: asyncpg.Connection) -> bool:
    probe = await probe_timescaledb(conn)
    return probe.installed is not None or (probe.available is not None and probe.preloaded)


@pytest.fixture
async def fresh(empty_dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(empty_dsn)
    yield conn
    await conn.close()


async def _need_timescaledb(conn: asyncpg.Connection) -> None:
    if not await _has_timescaledb(conn):
        pytest.skip("the test server has no TimescaleDB (CI's second pass runs this)")


async def _fill_and_compress(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO observability.spans (span_id, \"timestamp\", trace_id, name) "
        "SELECT to_hex(g), $1::timestamptz + g * interval '1 minute', 't', 'n' FROM generate_series(1, 50) g", OLD)
    await conn.execute(
        "INSERT INTO observability.metrics_aggregates (bucket, metric_type) "
        "SELECT $1::timestamptz + g * interval '1 hour', 'm' || g FROM generate_series(1, 20) g", OLD)
    for table in ("spans", "metrics_aggregates"):
        await conn.execute(f"SELECT compress_chunk(c) FROM show_chunks('observability.{table}') c")


@pytest.mark.timescaledb
async def test_applies_three_times_over_compressed_chunks(fresh: asyncpg.Connection) -> None:
    await _need_timescaledb(fresh)
    await apply_schema(fresh, SchemaSettings())
    await pause_policies(fresh)
    await _fill_and_compress(fresh)
    before = await catalog.snapshot(fresh)
    for _ in range(3):
        mode = await apply_schema(fresh, SchemaSettings())
        assert mode.timescaledb
    assert await catalog.snapshot(fresh) == before
    layout = {h.table: h for h in await hypertable_layout(fresh)}
    assert layout["spans"].compressed_chunks >= 1 and layout["spans"].chunk_interval == "1 day"
    assert layout["chat_messages"].retention == "365 days" and layout["spans"].compress_after == "7 days"
    assert layout["spans"].bytes_before_compression and layout["spans"].bytes_after_compression is not None


@pytest.mark.timescaledb
async def test_upgrades_a_first_release_schema_with_compressed_chunks(fresh: asyncpg.Connection) -> None:
    """The first release's schema.sql, data compressed, and columns an older version lacked."""
    await _need_timescaledb(fresh)
    await fresh.execute("SET client_min_messages = warning")
    await fresh.execute(FIRST_RELEASE)
    await pause_policies(fresh)
    await _fill_and_compress(fresh)
    expected = await catalog.snapshot(fresh)
    await fresh.execute("ALTER TABLE observability.metrics_aggregates DROP COLUMN updated_at")  # DEFAULT now()
    await fresh.execute("ALTER TABLE observability.spans DROP COLUMN metadata")  # NOT NULL DEFAULT '{}'
    await fresh.execute("ALTER TABLE observability.spans DROP COLUMN result_count")  # nullable
    mode = await apply_schema(fresh, SchemaSettings())
    assert mode.timescaledb
    after = await catalog.snapshot(fresh)
    new = ("last", "rate", "buckets")
    added = {name: after["columns"]["observability.metrics_aggregates"].pop(name) for name in new}
    assert added == {"last": ("double precision", False), "rate": ("double precision", False),
                     "buckets": ("jsonb", False)}  # issue 26
    for table in ("observability.spans", "observability.metrics_aggregates"):
        assert after["columns"][table] == expected["columns"][table]
    assert await fresh.fetchval("SELECT count(*) FROM observability.spans WHERE metadata = '{}'::jsonb") == 50
    assert await fresh.fetchval("SELECT count(*) FROM observability.metrics_aggregates WHERE updated_at IS NULL") == 0
    new = await fresh.fetchval(
        "INSERT INTO observability.metrics_aggregates (bucket, metric_type) VALUES (now(), 'x') RETURNING updated_at")
    assert abs((new - dt.datetime.now(dt.UTC)).total_seconds()) < 300  # the real default is back


async def test_off_gives_plain_tables_even_with_timescaledb(fresh: asyncpg.Connection) -> None:
    mode = await apply_schema(fresh, SchemaSettings(timescaledb="off"))
    assert mode.timescaledb is None and mode.fallback is None
    assert await hypertable_layout(fresh) == []
    defs = list((await catalog.indexes(fresh)).values())
    assert any("observability.spans USING brin" in d for d in defs)
    assert await fresh.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0


async def test_auto_uses_timescaledb_where_it_can_and_says_why_not_elsewhere(fresh: asyncpg.Connection) -> None:
    can = await _has_timescaledb(fresh)
    mode = await apply_schema(fresh, SchemaSettings(timescaledb="auto"))
    if can:
        assert mode.timescaledb and mode.fallback is None
    else:
        assert mode.timescaledb is None
        assert mode.fallback is not None and "TimescaleDB" in mode.fallback


async def test_require_refuses_a_server_without_timescaledb(fresh: asyncpg.Connection) -> None:
    if await _has_timescaledb(fresh):
        mode = await apply_schema(fresh, SchemaSettings(timescaledb="require"))
        assert mode.timescaledb
        return
    with pytest.raises(TimescaleUnavailable, match=r"schema\.timescaledb = require, but TimescaleDB"):
        await apply_schema(fresh, SchemaSettings(timescaledb="require"))
    assert await fresh.fetchval("SELECT to_regclass('observability.spans')") is None  # nothing half-applied


@pytest.mark.timescaledb
async def test_logs_keep_their_own_retention(fresh: asyncpg.Connection) -> None:
    """observability.logs (issue 13) is a 1-day-chunk hypertable whose retention is
    schema.logs_retention_days, not the spans' retention_days."""
    await _need_timescaledb(fresh)
    await apply_schema(fresh, SchemaSettings(logs_retention_days=3, retention_days=40))
    layout = {h.table: h for h in await hypertable_layout(fresh)}
    assert layout["logs"].retention == "3 days" and layout["logs"].chunk_interval == "1 day"
    assert layout["logs"].compress_after == "7 days" and layout["spans"].retention == "40 days"


@pytest.mark.timescaledb
async def test_metrics_and_workflows_keep_their_own_retention(fresh: asyncpg.Connection) -> None:
    """observability.metrics (1-day chunks) and workflow_transitions (7-day chunks) are dropped after
    schema.metrics_retention_days and schema.workflows_retention_days (issue 26)."""
    await _need_timescaledb(fresh)
    await apply_schema(fresh, SchemaSettings(metrics_retention_days=5, workflows_retention_days=400,
                                             compress_after_days=2))
    layout = {h.table: h for h in await hypertable_layout(fresh)}
    assert (layout["metrics"].retention, layout["metrics"].chunk_interval) == ("5 days", "1 day")
    assert (layout["workflow_transitions"].retention, layout["workflow_transitions"].chunk_interval) == (
        "400 days", "7 days")
    assert layout["metrics"].compress_after == layout["workflow_transitions"].compress_after == "2 days"
