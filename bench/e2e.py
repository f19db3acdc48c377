"""End-to-end figures for the pipe, each against a baseline measured in the same run.

    python bench/e2e.py [--dsn DSN] [--lines 200000] [--backlog-mb 1024] [--rate 2000 --seconds 20]

1. Throughput: ``hypertail run --exit-when-idle`` on the mixed file of issue 11 (``tests/mixed.py``:
   N lines of every kind and shape, mostly spans, half of them dated weeks ago and half today;
   two files, the second with another discriminator key, as two sources) into the real tables
   with their indexes, against the plain loop a user could write: ``orjson.loads`` each line, a
   tuple per row, asyncpg binary COPY (``copy_records_to_table``) of 5,000 lines per
   transaction, one connection, same database and tables. The plain loop skips what it cannot
   COPY (app logs; trace start records, which need a merge with their end), so it does less
   work than the agent. The agent's figure excludes its fixed start/stop cost, measured with an
   empty file.
2. Latency: a writer appends lines at a steady rate while the agent runs; a BEFORE INSERT trigger
   stamps each row with the database clock, so latency = insert time - write time (the commit
   follows within the same transaction, a few ms later at most).
3. CPU microseconds per line: the agent process's user+system time (from wait4), minus the
   empty-file run, divided by N; the plain loop's own process CPU time, divided by N; and its
   inverse, lines per CPU-second (a sidecar with ``cpu: 250m`` carries a quarter of that).
4. Peak RSS of the agent process (sampled every 50 ms) while a backlog of --backlog-mb drains.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import contract  # noqa: E402
from agent.config import SchemaSettings  # noqa: E402
from agent.sink.schema import apply_schema  # noqa: E402
from agent.sink.status import recreate_database  # noqa: E402
from tests.mixed import CUSTOM_KEY, mixed  # noqa: E402
from tests.mixed import T0 as mixed_t0_value  # noqa: E402
from tests.pgserver import admin_dsn, drop_database, replace_database  # noqa: E402

BATCH = 5000
AGENT_ROOT = ROOT  # --agent-root: run another checkout's agent (a before/after comparison)
DB_PREFIX = "bench"  # --db-prefix: databases are dropped and made again, so keep them apart


def span_line(seq: int, t_write: float | None = None) -> bytes:
    """A realistic span line (~350 bytes), like agent.emit writes for an LLM call."""
    rec: dict[str, Any] = {
        "event": "span", "record_type": "span", "level": "info",
        "timestamp": f"2026-11-01T12:00:00.{seq % 1_000_000:06d}Z",
        "started_at": f"2026-11-01T11:59:59.{seq % 1_000_000:06d}Z",
        "trace_id": f"{seq + 1:032x}", "span_id": f"{seq + 1:016x}", "parent_span_id": f"{seq + 7:016x}",
        "name": "chat_completion", "span_type": "llm", "status": "completed", "duration_ms": seq % 2000,
        "model": "gpt-4o-mini", "input_tokens": 1200 + seq % 300, "output_tokens": 200 + seq % 50,
        "cost_usd": 0.000321, "temperature": 0.2, "seq": seq,
    }
    if t_write is not None:
        rec["t_write"] = t_write
    return orjson.dumps(rec) + b"\n"


async def fresh_db(admin: str, name: str) -> str:
    """A new database ``name`` with schema.sql applied; returns its DSN."""
    await recreate_database(admin, name)
    dsn = replace_database(admin, name)
    conn = await asyncpg.connect(dsn)
    try:
        await apply_schema(conn, SchemaSettings())
    finally:
        await conn.close()
    return dsn


def write_file(path: Path, n: int) -> int:
    with path.open("wb") as fh:
        for start in range(0, n, 10_000):
            fh.write(b"".join(span_line(s) for s in range(start, min(n, start + 10_000))))
    return path.stat().st_size


OLD_DAY = mixed_t0_value.strftime("%Y-%m-%dT").encode()  # the mixed file's day, weeks ago


def write_mixed_files(logs: Path, n: int) -> int:
    """The mixed file as ``app.log`` (default discriminator) and ``other.log`` (custom key): its
    first ``n // 2`` lines, each followed by the same line dated today, so that batches write
    old and new time ranges (chunks) alike."""
    today = datetime.now(UTC).strftime("%Y-%m-%dT").encode()
    with (logs / "app.log").open("wb") as default, (logs / "other.log").open("wb") as custom:
        for line in mixed(n // 2):
            out = custom if line.key == CUSTOM_KEY else default
            out.write(line.data + b"\n" + line.data.replace(OLD_DAY, today) + b"\n")
        return default.tell() + custom.tell()


def config(tmp: Path, dsn: str, logs: Path, **extra: str) -> Path:
    p = tmp / f"bench-{len(list(tmp.glob('bench-*.toml')))}.toml"
    p.write_text(f"""
