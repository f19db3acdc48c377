"""Figures for issue 13, each against a baseline measured in the same run.

    python bench/views.py [--dsn DSN] [--lines 200000] [--spans 1000000] [--skip-logs] [--skip-trace]

1. Ingest cost of storing ordinary log lines: ``hypertail run --exit-when-idle`` on a file of
   80 % log lines and 20 % spans, once with ``app_logs = "store"`` and once with ``"skip"``
   (fresh databases, same file, same run); lines per second of each, after the fixed
   start/stop cost (an empty file) is taken off.
2. ``hypertail trace`` on a trace of 10,000 spans (and 2,000 log lines) among ~1M spans spread
   over 10 days: the read (the sink's queries) and the render, in process, median of 5; and the
   whole command as a user runs it. Plain PostgreSQL, then TimescaleDB (uncompressed, and again
   after compressing every chunk) when the server has it.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import SchemaSettings  # noqa: E402
from agent.sink.schema import apply_schema, detect_mode  # noqa: E402
from agent.sink.status import recreate_database  # noqa: E402
from agent.sink.traces import read_trace  # noqa: E402
from agent.views.waterfall import render  # noqa: E402
from bench.e2e import config, run_agent, span_line  # noqa: E402
from tests.pgserver import admin_dsn, replace_database  # noqa: E402

BIG_TRACE = "b" * 32


def log_line(seq: int) -> bytes:
    """An ordinary structlog line inside a trace (~260 bytes), as emit.processors() writes it."""
    return orjson.dumps({
        "request_id": f"req-{seq}", "user": f"u-{seq % 97}", "event": "cache lookup finished",
        "level": ("info", "debug", "warning")[seq % 3], "logger": "app.cache",
        "timestamp": f"2026-11-01T12:00:00.{seq % 1_000_000:06d}Z",
        "trace_id": f"{seq // 5 + 1:032x}", "span_id": f"{seq // 5 + 1:016x}",
    }) + b"\n"


def mixed_file(path: Path, n: int) -> None:
    with path.open("wb") as fh:
        for start in range(0, n, 10_000):
            block = range(start, min(n, start + 10_000))
            fh.write(b"".join(span_line(s) if s % 5 == 0 else log_line(s) for s in block))


async def fresh(admin: str, name: str, timescaledb: str = "auto") -> str:
    await recreate_database(admin, name)
    dsn = replace_database(admin, name)
    conn = await asyncpg.connect(dsn)
    try:
        await apply_schema(conn, SchemaSettings(timescaledb=timescaledb))  # type: ignore[arg-type]
    finally:
        await conn.close()
    return dsn


async def rows(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM observability.{table}"))
    finally:
        await conn.close()


def ingest(admin: str, tmp: Path, n: int, rounds: int = 2) -> dict[str, Any]:
    logs = tmp / "mixed"
    logs.mkdir()
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "e.log").write_bytes(b"")
    mixed_file(logs / "app.log", n)
    out: dict[str, Any] = {"lines": n, "log_share": 0.8, "rounds": rounds}
    fixed = min(run_agent(config(tmp, asyncio.run(fresh(admin, "bench_views_empty")), empty))["wall"]
                for _ in range(2))
    walls: dict[str, list[float]] = {"store": [], "skip": []}
    for _ in range(rounds):  # alternated, best of each: the machine's other load hits both alike
        for mode in ("store", "skip"):
            dsn = asyncio.run(fresh(admin, f"bench_views_{mode}"))
            cfg = config(tmp, dsn, logs)
            cfg.write_text(cfg.read_text().replace('name = "bench"\n', f'name = "bench"\napp_logs = "{mode}"\n', 1))
            walls[mode].append(run_agent(cfg)["wall"])
            out[mode] = {"log_rows": asyncio.run(rows(dsn, "logs")), "span_rows": asyncio.run(rows(dsn, "spans"))}
    for mode, ws in walls.items():
        out[mode].update(lines_per_s=round(n / max(min(ws) - fixed, 1e-6)), wall_s=[round(w, 2) for w in ws])
    out["fixed_start_stop_s"] = round(fixed, 2)
    out["store_cost"] = f"{out['skip']['lines_per_s'] / out['store']['lines_per_s']:.2f}x the time of skip"
    return out


FILL = """
INSERT INTO observability.spans (span_id, "timestamp", trace_id, parent_span_id, name, span_type, status,
                                 duration_ms, model, input_tokens, output_tokens, cost_usd)
SELECT lpad(to_hex(g), 16, '0'), $1::timestamptz + (g * interval '864 ms'), lpad(to_hex(g / 10 + 1), 32, '0'),
       CASE WHEN g % 10 = 0 THEN NULL ELSE lpad(to_hex(g - g % 10), 16, '0') END,
       'step', 'llm', 'completed', g % 900, 'gpt-4o-mini', 100, 20, 0.000120
