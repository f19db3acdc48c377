"""The sink against a real PostgreSQL: COPY, merges, poison split, checkpoints, single writer."""

from __future__ import annotations

import asyncio
import math

import asyncpg
import pytest

from agent import contract
from agent.batcher import build_tables
from agent.config import Settings
from agent.model import DeadLetter
from agent.sink.sink import Sink
from agent.sink.writer import Writer
from tests.factories import FileWriter, file_ref, span_row, spans, trace_row
from tests.integration.support import writer_on

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"




async def span_seqs(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT (metadata->>'seq')::int AS seq FROM observability.spans ORDER BY 1")
    return [r["seq"] for r in rows]


async def checkpoint(conn: asyncpg.Connection, key: str) -> int | None:
    return await conn.fetchval("SELECT committed_offset FROM hypertail.checkpoints WHERE file_key = $1", key)


async def test_copy_rows_and_move_checkpoint_together(writer: Writer, conn: asyncpg.Connection) -> None:
    fw = FileWriter()
    items = spans(fw, range(500))
    stats = await writer.commit(items, tails=fw.tails())
    assert stats.rows == {"spans": 500}
    assert stats.attempts == 1
    assert await span_seqs(conn) == list(range(500))
    assert await checkpoint(conn, fw.file.identity.key) == fw.offset
    row = await conn.fetchrow("SELECT * FROM hypertail.checkpoints")
    assert (row["path"], row["inode"], row["tail_hash"]) == (fw.file.path, 1, f"h{fw.offset}")


async def test_same_span_twice_gives_one_row(writer: Writer, conn: asyncpg.Connection) -> None:
    fw = FileWriter()
    await writer.commit([fw.item(span_row(1)), fw.item(span_row(1))])  # same batch
    await writer.commit([fw.item(span_row(1)), fw.item(span_row(2))])  # a later batch
    assert await span_seqs(conn) == [1, 2]


@pytest.mark.parametrize("order", ["same_batch", "separate_batches", "end_first", "end_first_same_batch"])
async def test_trace_start_and_end_merge(writer: Writer, conn: asyncpg.Connection, order: str) -> None:
    fw = FileWriter()
    start_row = trace_row(TRACE, status="in_progress", operation_type="chat", meta={"a": 1})
    end_row = trace_row(TRACE, status="completed", duration_ms=42, total_input_tokens=7, meta={"b": 2})
    if order.startswith("end_first"):  # the end record was written to the file first
        end, start = fw.item(end_row), fw.item(start_row)
    else:
        start, end = fw.item(start_row), fw.item(end_row)
    if order == "same_batch":
        await writer.commit([start, end])
    elif order == "separate_batches":
        await writer.commit([start])
        await writer.commit([end])
    elif order == "end_first":
        await writer.commit([end])
        await writer.commit([start])
    else:
        await writer.commit([end, start])
    rows = await conn.fetch("SELECT * FROM observability.traces")
    assert len(rows) == 1
    r = rows[0]
    assert (r["status"], r["duration_ms"], r["operation_type"], r["total_input_tokens"]) == (
        "completed", 42, "chat", 7,
    )
    assert await conn.fetchval("SELECT metadata FROM observability.traces") in ('{"a": 1, "b": 2}',)


async def test_span_start_then_end(writer: Writer, conn: asyncpg.Connection) -> None:
    fw = FileWriter()
    await writer.commit([fw.item(span_row(5, status="in_progress", duration_ms=None))])
    await writer.commit([fw.item(span_row(5, status="completed", duration_ms=99))])
    rows = await conn.fetch("SELECT status, duration_ms FROM observability.spans")
    assert [tuple(r) for r in rows] == [("completed", 99)]


async def test_dead_letters_name_file_offset_and_reason(writer: Writer, conn: asyncpg.Connection) -> None:
    fw = FileWriter()
    items = [fw.item(span_row(0)), fw.item(DeadLetter("trace_id: expected 32 hex", "trace_id"), b"{\x00bad")]
    await writer.commit(items)
    dl = await conn.fetchrow("SELECT * FROM hypertail.dead_letters")
    assert (dl["path"], dl["byte_offset"], dl["reason"], dl["field"], dl["raw"]) == (
        fw.file.path, items[1].line.start, "trace_id: expected 32 hex", "trace_id", b"{\x00bad",
    )
    assert await checkpoint(conn, fw.file.identity.key) == fw.offset


POISON_TRIGGER = """
CREATE OR REPLACE FUNCTION poison() RETURNS trigger AS $$
BEGIN
    IF (NEW.metadata->>'seq')::int = ANY(string_to_array(current_setting('test.bad_seqs'), ',')::int[]) THEN
        RAISE EXCEPTION 'poison row %', NEW.metadata->>'seq' USING ERRCODE = current_setting('test.errcode');
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER poison BEFORE INSERT ON observability.spans FOR EACH ROW EXECUTE FUNCTION poison();
"""


@pytest.mark.parametrize("errcode", ["22P02", "23502", "22003"])
@pytest.mark.parametrize("k", [1, 2, 17])
async def test_poison_rows_are_isolated(dsn: str, conn: asyncpg.Connection, errcode: str, k: int) -> None:
    n = 1000
    bad = sorted({(i * 7919 + 13) % n for i in range(k)})
    assert len(bad) == k
    await conn.execute(POISON_TRIGGER)
    db = await conn.fetchval("SELECT current_database()")
    await conn.execute(f"ALTER DATABASE \"{db}\" SET test.bad_seqs = '{','.join(map(str, bad))}'")
    await conn.execute(f"ALTER DATABASE \"{db}\" SET test.errcode = '{errcode}'")
    wconn = await asyncpg.connect(dsn)
    try:
        w = await writer_on(wconn)
        fw = FileWriter()
        stats = await w.commit(spans(fw, range(n)))
    finally:
        await wconn.close()
    assert await span_seqs(conn) == [s for s in range(n) if s not in bad]
    dls = await conn.fetch("SELECT byte_offset, reason FROM hypertail.dead_letters ORDER BY byte_offset")
    assert [r["byte_offset"] // 100 for r in dls] == bad
    assert all(errcode in r["reason"] and "poison row" in r["reason"] for r in dls)
    assert stats.attempts <= 1 + 2 * k * math.ceil(math.log2(n))
    assert await checkpoint(conn, fw.file.identity.key) == fw.offset


async def test_two_writers_on_one_file_never_duplicate(dsn: str, conn: asyncpg.Connection) -> None:
    """Both agents read the same file and commit overlapping batches concurrently."""
    a, b = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        wa, wb = await writer_on(a, "agent-a"), await writer_on(b, "agent-b")
        fa, fb = FileWriter(file_ref()), FileWriter(file_ref())
        items_a, items_b = spans(fa, range(3000)), spans(fb, range(3000))
        sizes_a, sizes_b = [700, 300, 1200, 800], [100, 1500, 1000, 400]

        async def run(w: Writer, items: list, sizes: list[int]) -> None:
            pos = 0
            for size in sizes:
                await w.commit(items[pos : pos + size])
                pos += size
                await asyncio.sleep(0)

        await asyncio.gather(run(wa, items_a, sizes_a), run(wb, items_b, sizes_b))
    finally:
        await a.close()
        await b.close()
    assert await span_seqs(conn) == list(range(3000))
    assert await checkpoint(conn, fa.file.identity.key) == fa.offset


async def test_prebuilt_tables_serve_only_while_no_line_is_dropped(dsn: str, conn: asyncpg.Connection) -> None:
    """The reader builds a batch's tables ahead (Batch.tables); when another agent committed the
    batch's first lines meanwhile, the writer writes only the rest, not the prebuilt tables."""
    other = await asyncpg.connect(dsn)
    try:
        fw = FileWriter()
        items = spans(fw, range(100))
        await (await writer_on(other, "agent-b")).commit(items[:40])
        mine = await writer_on(await asyncpg.connect(dsn), "agent-a")
        try:
            stats = await mine.commit(items, tables=build_tables(items))
        finally:
            await mine.session.close(grace_s=2)
    finally:
        await other.close()
    assert (stats.skipped_lines, stats.rows) == (40, {"spans": 60})
    assert await span_seqs(conn) == list(range(100))
    assert await checkpoint(conn, fw.file.identity.key) == fw.offset
    fresh = FileWriter(file_ref("other.log", ino=2))  # a file nobody committed: every line stays
    more = spans(fresh, range(100, 110))
    stats = await (await writer_on(conn, "agent-a")).commit(more, tables=build_tables(more))
    assert (stats.skipped_lines, stats.rows) == (0, {"spans": 10})


RETRY_TRIGGER = """
CREATE TABLE attempts (n int);
INSERT INTO attempts VALUES (0);
CREATE OR REPLACE FUNCTION flaky() RETURNS trigger AS $$
DECLARE tries int;
BEGIN
    -- Count attempts outside the failing transaction (dblink is not available): use a sequence.
    tries := nextval('flaky_seq');
    IF tries <= %(fail)s THEN
        RAISE EXCEPTION 'transient failure %%', tries USING ERRCODE = '%(code)s';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE SEQUENCE flaky_seq;
CREATE TRIGGER flaky BEFORE INSERT ON observability.spans FOR EACH STATEMENT EXECUTE FUNCTION flaky();
"""


def sink_settings(**db: object) -> Settings:
    s = Settings()
    dbs = s.database.model_copy(update={"retry_initial_ms": 1, "retry_max_ms": 20, **db})
    return s.model_copy(update={"database": dbs})


@pytest.mark.parametrize("code", ["53100", "57P01", "40P01", "40001", "55P03"])
async def test_retryable_sqlstates_are_retried_exactly(dsn: str, conn: asyncpg.Connection, code: str) -> None:
    await conn.execute(RETRY_TRIGGER % {"fail": 3, "code": code})
    sink = Sink(sink_settings(), dsn)
    retries: list[str] = []
    sink.on_retry = lambda err, attempt, delay: retries.append(err.sqlstate or "")
    fw = FileWriter()
    stats = await sink.commit(spans(fw, range(100)))
    await sink.close()
    assert retries == [code] * 3
    assert stats.dead_letters == []
    assert await span_seqs(conn) == list(range(100))
    assert await conn.fetchval("SELECT count(*) FROM hypertail.dead_letters") == 0


async def test_a_statement_timeout_splits_the_batch_instead_of_retrying_it(dsn: str, conn: asyncpg.Connection) -> None:
    """57014 (statement_timeout) is not retried whole (issue 20): the batch is committed in halves,
    halved again while they time out; no backoff, every row once (agent.sink.progress)."""
    await conn.execute(RETRY_TRIGGER % {"fail": 3, "code": "57014"})
    sink = Sink(sink_settings(), dsn)
    retries: list[str] = []
    sink.on_retry = lambda err, attempt, delay: retries.append(err.sqlstate or "")
    stats = await sink.commit(spans(FileWriter(), range(100)))
    await sink.close()
    assert retries == [] and sink.backfill.stats.timeout_splits == 3
    assert stats.rows == {"spans": 100} and stats.dead_letters == []
    assert await span_seqs(conn) == list(range(100))


async def test_terminated_backend_mid_copy_is_retried(dsn: str, conn: asyncpg.Connection) -> None:
    await conn.execute("""
        CREATE SEQUENCE kill_seq;
        CREATE OR REPLACE FUNCTION kill_me() RETURNS trigger AS $$
        BEGIN
            IF nextval('kill_seq') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER kill_me BEFORE INSERT ON observability.spans FOR EACH STATEMENT EXECUTE FUNCTION kill_me();
    """)
    sink = Sink(sink_settings(), dsn)
    retries: list[str] = []
    sink.on_retry = lambda err, attempt, delay: retries.append(type(err).__name__)
    fw = FileWriter()
    await sink.commit(spans(fw, range(50)))
    await sink.close()
    assert await span_seqs(conn) == list(range(50))
    assert "RetryableError" in retries


async def test_revoked_privilege_stalls_then_recovers(dsn: str, conn: asyncpg.Connection) -> None:
    from agent.sink.schema import grants_for

    role = "ht_stall_role"
    await conn.execute(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN")
    await conn.execute(grants_for(role))
    await conn.execute(f"REVOKE INSERT ON observability.spans FROM {role}")
    sink = Sink(sink_settings(), dsn.replace("postgres:@", f"{role}:@").replace("//postgres@", f"//{role}@"))
    if role not in sink.dsn:
        sink = Sink(sink_settings(), dsn)
        pytest.fail("test DSN has no user part to replace")
    fw = FileWriter()
    task = asyncio.create_task(sink.commit(spans(fw, range(20))))
    for _ in range(200):
        await asyncio.sleep(0.02)
        if sink.health.stalled:
            break
    assert sink.health.stalled and "42501" in sink.health.stalled and "spans" in sink.health.stalled
    assert await conn.fetchval("SELECT count(*) FROM hypertail.dead_letters") == 0
    await conn.execute(f"GRANT INSERT ON observability.spans TO {role}")
    await asyncio.wait_for(task, timeout=30)
    await sink.close()
    assert sink.health.stalled is None
    assert await span_seqs(conn) == list(range(20))
    await conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_chat_message_duplicates_keep_first(writer: Writer, conn: asyncpg.Connection) -> None:
    import uuid

    from agent.model import Row
    from tests.factories import T0, values

    mid = str(uuid.uuid4())  # rows carry uuids as their canonical text
    row = Row("chat_messages", values("chat_messages", id=mid, timestamp=T0, role="user", content="hi",
                                      metadata="{}"))
    fw = FileWriter()
    await writer.commit([fw.item(row)])
    await writer.commit([fw.item(row), fw.item(row)])
    assert await conn.fetchval("SELECT count(*) FROM observability.chat_messages") == 1
    assert contract.KEY_COLUMNS["chat_messages"] == ("id", "timestamp")
