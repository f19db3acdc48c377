"""A backlog older than compress_after (issue 20, acceptance), with the real agent on TimescaleDB.

* A day 20 days old, partly ingested, its chunks compressed by the shipped policy (``run_job``),
  then the rest of the day arrives: exact, duplicates one row, trace ends merged into their
  compressed starts, no dead letter; the agent decompressed the chunks once, postponed the policy,
  said so in its log and /metrics, and the policy compresses the chunks again.
* A statement timeout a batch cannot finish in: the agent splits the batch and ends exact.
* The shipped policy leaves alone a chunk of old data that the agent created minutes ago, and
  compresses it once it is as old as a chunk made when its range began.

A chunk "compressed long ago" needs an old creation time: the tests set it in TimescaleDB's
catalog (the test server's user is a superuser), as 20 days of running would have.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from tests.e2e.harness import Agent, assert_exact, dead_letters, fetchval_sync, seqs, span_line, wait_until

pytestmark = pytest.mark.timescaledb

DAY = (dt.datetime.now(dt.UTC) - dt.timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    if not await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
        await conn.close()
        pytest.skip("the test server has no TimescaleDB (CI's TimescaleDB pass runs these)")
    yield conn
    await conn.close()


def old_span(seq: int, day: dt.datetime = DAY, step_s: float = 10.0) -> bytes:
    t = (day + dt.timedelta(seconds=seq * step_s)).isoformat()
    return span_line(seq, timestamp=t, started_at=t)


def trace(i: int, *, end: bool) -> bytes:
    t = DAY + dt.timedelta(minutes=3 * i)
    rec: dict[str, Any] = {"record_type": "trace", "trace_id": f"{i + 1:032x}", "name": "chat",
                           "started_at": t.isoformat(), "timestamp": t.isoformat()}
    if end:
        rec.update(status="completed", duration_ms=1000 + i, metadata={"end": i},
                   timestamp=(t + dt.timedelta(seconds=1)).isoformat())
    else:
        rec.update(status="in_progress", operation_type="chat", metadata={"start": i})
    return orjson.dumps(rec) + b"\n"


async def age_chunks(db: asyncpg.Connection, table: str, days: int) -> None:
    """Make ``table``'s chunks look created ``days`` ago (TimescaleDB's catalog; superuser)."""
    await db.execute(
        "UPDATE _timescaledb_catalog.chunk SET creation_time = now() - make_interval(days => $2) "
        "WHERE hypertable_id = (SELECT id FROM _timescaledb_catalog.hypertable "
        "WHERE schema_name = 'observability' AND table_name = $1)", table, days)


async def compression_job(db: asyncpg.Connection, table: str) -> int:
    job = await db.fetchval("SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_schema = "
                            "'observability' AND hypertable_name = $1 AND proc_name = 'policy_compression'", table)
    assert job is not None, table
    return int(job)


async def run_policy(db: asyncpg.Connection, table: str) -> None:
    await db.execute(f"CALL run_job({await compression_job(db, table)})")


async def compressed(db: asyncpg.Connection, table: str) -> list[bool]:
    rows = await db.fetch("SELECT is_compressed FROM timescaledb_information.chunks WHERE hypertable_name = $1 "
                          "ORDER BY range_start", table)
    return [r["is_compressed"] for r in rows]


def metric(body: str, name: str) -> float:
    found = re.findall(rf"^{re.escape(name)} ([0-9.e+]+)$", body, re.M)
    assert found, f"{name} not in /metrics"
    return float(found[0])


async def test_a_backlog_into_compressed_chunks_is_exact_and_compressed_again(
        agent: Agent, logs: Path, db: asyncpg.Connection, dsn: str) -> None:
    f = logs / "app.log"
    f.write_bytes(b"".join(old_span(s) for s in range(0, 4000, 2)) + b"".join(trace(i, end=False) for i in range(200)))
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(120) == 0, agent.output()
    for table in ("spans", "traces"):
        await age_chunks(db, table, 20)
        await run_policy(db, table)
        assert await compressed(db, table) == [True], table
        # Due now (the test databases keep the policies paused, so only the agent can move this).
        await db.execute("SELECT alter_job($1, next_start => now())", await compression_job(db, table))

    with f.open("ab") as fh:  # the rest of the day, 200 spans written twice, and the traces' ends
        fh.write(b"".join(old_span(s) for s in range(1, 4000, 2)) + b"".join(old_span(s) for s in range(0, 400, 2))
                 + b"".join(trace(i, end=True) for i in range(200)))
    agent.start()
    wait_until(lambda: fetchval_sync(dsn, "SELECT count(*) FROM observability.traces WHERE status = 'completed'")
               == 200 and fetchval_sync(dsn, "SELECT count(*) FROM observability.spans") >= 4000,
               timeout=120, what="the backlog")
    status, body = agent.get("/metrics")
    assert status == 200 and isinstance(body, str)
    assert agent.term() == 0
    out = agent.output()

    assert_exact(await seqs(db), 4000)
    assert await dead_letters(db) == []
    rows = await db.fetch("SELECT trace_id, status, duration_ms, operation_type, metadata FROM observability.traces")
    assert len(rows) == 200
    assert all(r["status"] == "completed" and r["operation_type"] == "chat" for r in rows)
    assert all(orjson.loads(r["metadata"]) == {"start": r["duration_ms"] - 1000, "end": r["duration_ms"] - 1000}
               for r in rows)
    # Decompressed once by the agent (not row by row), the policy postponed while it filled them.
    assert await compressed(db, "spans") == [False] and await compressed(db, "traces") == [False]
    assert out.count('"event":"backfill.decompressed"') == 2, out[-3000:]
    assert '"event":"backfill.started"' in out and '"event":"backfill.postponed"' in out
    later = await db.fetchval("SELECT min(next_start) - now() FROM timescaledb_information.jobs WHERE "
                              "proc_name = 'policy_compression' AND hypertable_name IN ('spans', 'traces')")
    assert later > dt.timedelta(minutes=50)
    assert metric(body, 'hypertail_backfill_rows_total{table="spans"}') >= 2000
    assert metric(body, "hypertail_backfill_chunks_decompressed_total") == 2
    # The policy compresses them again, and nothing changed in the rows.
    for table in ("spans", "traces"):
        await run_policy(db, table)
        assert await compressed(db, table) == [True], table
    assert_exact(await seqs(db), 4000)
    assert await db.fetchval("SELECT count(*) FROM observability.traces WHERE status = 'completed'") == 200


async def test_a_write_that_cannot_finish_in_the_statement_timeout_progresses(
        agent: Agent, logs: Path, db: asyncpg.Connection, dsn: str) -> None:
    """20,000 spans compressed one trace a batch, no compression policy left (so nothing may be
    decompressed): each late row's key check scans every batch, a few ms a row, and a batch of
    hundreds of rows cannot finish in 100 ms. Retried whole, it never would."""
    f = logs / "app.log"
    f.write_bytes(b"".join(old_span(s, step_s=2) for s in range(0, 40000, 2)))  # 22 hours: one chunk
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(180) == 0, agent.output()
    await db.execute("SELECT compress_chunk(c) FROM show_chunks('observability.spans') c")
    await db.execute("SELECT remove_compression_policy('observability.spans')")
    assert await compressed(db, "spans") == [True]
    with f.open("ab") as fh:
        fh.write(b"".join(old_span(s, step_s=2) for s in range(1, 1200, 2)))
    agent.env = {"HYPERTAIL_DATABASE__STATEMENT_TIMEOUT_MS": "100"}
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(120) == 0, agent.output()[-3000:]
    got = await seqs(db)
    assert sum(got.values()) == 20600 and max(got.values()) == 1
    assert set(got) == set(range(0, 40000, 2)) | set(range(1, 1200, 2))
    assert await dead_letters(db) == []
    assert '"event":"batch.timeout_split"' in agent.output()


async def test_the_policy_leaves_alone_a_chunk_the_agent_just_created_for_old_data(
        agent: Agent, logs: Path, db: asyncpg.Connection) -> None:
    ten_days = (dt.datetime.now(dt.UTC) - dt.timedelta(days=10)).replace(hour=0, minute=0, second=0, microsecond=0)
    (logs / "app.log").write_bytes(b"".join(old_span(s, day=ten_days) for s in range(300)))
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(120) == 0, agent.output()
    await run_policy(db, "spans")
    assert await compressed(db, "spans") == [False]  # data 10 days old, but the chunk is minutes old
    await age_chunks(db, "spans", 9)  # made when its range began: 8 days (compress_after + a chunk) ago
    await run_policy(db, "spans")
    assert await compressed(db, "spans") == [True]
    assert_exact(await seqs(db), 300)