[database]
dsn = "{dsn}"
[[sources]]
name = "bench"
paths = ["{logs}/*.log"]
exclude = ["{logs}/other.log"]
[[sources]]
name = "other"
paths = ["{logs}/other.log"]
record_type_key = "{CUSTOM_KEY}"
[tail]
rescan_interval_ms = 200
[http]
enabled = false
[ops]
rollup_enabled = false
[agent]
id = "bench"
""" + "".join(f"{v}\n" for v in extra.values()))
    return p


def run_agent(cfg: Path, *args: str) -> dict[str, float]:
    """Run the agent to --exit-when-idle: wall time, CPU seconds (wait4) and peak RSS.

    Peak RSS is sampled every 50 ms with psutil: wait4's ru_maxrss would count the bench's own
    pages, which the child shares between fork and exec.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(cfg), "--exit-when-idle",
         "--idle-grace", "0.2", *args],
        stdout=subprocess.DEVNULL, cwd=AGENT_ROOT,
    )
    peak = [0]

    def sample() -> None:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(proc.pid)
            while proc.returncode is None:
                peak[0] = max(peak[0], p.memory_info().rss)
                time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"agent exited {proc.returncode}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "peak_rss": float(peak[0])}


async def count(dsn: str, table: str = "spans") -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM observability.{table}"))
    finally:
        await conn.close()


async def count_all(dsn: str) -> int:
    """Rows in the record tables (the agent also stores the app-log lines in ``logs``, by default)."""
    return sum([await count(dsn, t) for t in contract.KIND_OF_TABLE])


# --- the plain loop ---------------------------------------------------------------------------

_TIMED = {"traces", "spans"}


def _plain_converters(table: str) -> list[tuple[str, Any]]:
    """Per column: the conversion asyncpg's binary COPY needs, as a user would write it."""
    kind = contract.KIND_OF_TABLE[table]
    types = {f.name: f.type for f in contract.FIELDS[kind]}
    conv = {contract.TIME_T: datetime.fromisoformat, contract.UUID_T: uuid.UUID,
            contract.NUMERIC_T: lambda v: Decimal(str(v)), contract.JSONB_T: lambda v: orjson.dumps(v).decode()}
    return [(col, conv.get(types.get(col, ""))) for col in contract.COLUMNS[table]]


_PLAIN = {t: _plain_converters(t) for t in contract.KIND_OF_TABLE}  # record tables (logs: no records)
_BOOKKEEPING = {"started_at", "level", "logger", "event", "metadata", "record_type", CUSTOM_KEY}
_KNOWN = {t: set(contract.COLUMNS[t]) | _BOOKKEEPING for t in contract.KIND_OF_TABLE}


def plain_row(d: dict[str, Any], table: str) -> tuple[Any, ...]:
    """orjson's dict -> the row tuple: defaults, the start time, unknown keys into metadata."""
    out: list[Any] = []
    for col, conv in _PLAIN[table]:
        if col == "timestamp":
            if table in _TIMED and d.get("started_at"):
                v: Any = datetime.fromisoformat(d["started_at"])
            else:
                v = datetime.fromisoformat(d["timestamp"]) - timedelta(milliseconds=d.get("duration_ms") or 0)
        elif col == "metadata":
            meta = {k: x for k, x in d.items() if k not in _KNOWN[table]}
            meta.update(d.get("metadata") or {})
            v = orjson.dumps(meta).decode()
        else:
            v = d.get(col)
            if v is not None and conv is not None:
                v = conv(v)
        out.append(v)
    if table == "spans":
        out[5] = out[5] or "custom"
        out[6] = out[6] or "completed"
    return tuple(out)


