"""A backlog older than compress_after (issue 20): the agent's rate into a compressed range.

    python bench/backfill.py --dsn ADMIN_DSN_OF_A_TIMESCALEDB [--lines 200000] [--first 20000]
                             [--plain-rows 1000] [--candidates]

N span lines, all of one day 20 days ago (one line every 0.4 s from midnight; one trace per span,
as bench/e2e.py writes them, which is the worst case for the key check: one compressed batch per
trace). The first ``--first`` lines are COPYed by the plain loop, their chunk is aged to look 20
days old (its creation time in TimescaleDB's catalog, which needs a superuser) and compressed by
the shipped compression policy (``CALL run_job``), as a policy would have done long ago. Then:

1. **agent, compressed range**: ``hypertail run --exit-when-idle`` drains the other lines into it;
2. **agent, uncompressed range** (the baseline, same run): the same, on a database where the first
   lines were COPYed but their chunk left uncompressed. Both ``--repeat`` times, in alternating
   order; the medians are compared (single runs vary by a third on a shared machine);
3. **plain loop, compressed range**: the loop of bench/e2e.py (orjson.loads, a tuple, asyncpg binary
   COPY, 5,000 rows per transaction) on ``--plain-rows`` of those lines into the same compressed
   range, a fixed number so that it cannot take minutes (it runs at a few hundred rows per second).

The agent's figures exclude its fixed start/stop cost (an empty file, measured in the same run).
Every agent run is checked exact (rows, no dead letters); after the compressed run the chunk's
state is printed, and the compression policy is run once more to show the chunk compressed again.

``--candidates`` also measures, with the plain loop's rows and no agent, each way of writing into
the compressed chunk that issue 20 lists (the table in docs/operations.md).

Prints figures; asserts nothing but exactness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import contract  # noqa: E402
from bench.e2e import config, drop_database, fresh_db, plain_loop, plain_row, run_agent  # noqa: E402
from tests.pgserver import admin_dsn  # noqa: E402

DAY = (datetime.now(UTC) - timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)
PREFIX = "bench_backfill"


def span_line(seq: int) -> bytes:
    """A realistic LLM span line (~450 bytes) of ``DAY``, one every 0.4 s."""
    ts = DAY + timedelta(milliseconds=400 * seq)
    rec: dict[str, Any] = {
        "event": "span", "record_type": "span", "level": "info",
        "timestamp": (ts + timedelta(milliseconds=seq % 2000)).isoformat().replace("+00:00", "Z"),
        "started_at": ts.isoformat().replace("+00:00", "Z"),
        "trace_id": f"{seq + 1:032x}", "span_id": f"{seq + 1:016x}", "parent_span_id": f"{seq + 7:016x}",
        "name": "chat_completion", "span_type": "llm", "status": "completed", "duration_ms": seq % 2000,
        "model": "gpt-4o-mini", "input_tokens": 1200 + seq % 300, "output_tokens": 200 + seq % 50,
        "cost_usd": 0.000321, "temperature": 0.2, "seq": seq,
    }
    return orjson.dumps(rec) + b"\n"


def write_lines(path: Path, seqs: range) -> None:
    with path.open("wb") as fh:
        for start in range(seqs.start, seqs.stop, 10_000):
            fh.write(b"".join(span_line(s) for s in range(start, min(seqs.stop, start + 10_000))))


async def copy_rows(conn: asyncpg.Connection, seqs: range, per_txn: int = 5000) -> None:
    """The plain loop's rows for ``seqs``, COPYed ``per_txn`` to a transaction."""
    cols = contract.COLUMNS["spans"]
    for i in range(0, len(seqs), per_txn):
        rows = [plain_row(orjson.loads(span_line(s)), "spans") for s in seqs[i:i + per_txn]]
        async with conn.transaction():
            await conn.copy_records_to_table("spans", schema_name="observability", records=rows, columns=cols)


async def age_and_compress(conn: asyncpg.Connection, days: int = 20) -> float:
    """Make the spans chunks look ``days`` old (creation time) and run the shipped compression policy."""
    await conn.execute(
        "UPDATE _timescaledb_catalog.chunk SET creation_time = now() - make_interval(days => $1) "
        "WHERE hypertable_id = (SELECT id FROM _timescaledb_catalog.hypertable "
        "WHERE schema_name = 'observability' AND table_name = 'spans')", days)
    job = await conn.fetchval("SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_name = 'spans' "
                              "AND proc_name = 'policy_compression'")
    t0 = time.perf_counter()
    await conn.execute(f"CALL run_job({int(job)})")
    return time.perf_counter() - t0


async def chunk_state(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT chunk_name, is_compressed FROM timescaledb_information.chunks "
                            "WHERE hypertable_name = 'spans' ORDER BY range_start")
    return [dict(r) for r in rows]


async def prepared_db(admin: str, name: str, first: int, compressed: bool) -> str:
    """A migrated database, its policies paused, the first lines COPYed (and compressed)."""
    dsn = await fresh_db(admin, name)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
                           "WHERE hypertable_schema = 'observability'")
        await copy_rows(conn, range(first))
        if compressed:
            await age_and_compress(conn)
            assert all(c["is_compressed"] for c in await chunk_state(conn))
    finally:
        await conn.close()
    return dsn


