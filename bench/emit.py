"""Cost of one span record through agent.emit vs one INSERT per event in its own transaction;
and of one ``emit.counter``/``gauge``/``histogram`` call against ``emit.span`` (issue 26).

The baseline is the in-process pattern hypertail replaces: the application writes every event
to the database itself, one INSERT and one commit each. Both figures come from the same run;
the INSERTs go to a fresh database on an embedded PostgreSQL (or ``--dsn``).

Metrics: ns per call of each helper (no attributes, and two attributes), then the same hot loop
run for ``--activity-s`` seconds once recording a counter per event (10 series, a 1-second
interval) and once writing a span per event: lines written per second of that activity, side by
side. A span is a line per event; a counter is a line per series per interval, however many
events.

    python bench/emit.py [--spans 50000] [--inserts 2000] [--calls 500000] [--dsn postgresql://...]
    python bench/emit.py --metrics-only      # no database needed
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
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


def _timed(calls: int, fn: Callable[[int], None]) -> float:
    """Nanoseconds per call of ``fn(i)``, after a warm-up of a tenth as many calls."""
    for i in range(calls // 10):
        fn(i)
    start = time.perf_counter_ns()
    for i in range(calls):
        fn(i)
    return (time.perf_counter_ns() - start) / calls


def bench_metric_calls(calls: int) -> dict[str, float]:
    """ns per call: each metric helper bare and with two attributes, and a span for scale."""
    routes = ("/a", "/b", "/c", "/d")
    cases: dict[str, Callable[[int], None]] = {
        "emit.counter(name)": lambda i: emit.counter("hits"),
        "emit.counter(name, route=, method=)": lambda i: emit.counter("hits", route=routes[i & 3], method="GET"),
        "emit.gauge(name, v)": lambda i: emit.gauge("depth", i),
        "emit.histogram(name, v)": lambda i: emit.histogram("latency_ms", 1.0 + (i & 1023)),
        "emit.histogram(name, v, route=)":
            lambda i: emit.histogram("latency_ms", 1.0 + (i & 1023), route=routes[i & 3]),
    }
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        emit.configure(Path(tmp) / "bench.log", max_bytes=2**40)
        emit.configure_metrics(interval_s=3600)  # the flusher stays out of the timed loop
        try:
            for label, fn in cases.items():
                out[label] = _timed(calls, fn)
            out["emit.span() (with, one line each)"] = _timed(max(calls // 20, 1000), _one_span)
            assert emit.dropped() == 0
        finally:
            emit.shutdown()
            emit.configure_metrics()
    return out


def _one_span(i: int) -> None:
    with emit.span("retrieve", "retrieval", result_count=3):
        pass


def bench_activity(seconds: float) -> dict[str, tuple[float, float]]:
    """(events per second, lines written per second) of a hot loop that records each event as a
    counter of 10 series with a 1-second interval, or as a span."""
    out: dict[str, tuple[float, float]] = {}
    for label, record in (("counter per event", lambda i: emit.counter("events", shard=i % 10)),
                          ("span per event", _one_span)):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.log"
            emit.configure(path, max_bytes=2**40)
            emit.configure_metrics(interval_s=1.0)
            try:
                events, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    for i in range(1000):
                        record(i)
                    events += 1000
                elapsed = time.perf_counter() - start
            finally:
                emit.shutdown()  # writes the last partial interval too
                emit.configure_metrics()
            lines = path.read_bytes().count(b"\n")
        out[label] = (events / elapsed, lines / elapsed)
    return out


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
    parser.add_argument("--calls", type=int, default=500_000, help="calls per metric helper")
    parser.add_argument("--activity-s", type=float, default=3.0, help="seconds of each activity run")
    parser.add_argument("--metrics-only", action="store_true", help="only the metric figures (no database)")
    args = parser.parse_args()

    calls = bench_metric_calls(args.calls)
    span_ns = calls["emit.span() (with, one line each)"]
    for label, ns in calls.items():
        print(f"{label:38s} {ns:9.0f} ns/call   ({span_ns / ns:6.1f}x cheaper than a span)")
    activity = bench_activity(args.activity_s)
    for label, (events, lines) in activity.items():
        print(f"{label:38s} {events:11.0f} events/s  {lines:10.1f} lines/s")
    ratio = activity["span per event"][1] / activity["counter per event"][1]
    print(f"{'lines per second, span / counter':38s} {ratio:9.0f}x   (same run; counters: 10 series, 1 s interval)")
    if args.metrics_only:
        return

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