async def plain_loop(dsn: str, files: list[tuple[Path, str]]) -> dict[str, float]:
    """The baseline: loads, tuple, binary COPY per 5,000 lines in a transaction, one connection."""
    conn = await asyncpg.connect(dsn)
    cpu0, t0, rows = time.process_time(), time.perf_counter(), 0
    try:
        for path, key in files:
            with path.open("rb") as fh:
                while chunk := list(itertools.islice(fh, BATCH)):
                    tables: dict[str, list[tuple[Any, ...]]] = {}
                    for raw in chunk:
                        d = orjson.loads(raw)
                        kind = d.get(key)
                        if kind is None or (kind == "trace" and d.get("status") is None):
                            continue  # an app log; a trace start (its end carries the row)
                        table = contract.TABLE_OF_KIND[kind]
                        tables.setdefault(table, []).append(plain_row(d, table))
                    async with conn.transaction():
                        for table, records in tables.items():
                            await conn.copy_records_to_table(table, schema_name="observability", records=records,
                                                             columns=contract.COLUMNS[table])
                            rows += len(records)
        return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - cpu0, "rows": rows}
    finally:
        await conn.close()


def expected_rows(n: int) -> int:
    """Rows the mixed file gives: every record, a trace's start and end being one row (each line
    twice, on two days: see write_mixed_files)."""
    return 2 * sum(1 for line in mixed(n // 2)
                   if line.table is not None and line.expected.get("status") != "in_progress")


def throughput(admin: str, tmp: Path, n: int) -> dict[str, Any]:
    logs = tmp / "tp"
    logs.mkdir()
    dsn = asyncio.run(fresh_db(admin, DB_PREFIX + "_empty"))
    empty = run_agent(config(tmp, dsn, logs))
    asyncio.run(drop_database(admin, DB_PREFIX + "_empty"))
    size = write_mixed_files(logs, n)
    dsn = asyncio.run(fresh_db(admin, DB_PREFIX + "_agent"))
    agent = run_agent(config(tmp, dsn, logs))
    got, want = asyncio.run(count_all(dsn)), expected_rows(n)
    assert got == want, f"the agent wrote {got} rows, expected {want}"
    asyncio.run(drop_database(admin, DB_PREFIX + "_agent"))
    files = [(logs / "app.log", "record_type"), (logs / "other.log", CUSTOM_KEY)]
    plain = asyncio.run(plain_loop(asyncio.run(fresh_db(admin, DB_PREFIX + "_plain")), files))
    asyncio.run(drop_database(admin, DB_PREFIX + "_plain"))
    agent_s = agent["wall"] - empty["wall"]
    return {
        "lines": n, "file_mb": round(size / 2**20, 1), "rows": got, "plain_loop_rows": int(plain["rows"]),
        "agent_lines_per_s": round(n / agent_s), "agent_wall_s": round(agent["wall"], 2),
        "agent_fixed_cost_s": round(empty["wall"], 2),
        "plain_loop_lines_per_s": round(n / plain["wall"]),
        "ratio_vs_plain_loop": round(plain["wall"] / agent_s, 2),
        "agent_cpu_us_per_line": round((agent["cpu"] - empty["cpu"]) / n * 1e6, 2),
        "plain_loop_cpu_us_per_line": round(plain["cpu"] / n * 1e6, 2),
        "cpu_ratio_agent_to_plain_loop": round((agent["cpu"] - empty["cpu"]) / plain["cpu"], 2),
        # what one CPU-second carries: a sidecar limited to `cpu: 250m` carries a quarter of it
        "agent_lines_per_cpu_second": round(n / (agent["cpu"] - empty["cpu"])),
        "plain_loop_lines_per_cpu_second": round(n / plain["cpu"]),
        "agent_peak_rss_mb": round(agent["peak_rss"] / 2**20, 1),
    }


LATENCY_TRIGGER = """
CREATE FUNCTION stamp() RETURNS trigger AS $$
BEGIN
    NEW.metadata := NEW.metadata || jsonb_build_object('t_db', extract(epoch FROM clock_timestamp()));
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER stamp BEFORE INSERT ON observability.spans FOR EACH ROW EXECUTE FUNCTION stamp();
"""


async def latencies(dsn: str) -> list[float]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT (metadata->>'t_db')::float8 - (metadata->>'t_write')::float8 AS lat FROM observability.spans"
        )
        return sorted(r["lat"] for r in rows)
    finally:
        await conn.close()


