"""Duplicates are recognised by the statement that met them, in both modes (issue 9, Build 5).

On a hypertable the server names the chunk (``_hyper_3_1_chunk``) in a unique violation, not the
hypertable; the sink must still fall back to its upsert, so a repeated span, a replayed batch and
two agents racing on a new file all give one row and no dead letter. And the poison split only
dead-letters a line whose own insert, tried alone, the server refused.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from agent.sink.writer import Writer
from tests.factories import FileWriter, chat_row, file_ref, span_row, spans
from tests.integration.support import writer_on


async def counts(conn: asyncpg.Connection) -> tuple[list[int], int]:
    rows = await conn.fetch("SELECT (metadata->>'seq')::int AS seq FROM observability.spans ORDER BY 1")
    dead = await conn.fetchval("SELECT count(*) FROM hypertail.dead_letters")
    return [r["seq"] for r in rows], int(dead)


async def test_the_same_span_in_a_later_batch_is_one_row_no_dead_letter(
    writer: Writer, conn: asyncpg.Connection
) -> None:
    fw = FileWriter()
    await writer.commit(spans(fw, range(10)))
    stats = await writer.commit([fw.item(span_row(3)), fw.item(span_row(10))])
    assert stats.dead_letters == []
    assert await counts(conn) == (list(range(11)), 0)


MESSAGE = "5a3f0a52-9c1e-4c8a-9d2b-6e5f4a3b2c1d"


@pytest.mark.parametrize("boundary", [None, 1, 2])
async def test_a_repeated_key_keeps_the_first_line_whatever_the_batch_boundary(
    writer: Writer, conn: asyncpg.Connection, boundary: int | None
) -> None:
    """The one rule for tables that do not merge (agent/batcher.py): the first line of a key
    wins, whether its repeats share its batch or come in later ones."""
    fw = FileWriter()
    items = [fw.item(chat_row(MESSAGE, f"version {k}")) for k in range(3)]
    for part in ([items] if boundary is None else [items[:boundary], items[boundary:]]):
        stats = await writer.commit(part)
        assert stats.dead_letters == []
    rows = await conn.fetch("SELECT content FROM observability.chat_messages")
    assert [r["content"] for r in rows] == ["version 0"]
    assert await conn.fetchval("SELECT committed_offset FROM hypertail.checkpoints") == fw.offset


@pytest.mark.parametrize("boundary", [None, 1, 2])
async def test_a_repeated_span_merges_in_line_order_whatever_the_batch_boundary(
    writer: Writer, conn: asyncpg.Connection, boundary: int | None
) -> None:
    """The merging tables' rule: later lines' non-null values win, in a batch as across batches."""
    fw = FileWriter()
    items = [fw.item(span_row(7, model=model, output_tokens=tokens))
             for model, tokens in (("first", 1), ("second", None), ("third", 3))]
    for part in ([items] if boundary is None else [items[:boundary], items[boundary:]]):
        stats = await writer.commit(part)
        assert stats.dead_letters == []
    row = await conn.fetchrow("SELECT model, output_tokens FROM observability.spans")
    assert (row["model"], row["output_tokens"]) == ("third", 3)


async def test_a_replayed_batch_from_another_file_copy_is_one_row_each(
    writer: Writer, conn: asyncpg.Connection
) -> None:
    """A copytruncate copy read again under a new identity: the same rows, a new file key."""
    original, copy = FileWriter(file_ref("app.log", ino=1)), FileWriter(file_ref("app.log.1", ino=2))
    await writer.commit(spans(original, range(200)))
    stats = await writer.commit(spans(copy, range(200)))
    assert (stats.rows, stats.dead_letters) == ({"spans": 200}, [])
    assert await counts(conn) == (list(range(200)), 0)


async def test_two_agents_racing_on_a_new_file_give_one_row_each(dsn: str, conn: asyncpg.Connection) -> None:
    a_conn, b_conn = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        a, b = await writer_on(a_conn, "agent-a"), await writer_on(b_conn, "agent-b")
        fw_a, fw_b = FileWriter(), FileWriter()  # both agents tail the same (new) file
        batch_a, batch_b = spans(fw_a, range(300)), spans(fw_b, range(300))
        results = await asyncio.gather(a.commit(batch_a), b.commit(batch_b))
    finally:
        await a_conn.close()
        await b_conn.close()
    assert all(r.dead_letters == [] for r in results)
    assert await counts(conn) == (list(range(300)), 0)
    assert sum(r.skipped_lines for r in results) == 300  # the later agent dropped what the first committed


FLAKY_TRIGGER = """
CREATE SEQUENCE refusals;
CREATE OR REPLACE FUNCTION refuse_twice() RETURNS trigger AS $$
BEGIN
    -- The sequence is not transactional: the first two statements that reach seq 5 fail, later ones pass.
    IF NEW.metadata->>'seq' = '5' AND nextval('refusals') <= 2 THEN
        RAISE EXCEPTION 'refused for now' USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_twice BEFORE INSERT ON observability.spans FOR EACH ROW EXECUTE FUNCTION refuse_twice();
"""


async def test_a_line_is_dead_lettered_only_for_its_own_refusal(writer: Writer, conn: asyncpg.Connection) -> None:
    """The batch fails, then the half holding seq 5 fails: seq 5 was never tried alone, so it is.

    Before, the split took the parent's error as proof and dead-lettered seq 5 untried.
    """
    await conn.execute(FLAKY_TRIGGER)
    fw = FileWriter()
    stats = await writer.commit(spans(fw, range(8)))
    assert stats.dead_letters == []
    assert await counts(conn) == (list(range(8)), 0)
