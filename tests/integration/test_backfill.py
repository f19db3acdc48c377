"""Writing into compressed ranges and through statement timeouts (issue 20), on a real server.

The agent-level acceptance is in tests/e2e/test_backfill.py; here the sink's parts: the ingest role
with only the printed grants decompresses through the definer function (and without EXECUTE keeps
to the key check, saying why), schema.sql converts an existing data-time policy in place, the
checkpoints keep the data time, and a batch too slow for the statement timeout is committed in
parts with correct checkpoints (on any server: the split is not TimescaleDB's business).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from agent.config import SchemaSettings
from agent.sink.backfill import Backfill
from agent.sink.progress import commit_in_time
from agent.sink.schema import apply_schema, grants_for
from agent.sink.session import Session
from agent.sink.writer import Writer
from tests.factories import FileWriter, span_row
from tests.integration.support import writer_on

OLD = (dt.datetime.now(dt.UTC) - dt.timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)
ROLE = "ht_backfill_role"


@pytest.fixture
async def ts(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    if not await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
        await conn.close()
        pytest.skip("the test server has no TimescaleDB (CI's TimescaleDB pass runs these)")
    yield conn
    await conn.close()


@pytest.fixture
async def role_conn(ts: asyncpg.Connection, dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as a role with exactly `hypertail migrate --print-grants`."""
    await ts.execute(f"DROP ROLE IF EXISTS {ROLE}")
    await ts.execute(f"CREATE ROLE {ROLE} LOGIN")
    await ts.execute(grants_for(ROLE))
    conn = await asyncpg.connect(dsn, user=ROLE)
    yield conn
    await conn.close()
    await ts.execute(f"DROP OWNED BY {ROLE}")
    await ts.execute(f"DROP ROLE {ROLE}")


def old_spans(fw: FileWriter, seqs: range) -> list[Any]:
    return [fw.item(span_row(s, timestamp=OLD + dt.timedelta(seconds=10 * s))) for s in seqs]


async def compressed(conn: asyncpg.Connection) -> list[bool]:
    rows = await conn.fetch("SELECT is_compressed FROM timescaledb_information.chunks "
                            "WHERE hypertable_name = 'spans' ORDER BY range_start")
    return [r["is_compressed"] for r in rows]


async def span_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM observability.spans"))


def events(backfill: Backfill) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    backfill.on_event = lambda name, fields: seen.append((name, fields))
    return seen


@pytest.mark.timescaledb
async def test_the_ingest_role_decompresses_through_the_definer_function(
        ts: asyncpg.Connection, role_conn: asyncpg.Connection) -> None:
    fw = FileWriter()
    writer = await writer_on(role_conn, "backfill-test")
    await writer.commit(old_spans(fw, range(0, 1000)))
    await ts.execute("SELECT compress_chunk(c) FROM show_chunks('observability.spans') c")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # TimescaleDB's own: owners only
        await role_conn.execute("SELECT decompress_chunk(c) FROM show_chunks('observability.spans') c")
    backfill = Backfill(30_000)
    backfill.enabled = True
    seen = events(backfill)
    stats = await commit_in_time(writer, backfill, old_spans(fw, range(1000, 1300)))
    assert stats.rows == {"spans": 300} and stats.dead_letters == []
    assert [name for name, _ in seen] == ["backfill.decompressed", "backfill.started"]
    assert seen[0][1]["rows"] == 1000 and seen[0][1]["table"] == "spans"
    assert await compressed(ts) == [False] and await span_count(ts) == 1300
    assert backfill.stats.rows == {"spans": 300} and backfill.stats.chunks_decompressed == 1
    # The definer functions touch observability's chunks and policies only.
    assert await role_conn.fetchval("SELECT hypertail.decompress_chunk('hypertail.checkpoints')") is False
    assert await role_conn.fetchval("SELECT hypertail.postpone_compression(ARRAY['checkpoints'], '1 hour')") == 0