def latency(admin: str, tmp: Path, rate: int, seconds: float) -> dict[str, Any]:
    logs = tmp / "lat"
    logs.mkdir()
    dsn = asyncio.run(fresh_db(admin, DB_PREFIX + "_latency"))

    async def trigger() -> None:
        c = await asyncpg.connect(dsn)
        await c.execute(LATENCY_TRIGGER)
        await c.close()

    asyncio.run(trigger())
    n = int(rate * seconds)
    cfg = config(tmp, dsn, logs)
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, cwd=AGENT_ROOT)
    time.sleep(2.0)  # let it start and reach its steady state

    def writer() -> None:
        t0 = time.perf_counter()
        with (logs / "app.log").open("ab", buffering=0) as fh:
            for seq in range(n):
                fh.write(span_line(seq, time.time()))
                ahead = t0 + (seq + 1) / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)

    t = threading.Thread(target=writer)
    t.start()
    t.join()
    deadline = time.time() + 30
    while asyncio.run(count(dsn)) < n and time.time() < deadline:
        time.sleep(0.1)
    proc.terminate()
    proc.wait(timeout=30)
    lat = asyncio.run(latencies(dsn))
    asyncio.run(drop_database(admin, DB_PREFIX + "_latency"))

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1)

    return {"rate_lines_per_s": rate, "lines": len(lat), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 1)}


def backlog(admin: str, tmp: Path, mb: int) -> dict[str, Any]:
    logs = tmp / "backlog"
    logs.mkdir()
    per_line = len(span_line(123456))
    n = mb * 2**20 // per_line
    size = write_file(logs / "app.log", n)
    dsn = asyncio.run(fresh_db(admin, DB_PREFIX + "_backlog"))
    res = run_agent(config(tmp, dsn, logs))
    asyncio.run(drop_database(admin, DB_PREFIX + "_backlog"))
    return {"backlog_mb": round(size / 2**20), "lines": n, "drain_s": round(res["wall"], 1),
            "lines_per_s": round(n / res["wall"]), "peak_rss_mb": round(res["peak_rss"] / 2**20, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="an admin DSN (default: start an embedded PostgreSQL)")
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--backlog-mb", type=int, default=1024, help="0 skips the backlog run")
    p.add_argument("--db-prefix", default="bench", help="names of the databases made (and dropped)")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--agent-root", help="run the agent of this checkout instead (the rest stays this one's)")
    a = p.parse_args()
    global DB_PREFIX, AGENT_ROOT
    DB_PREFIX = a.db_prefix
    AGENT_ROOT = Path(a.agent_root) if a.agent_root else ROOT
    with admin_dsn(a.dsn) as admin, tempfile.TemporaryDirectory(prefix="hypertail-bench-") as tmp:
        out = {"throughput": throughput(admin, Path(tmp), a.lines)}
        print(json.dumps(out, indent=2), flush=True)
        if not a.skip_latency:
            out["latency"] = latency(admin, Path(tmp), a.rate, a.seconds)
            print(json.dumps(out["latency"], indent=2), flush=True)
        if a.backlog_mb:
            out["backlog"] = backlog(admin, Path(tmp), a.backlog_mb)
            print(json.dumps(out["backlog"], indent=2), flush=True)


if __name__ == "__main__":
    main()
