"""The ingest session: direct or pooled, and the round trips one batch costs on the wire.

Counted by a byte-transparent proxy (tests/wireproxy.py), so a statement that starts costing a
Parse round trip again, or a COPY that asks for its columns again, fails here.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from agent.batcher import build_tables
from agent.model import DeadLetter, Item
from agent.sink.session import Session
from agent.sink.writer import Writer
from tests import pgbouncer
from tests.factories import FileWriter, span_row, trace_row
from tests.pgserver import DbServer
from tests.wireproxy import counting, database_of

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def batch(fw: FileWriter, first: int) -> list[Item]:
    """Spans to COPY, a trace start and end to merge, and a dead letter."""
    return [
        *(fw.item(span_row(first + k)) for k in range(50)),
        fw.item(trace_row(TRACE, status="in_progress", timestamp=span_row(first).values[1])),
        fw.item(trace_row(TRACE, status="completed", duration_ms=5, timestamp=span_row(first).values[1])),
        fw.item(DeadLetter("not JSON", None)),
    ]


async def commit_counted(dsn: str, *, pooled_upstream: str | None = None) -> tuple[bool, list[int]]:
    """Commit three batches through a counting proxy; the round trips of each."""
    upstream = pooled_upstream or dsn
    async with counting(upstream) as proxy:
        conn = await asyncpg.connect(proxy.dsn_for(database_of(dsn)), statement_cache_size=0)
        try:
            writer = Writer(await Session.on(conn), "agent-test", statement_timeout_ms=30_000)
            fw, trips = FileWriter(), []
            for n in range(3):
                items = batch(fw, 100 * n)
                before = proxy.turns
                stats = await writer.commit(items, tables=build_tables(items), tails=fw.tails())
                trips.append(proxy.turns - before)
                assert stats.rows == {"spans": 50, "traces": 1} and len(stats.dead_letters) == 1
            return writer.session.direct, trips
        finally:
            await conn.close()


async def test_a_direct_batch_costs_one_round_trip_per_statement(dsn: str) -> None:
    direct, trips = await commit_counted(dsn)
    assert direct
    # BEGIN+SET LOCAL, lock checkpoints, COPY spans (asyncpg streams the rows behind the COPY
    # query), upsert traces, dead letters, checkpoints, COMMIT: 7. (The first batch on a connection
    # also prepares each statement, describes the COPY's columns and lets asyncpg learn the types.)
    assert trips[1:] == [7, 7]


@pytest.fixture
def bouncer(pg_server: DbServer) -> Iterator[pgbouncer.PgBouncer]:
    if not pgbouncer.available():
        pytest.fail("pgbouncer is not installed: `apt-get install pgbouncer` (.ci/run does)")
    b = pgbouncer.start(pg_server.admin_dsn, pool_size=2)
    try:
        yield b
    finally:
        b.stop()


async def test_through_a_pooler_statements_are_parsed_in_their_transaction_and_copy_describes_once(
        dsn: str, bouncer: pgbouncer.PgBouncer) -> None:
    direct, trips = await commit_counted(dsn, pooled_upstream=bouncer.dsn_for(database_of(dsn)))
    assert not direct
    # As above, with a Parse round trip for each of the four parametrised statements; still no
    # description of the COPY's columns after the first batch.
    assert trips[1:] == [11, 11]
