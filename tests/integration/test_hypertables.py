"""Hypertable behaviour on a real TimescaleDB (issue 9, Build 6).

Compressed chunks, policies run while the sink writes, batches that span many chunks, and a
backfill older than the retention window. Policies run at once with ``CALL run_job(id)``; the
test databases have them unscheduled (see ``pause_policies`` in the root conftest).

These need TimescaleDB: they run in CI's TimescaleDB pass (``HYPERTAIL_TEST_DSN`` from
``../shared/timescaledb/start``) and wherever the test server has the extension.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest

from agent.errors import RetryableError
from agent.sink.writer import Writer
from tests.factories import FileWriter, span_row, trace_row

pytestmark = pytest.mark.timescaledb

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
OLD = NOW - dt.timedelta(days=30)  # past the default 7-day compress_after, inside the 90-day retention
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"



@pytest.fixture
async def ts(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    if not await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
        await conn.close()
        pytest.skip("the test server has no TimescaleDB (CI's second pass runs these)")
    yield conn
    await conn.close()



async def compress_all(conn: asyncpg.Connection, table: str) -> int:
    """Compress every chunk of ``table``; returns how many chunks are compressed afterwards."""
    await conn.execute(f"SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('{table}') c")
    return int(await conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = $1 AND is_compressed",
        table.split(".")[1],
    ))


async def run_policy(conn: asyncpg.Connection, table: str, proc: str) -> None:
    job = await conn.fetchval(
        "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_schema = 'observability' "
        "AND hypertable_name = $1 AND proc_name = $2", table, proc,
    )
    assert job is not None, (table, proc)
    await conn.execute(f"CALL run_job({int(job)})")


async def span_seqs(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT (metadata->>'seq')::int AS seq FROM observability.spans ORDER BY 1")
    return [r["seq"] for r in rows]


async def dead_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM hypertail.dead_letters"))


async def test_a_late_span_lands_in_a_compressed_chunk(writer: Writer, ts: asyncpg.Connection) -> None:
    fw = FileWriter()
    await writer.commit([fw.item(span_row(i, timestamp=OLD + dt.timedelta(seconds=i))) for i in range(5)])
    assert await compress_all(ts, "observability.spans") == 1
    stats = await writer.commit([fw.item(span_row(5, timestamp=OLD + dt.timedelta(seconds=2, milliseconds=500)))])
    assert stats.dead_letters == []
    assert await span_seqs(ts) == [0, 1, 2, 3, 4, 5]


async def test_a_trace_end_merges_into_a_start_in_a_compressed_chunk(writer: Writer, ts: asyncpg.Connection) -> None:
    fw = FileWriter()
    await writer.commit([fw.item(trace_row(TRACE, status="in_progress", timestamp=OLD, operation_type="chat",
                                           meta={"a": 1}))])
    assert await compress_all(ts, "observability.traces") == 1
    await writer.commit([fw.item(trace_row(TRACE, status="completed", timestamp=OLD, duration_ms=42,
                                           meta={"b": 2}))])
    rows = await ts.fetch("SELECT status, duration_ms, operation_type, metadata FROM observability.traces")
    assert [tuple(r) for r in rows] == [("completed", 42, "chat", '{"a": 1, "b": 2}')]
    assert await dead_count(ts) == 0


async def test_a_duplicate_span_into_a_compressed_chunk_is_one_row(writer: Writer, ts: asyncpg.Connection) -> None:
    fw = FileWriter()
    await writer.commit([fw.item(span_row(i, timestamp=OLD + dt.timedelta(seconds=i))) for i in range(3)])
    assert await compress_all(ts, "observability.spans") == 1
    stats = await writer.commit([fw.item(span_row(1, timestamp=OLD + dt.timedelta(seconds=1)))])
    assert stats.dead_letters == []
    assert await span_seqs(ts) == [0, 1, 2]
    assert await dead_count(ts) == 0


async def test_one_batch_over_40_days_makes_40_chunks(writer: Writer, ts: asyncpg.Connection) -> None:
    fw = FileWriter()
    start = (NOW - dt.timedelta(days=45)).replace(hour=12, minute=0, second=0)
    items = [fw.item(span_row(d * 10 + k, timestamp=start + dt.timedelta(days=d, minutes=k)))
             for d in range(40) for k in range(10)]
    stats = await writer.commit(items)
    assert (stats.rows, stats.dead_letters, stats.transactions) == ({"spans": 400}, [], 1)
    assert await span_seqs(ts) == list(range(400))
    chunks = await ts.fetchval("SELECT count(*) FROM show_chunks('observability.spans')")
    assert chunks == 40


async def test_policies_run_while_the_sink_writes(dsn: str, writer: Writer, ts: asyncpg.Connection) -> None:
    """Compression and retention jobs, run again and again while batches commit over 20 days.

    Retention is set to 10 days: what it drops is whole chunks older than that, by design; every
    row newer than 11 days (past any chunk boundary) must be there exactly once.
    """
    await ts.execute("SELECT remove_retention_policy('observability.spans')")
    await ts.execute("SELECT add_retention_policy('observability.spans', INTERVAL '10 days')")
    await ts.execute("SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
                     "WHERE hypertable_name = 'spans'")
    fw = FileWriter()
    n_batches, per_batch = 40, 50
    stop = asyncio.Event()

    async def ingest() -> None:
        seq = 0
        for b in range(n_batches):
            day = NOW - dt.timedelta(days=20) + dt.timedelta(hours=12 * b)
            items = [fw.item(span_row(seq + k, timestamp=day + dt.timedelta(seconds=k))) for k in range(per_batch)]
            while True:  # as Sink.commit does: a deadlock with a job rolls the batch back, retry it
                try:
                    stats = await writer.commit(items)
                    break
                except RetryableError:
                    await asyncio.sleep(0.01)
            assert stats.dead_letters == []
            seq += per_batch
        stop.set()

    async def policies() -> int:
        jobs_conn = await asyncpg.connect(dsn)
        runs = 0
        try:
            while not stop.is_set():
                await run_policy(jobs_conn, "spans", "policy_compression")
                await run_policy(jobs_conn, "spans", "policy_retention")
                runs += 1
                await asyncio.sleep(0.05)
        finally:
            await jobs_conn.close()
        return runs

    _, runs = await asyncio.gather(ingest(), policies())
    assert runs >= 2
    await run_policy(ts, "spans", "policy_retention")
    rows = await ts.fetch("SELECT (metadata->>'seq')::int AS seq, \"timestamp\" FROM observability.spans")
    got = sorted(r["seq"] for r in rows)
    assert len(got) == len(set(got))  # nothing twice
    expected_recent = {
        b * per_batch + k for b in range(n_batches) for k in range(per_batch)
        if NOW - dt.timedelta(days=20) + dt.timedelta(hours=12 * b) >= NOW - dt.timedelta(days=9)
    }
    assert expected_recent <= set(got)  # nothing lost that retention keeps
    assert all(r["timestamp"] >= NOW - dt.timedelta(days=12) for r in rows)  # retention really ran
    assert await dead_count(ts) == 0


async def test_a_backfill_older_than_retention_is_ingested_then_expires(
    writer: Writer, ts: asyncpg.Connection
) -> None:
    """Decided behaviour (docs/operations.md): old lines become rows like any other; the next
    retention run drops their chunks, exactly as it drops rows that aged out. No dead letter."""
    fw = FileWriter()
    ancient = NOW - dt.timedelta(days=200)
    stats = await writer.commit([fw.item(span_row(i, timestamp=ancient + dt.timedelta(seconds=i))) for i in range(3)]
                                + [fw.item(span_row(3, timestamp=NOW - dt.timedelta(hours=1)))])
    assert (stats.rows, stats.dead_letters) == ({"spans": 4}, [])
    assert await span_seqs(ts) == [0, 1, 2, 3]
    await run_policy(ts, "spans", "policy_retention")
    assert await span_seqs(ts) == [3]
    assert await dead_count(ts) == 0