FROM generate_series($2::bigint, $3::bigint) g
"""
BIG = """
INSERT INTO observability.spans (span_id, "timestamp", trace_id, parent_span_id, name, span_type, status, duration_ms)
SELECT 'f' || lpad(to_hex(g), 15, '0'), $1::timestamptz + g * interval '3 ms', $2,
       CASE WHEN g = 0 THEN NULL ELSE 'f' || lpad(to_hex(g / 50), 15, '0') END,
       'chunk ' || (g % 40), 'embedding', 'completed', 2
FROM generate_series(0, 9999) g
"""
BIG_LOGS = """
INSERT INTO observability.logs (id, "timestamp", trace_id, span_id, level, event, source)
SELECT gen_random_uuid(), $1::timestamptz + g * interval '15 ms', $2, 'f' || lpad(to_hex(g * 5 / 50), 15, '0'),
       'info', 'embedded a chunk', 'bench'
FROM generate_series(0, 1999) g
"""


async def fill(dsn: str, spans: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        t0 = await conn.fetchval("SELECT now() - interval '10 days'")
        for lo in range(1, spans, 200_000):
            await conn.execute(FILL, t0, lo, min(spans, lo + 199_999))
        middle = t0 + (await conn.fetchval("SELECT interval '5 days'"))
        await conn.execute(BIG, middle, BIG_TRACE)
        await conn.execute(BIG_LOGS, middle, BIG_TRACE)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def time_in_process(dsn: str) -> dict[str, float]:
    """The sink's read and the render of the big trace, median of 5."""
    conn = await asyncpg.connect(dsn)
    try:
        reads, renders = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            view = await read_trace(conn, BIG_TRACE)
            t1 = time.perf_counter()
            assert view is not None and len(view.spans) == 10_000
            render(view, 160)
            renders.append(time.perf_counter() - t1)
            reads.append(t1 - t0)
    finally:
        await conn.close()
    return {"read_ms": round(statistics.median(reads) * 1000, 1),
            "render_ms": round(statistics.median(renders) * 1000, 1)}


def time_trace(dsn: str) -> dict[str, float]:
    """In process, then ``hypertail trace`` as a user runs it (median of 3, interpreter start included)."""
    out = asyncio.run(time_in_process(dsn))
    cfg = Path(tempfile.mkstemp(suffix=".toml")[1])
    cfg.write_text(f'[database]\ndsn = "{dsn}"\n')
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "agent.cli", "trace", BIG_TRACE, "--config", str(cfg), "--width", "160"],
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        walls.append(time.perf_counter() - t0)
    return {**out, "command_s": round(statistics.median(walls), 2)}


async def compress_all(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n = 0
        for table in ("spans", "logs"):
            n += len(await conn.fetch(f"SELECT compress_chunk(c, if_not_compressed => true) "
                                      f"FROM show_chunks('observability.{table}') c"))
        await conn.execute("ANALYZE")
        return n
    finally:
        await conn.close()


def trace_view(admin: str, spans: int) -> dict[str, Any]:
    out: dict[str, Any] = {"spans_total": spans + 10_000, "trace_spans": 10_000, "trace_logs": 2_000}
    for mode in ("off", "auto"):
        dsn = asyncio.run(fresh(admin, f"bench_trace_{mode}", mode))

        async def described(d: str = dsn) -> str:
            c = await asyncpg.connect(d)
            try:
                return (await detect_mode(c)).describe()
            finally:
                await c.close()

        label = asyncio.run(described())
        if mode == "auto" and not label.startswith("TimescaleDB"):
            break
        asyncio.run(fill(dsn, spans))
        out[label] = time_trace(dsn)
        if label.startswith("TimescaleDB"):
            chunks = asyncio.run(compress_all(dsn))
            out[label + ", all chunks compressed"] = {**time_trace(dsn), "chunks": chunks}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="an admin DSN (default: the test server)")
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--spans", type=int, default=990_000)
    p.add_argument("--skip-logs", action="store_true")
    p.add_argument("--skip-trace", action="store_true")
    a = p.parse_args()
    with admin_dsn(a.dsn) as admin, tempfile.TemporaryDirectory() as tmp:
        if not a.skip_logs:
            print(json.dumps({"ingest_store_vs_skip": ingest(admin, Path(tmp), a.lines)}, indent=2))
        if not a.skip_trace:
            print(json.dumps({"trace_view": trace_view(admin, a.spans)}, indent=2))


if __name__ == "__main__":
    main()