@pytest.mark.timescaledb
async def test_without_execute_the_agent_says_so_and_keeps_to_the_key_check(
        ts: asyncpg.Connection, role_conn: asyncpg.Connection) -> None:
    await ts.execute(f"REVOKE EXECUTE ON FUNCTION hypertail.decompress_chunk(regclass) FROM {ROLE}")
    fw = FileWriter()
    writer = await writer_on(role_conn, "backfill-test")
    await writer.commit(old_spans(fw, range(0, 500)))
    await ts.execute("SELECT compress_chunk(c) FROM show_chunks('observability.spans') c")
    backfill = Backfill(30_000)
    backfill.enabled = True
    seen = events(backfill)
    for part in (range(500, 700), range(700, 900)):
        stats = await commit_in_time(writer, backfill, old_spans(fw, part))
        assert stats.rows == {"spans": 200}
    assert [name for name, _ in seen][:2] == ["backfill.refused", "backfill.started"]
    assert [name for name, _ in seen].count("backfill.refused") == 1  # said once
    assert "42501" in seen[0][1]["error"] and "--print-grants" in seen[0][1]["fix"]
    assert await compressed(ts) == [True] and await span_count(ts) == 900


@pytest.mark.timescaledb
async def test_schema_converts_a_data_time_policy_in_place(ts: asyncpg.Connection) -> None:
    jobs = ("SELECT hypertable_name AS t, job_id, config, scheduled FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_compression' AND hypertable_schema = 'observability'")
    before = {r["t"]: r for r in await ts.fetch(jobs)}
    for r in before.values():  # as every schema before version 3 left them (and paused, as the tests keep them)
        await ts.execute("SELECT alter_job($1, config => $2::jsonb)", r["job_id"],
                         f'{{"hypertable_id": {_ht(r["config"])}, "compress_after": "7 days"}}')
    await apply_schema(ts, SchemaSettings(compress_after_days=10))
    after = {r["t"]: r for r in await ts.fetch(jobs)}
    assert {t: r["job_id"] for t, r in after.items()} == {t: r["job_id"] for t, r in before.items()}
    assert not any(r["scheduled"] for r in after.values())
    import orjson

    created = {t: orjson.loads(r["config"]) for t, r in after.items()}
    assert all("compress_after" not in c for c in created.values())
    assert created["spans"]["compress_created_before"] == "11 days"  # 10 days plus the 1-day chunk
    assert created["chat_messages"]["compress_created_before"] == "17 days"  # plus the 7-day chunk


def _ht(config: str) -> int:
    import orjson

    return int(orjson.loads(config)["hypertable_id"])


async def test_checkpoints_keep_the_data_time_of_the_last_row(dsn: str, conn: asyncpg.Connection) -> None:
    from agent.model import DeadLetter

    writer_conn = await asyncpg.connect(dsn)
    try:
        writer, fw = await writer_on(writer_conn, "backfill-test"), FileWriter()
        await writer.commit([*old_spans(fw, range(5)), fw.item(DeadLetter(reason="invalid JSON", field=None))])
        assert await conn.fetchval("SELECT data_time FROM hypertail.checkpoints") == OLD + dt.timedelta(seconds=40)
        await writer.commit([fw.item(DeadLetter(reason="invalid JSON", field=None))])  # no row: kept
        assert await conn.fetchval("SELECT data_time FROM hypertail.checkpoints") == OLD + dt.timedelta(seconds=40)
    finally:
        await writer_conn.close()


async def test_a_batch_too_slow_for_the_statement_timeout_commits_in_parts(dsn: str, conn: asyncpg.Connection) -> None:
    """Each span insert sleeps 3 ms: 200 rows cannot finish in 150 ms, 25 can. The batch is split
    in halves until the parts fit; every row once, the checkpoint at the end."""
    await conn.execute("""
        CREATE FUNCTION slow() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(0.003); RETURN NEW; END $$
        LANGUAGE plpgsql;
        CREATE TRIGGER slow BEFORE INSERT ON observability.spans FOR EACH ROW EXECUTE FUNCTION slow();
    """)
    writer_conn = await asyncpg.connect(dsn)
    try:
        writer = Writer(await Session.on(writer_conn), "backfill-test", statement_timeout_ms=150)
        fw = FileWriter()
        backfill = Backfill(150)
        seen = events(backfill)
        items = old_spans(fw, range(200))
        stats = await commit_in_time(writer, backfill, items)
    finally:
        await writer_conn.close()
    assert stats.rows == {"spans": 200} and stats.dead_letters == []
    assert await span_count(conn) == 200
    assert await conn.fetchval("SELECT count(DISTINCT span_id) FROM observability.spans") == 200
    assert await conn.fetchval("SELECT committed_offset FROM hypertail.checkpoints") == items[-1].line.end
    splits = [f["lines"] for name, f in seen if name == "batch.timeout_split"]
    assert splits[0] == 200 and backfill.stats.timeout_splits == len(splits) >= 3