async def exact(dsn: str, n: int) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = int(await conn.fetchval("SELECT count(DISTINCT (metadata->>'seq')::int) FROM observability.spans"))
        dead = int(await conn.fetchval("SELECT count(*) FROM hypertail.dead_letters"))
    finally:
        await conn.close()
    assert (rows, dead) == (n, 0), f"expected {n} rows and no dead letters, got {rows} rows, {dead} dead letters"
    return rows, dead


def agent_run(admin: str, tmp: Path, logs: Path, *, first: int, n: int, compressed: bool,
              fixed_s: float) -> dict[str, Any]:
    name = f"{PREFIX}_{'compressed' if compressed else 'plain'}"
    dsn = asyncio.run(prepared_db(admin, name, first, compressed))
    run = run_agent(config(tmp, dsn, logs))
    asyncio.run(exact(dsn, n))
    out: dict[str, Any] = {"wall_s": round(run["wall"], 2), "rows_per_s": round((n - first) / (run["wall"] - fixed_s))}
    if compressed:
        out["chunks_after_drain"] = asyncio.run(_state(dsn))
        out["chunks_after_policy_run"] = asyncio.run(_state(dsn, run_policy=True))
    asyncio.run(drop_database(admin, name))
    return out


def agent_runs(admin: str, tmp: Path, logs: Path, *, first: int, n: int, fixed_s: float,
               repeat: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The agent into the compressed and into the uncompressed range, ``repeat`` times each, in
    alternating order (the machine is shared: whichever runs first must not always win); medians."""
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for i in range(repeat):
        for compressed in ((True, False) if i % 2 == 0 else (False, True)):
            runs[compressed].append(agent_run(admin, tmp, logs, first=first, n=n, compressed=compressed,
                                              fixed_s=fixed_s))

    def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
        rates = sorted(r["rows_per_s"] for r in rs)
        return {"rows": n - first, "rows_per_s": rates[len(rates) // 2],
                "runs_rows_per_s": [r["rows_per_s"] for r in rs],
                **{k: v for k, v in rs[-1].items() if k.startswith("chunks_")}}

    return summary(runs[True]), summary(runs[False])


async def _state(dsn: str, run_policy: bool = False) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        if run_policy:
            await age_and_compress(conn)
        return await chunk_state(conn)
    finally:
        await conn.close()


def plain_into_compressed(admin: str, tmp: Path, first: int, rows: int) -> dict[str, Any]:
    name = f"{PREFIX}_loop"
    dsn = asyncio.run(prepared_db(admin, name, first, compressed=True))
    path = tmp / "plain.log"
    write_lines(path, range(first, first + rows))
    res = asyncio.run(plain_loop(dsn, [(path, "record_type")]))
    asyncio.run(drop_database(admin, name))
    return {"rows": int(res["rows"]), "wall_s": round(res["wall"], 2), "rows_per_s": round(res["rows"] / res["wall"])}


# --- the candidates of issue 20, with the plain loop's rows ----------------------------------------

Rows = list[tuple[Any, ...]]


async def copy_into_spans(conn: asyncpg.Connection, rows: Rows, setup: str | None = None) -> None:
    for i in range(0, len(rows), 5000):
        async with conn.transaction():
            if setup:
                await conn.execute(setup)
            await conn.copy_records_to_table("spans", schema_name="observability", records=rows[i:i + 5000],
                                             columns=contract.COLUMNS["spans"])


async def through_staging(conn: asyncpg.Connection, rows: Rows) -> None:
    """COPY into a plain staging table (cheap), then move the rows in one INSERT ... SELECT ON CONFLICT."""
    cols = ", ".join(f'"{c}"' for c in contract.COLUMNS["spans"])
    for i in range(0, len(rows), 5000):
        async with conn.transaction():
            await conn.copy_records_to_table("stage", schema_name="hypertail", records=rows[i:i + 5000],
                                             columns=contract.COLUMNS["spans"])
            await conn.execute(f"INSERT INTO observability.spans ({cols}) SELECT {cols} FROM hypertail.stage "
                               "ON CONFLICT DO NOTHING")
            await conn.execute("TRUNCATE hypertail.stage")


async def candidate(admin: str, name: str, first: range, rest: list[int], *, alter: str | None = None,
                    before: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
                    write: Callable[[asyncpg.Connection, Rows], Awaitable[None]] = copy_into_spans,
                    recompress: bool = False) -> dict[str, Any]:
    """COPY the ``first`` rows, compress them with the policy, then time the ``rest`` into the same day."""
    db = f"{PREFIX}_cand"
    dsn = await fresh_db(admin, db)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
                           "WHERE hypertable_schema = 'observability'")
        await conn.execute("CREATE UNLOGGED TABLE hypertail.stage (LIKE observability.spans)")
        if alter:
            await conn.execute(f"ALTER TABLE observability.spans SET ({alter})")
        await copy_rows(conn, first)
        compress_s = await age_and_compress(conn)
        size = await conn.fetchrow("SELECT before_compression_total_bytes AS b, after_compression_total_bytes AS a "
                                   "FROM hypertable_compression_stats('observability.spans')")
        rows = [plain_row(orjson.loads(span_line(s)), "spans") for s in rest]
        t0 = time.perf_counter()
        if before is not None:
            await before(conn)
        prep = time.perf_counter() - t0
        t0 = time.perf_counter()
        await write(conn, rows)
        written = time.perf_counter() - t0
        again = await age_and_compress(conn) if recompress else 0.0
        assert await conn.fetchval("SELECT count(*) FROM observability.spans") == len(first) + len(rest)
    finally:
        await conn.close()
        await drop_database(admin, db)
    return {"candidate": name, "rows": len(rest), "prepare_s": round(prep, 2), "write_s": round(written, 2),
            "rows_per_s": round(len(rest) / (prep + written)), "recompress_s": round(again, 2),
            "compress_s": round(compress_s, 2), "bytes_before": size["b"], "bytes_after": size["a"]}


async def _decompress(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT hypertail.decompress_chunk(c) FROM show_chunks('observability.spans') c")


async def candidates(admin: str, first: int, total: int, slow_rows: int) -> list[dict[str, Any]]:
    """Each way of writing, after the first lines; the slow ones on ``slow_rows`` rows only.

    "interleaved": the compressed lines are every tenth of the day's, the backlog the others, so
    every backlog row falls inside a compressed batch's time range (another source, another agent).
    """
    head, rest = range(first), list(range(first, total))
    step = total // first
    spread, between = range(0, total, step), [s for s in range(total) if s % step]
    off = "SET LOCAL timescaledb.enable_direct_compress_copy = on"
    return [
        await candidate(admin, "key check (as shipped: segmentby trace_id)", head, rest[:slow_rows]),
        await candidate(admin, "direct-compress COPY on", head, rest[:slow_rows],
                        write=lambda c, r: copy_into_spans(c, r, setup=off)),
        await candidate(admin, "staging table, INSERT ... SELECT ON CONFLICT", head, rest[:slow_rows],
                        write=through_staging),
        await candidate(admin, "orderby span_id, timestamp", head, rest[:slow_rows],
                        alter="timescaledb.compress_orderby = 'span_id, \"timestamp\" DESC'"),
        await candidate(admin, "no segmentby", head, rest, alter="timescaledb.compress_segmentby = ''"),
        await candidate(admin, "no segmentby, interleaved", spread, between,
                        alter="timescaledb.compress_segmentby = ''"),
        await candidate(admin, "segmentby span_id (the key)", head, rest,
                        alter="timescaledb.compress_segmentby = 'span_id'"),
        await candidate(admin, "decompress the chunk once (chosen)", head, rest, before=_decompress, recompress=True),
        await candidate(admin, "decompress once, interleaved", spread, between, before=_decompress,
                        recompress=True),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="an admin (superuser) DSN of a TimescaleDB server")
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--first", type=int, default=20_000, help="lines COPYed and compressed before the agent runs")
    p.add_argument("--plain-rows", type=int, default=1000, help="rows the plain loop writes into the compressed range")
    p.add_argument("--repeat", type=int, default=3, help="agent runs per range (medians are printed)")
    p.add_argument("--candidates", action="store_true", help="also measure each way of writing (no agent)")
    a = p.parse_args()
    with admin_dsn(a.dsn) as admin, tempfile.TemporaryDirectory(prefix="hypertail-backfill-") as tmp_s:
        tmp = Path(tmp_s)
        logs = tmp / "logs"
        logs.mkdir()
        empty_dsn = asyncio.run(prepared_db(admin, f"{PREFIX}_empty", 0, compressed=False))
        fixed = run_agent(config(tmp, empty_dsn, logs))["wall"]
        asyncio.run(drop_database(admin, f"{PREFIX}_empty"))
        write_lines(logs / "app.log", range(a.first, a.lines))
        out: dict[str, Any] = {"lines": a.lines, "first_copied": a.first, "day": DAY.date().isoformat(),
                               "agent_fixed_cost_s": round(fixed, 2)}
        out["agent_compressed"], out["agent_uncompressed"] = agent_runs(
            admin, tmp, logs, first=a.first, n=a.lines, fixed_s=fixed, repeat=a.repeat)
        out["plain_loop_compressed"] = plain_into_compressed(admin, tmp, a.first, a.plain_rows)
        c, u = out["agent_compressed"]["rows_per_s"], out["agent_uncompressed"]["rows_per_s"]
        out["compressed_vs_uncompressed"] = round(c / u, 2)
        out["agent_vs_plain_loop_compressed"] = round(c / out["plain_loop_compressed"]["rows_per_s"], 1)
        print(json.dumps(out, indent=2), flush=True)
        if a.candidates:
            print(json.dumps(asyncio.run(candidates(admin, a.first, a.lines, a.plain_rows)), indent=2))


if __name__ == "__main__":
    main()
