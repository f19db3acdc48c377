"""Cost of one span record through agent.emit vs one INSERT per event in its own transaction.

The baseline is the in-process pattern hypertail replaces: the application writes every event
to the database itself, one INSERT and one commit each. Both figures come from the same run;
the INSERTs go to a fresh database on an embedded PostgreSQL (or ``--dsn``).

    python bench/emit.py [--spans 50000] [--inserts 2000] [--dsn postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from agent import emit  # noqa: E402

INSERT = (
    "INSERT INTO observability.spans (span_id, timestamp, trace_id, parent_span_id, name, span_type, status,"
    " duration_ms, result_count, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)


def bench_emit(spans: int) -> float:
    """Microseconds per ``span()`` record (enter, exit, render, write) inside a trace."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.log"
        emit.configure(path, max_bytes=2**40)
        try:
            with emit.trace("bench"):
                for _ in range(min(spans, 2000)):  # warm-up
                    with emit.span("retrieve", "retrieval", result_count=3):
                        pass
                start = time.perf_counter()
                for _ in range(spans):
                    with emit.span("retrieve", "retrieval", result_count=3):
                        pass
                elapsed = time.perf_counter() - start
            assert emit.dropped() == 0
            lines = path.read_bytes().count(b"\n")
        finally:
            emit.shutdown()
    assert lines == spans + min(spans, 2000) + 2, lines
    return elapsed / spans * 1e6


async def bench_inserts(dsn: str, inserts: int) -> float:
    """Microseconds per event written with one INSERT in its own transaction."""
    conn = await asyncpg.connect(dsn)
    try:
        trace_id = uuid.uuid4().hex
        for i in range(inserts + 200):
            if i == 200:
                start = time.perf_counter()
            async with conn.transaction():
                await conn.execute(INSERT, f"{i + 1:016x}", datetime.now(UTC), trace_id, "00f067aa0ba902b7",
                                   "retrieve", "retrieval", "completed", 3, 3, "{}")
        elapsed = time.perf_counter() - start
    finally:
        await conn.close()
    return elapsed / inserts * 1e6


async def fresh_database(dsn: str | None) -> tuple[str, object | None]:
    """A database with schema.sql applied, on ``dsn`` or on a new embedded server."""
    from tests.pgserver import replace_database, start_test_server

    server = None
    if dsn is None:
        server = start_test_server()
        dsn = server.admin_dsn
    name = f"bench_emit_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    target = replace_database(dsn, name)
    conn = await asyncpg.connect(target)
    try:
        await conn.execute("SET client_min_messages = warning")
        await conn.execute((ROOT / "schema.sql").read_text())
    finally:
        await conn.close()
    return target, server


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--inserts", type=int, default=2_000)
    parser.add_argument("--dsn", default=None, help="server to INSERT into (default: embedded PostgreSQL)")
    args = parser.parse_args()

    emit_us = bench_emit(args.spans)
    target, server = await fresh_database(args.dsn)
    try:
        insert_us = await bench_inserts(target, args.inserts)
    finally:
        if server is not None:
            server.close()  # type: ignore[attr-defined]
    print(f"emit span() record:            {emit_us:8.2f} us/record  ({args.spans} records)")
    print(f"INSERT + commit per event:     {insert_us:8.2f} us/event   ({args.inserts} events)")
    print(f"ratio (INSERT / emit):         {insert_us / emit_us:8.1f}x   (goal >= 20x)")


if __name__ == "__main__":
    asyncio.run(main())
