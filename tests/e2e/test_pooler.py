"""Many sidecars through a real PgBouncer in transaction pooling (issue 12).

Eight agents, each with its own live writer, share a PgBouncer whose pool has two server
connections, so every agent's transactions run on whichever server connection is free. The
agents hold no session state (no named prepared statements, no temporary tables, no session
SET, transaction-scoped locks only), so: the data ends exact, and not one ``db.stalled`` or
``db.retry`` is logged, also across a ``kill -9`` and restart of one agent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest

from tests import pgbouncer
from tests.e2e.harness import Agent, fetchval_sync, seqs, span_line, wait_until
from tests.pgserver import DbServer

AGENTS = 8
PER_AGENT = 600  # units per writer: a span each, a trace (start + end) every 10, a chat message twice every 5
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def bouncer(pg_server: DbServer) -> Iterator[pgbouncer.PgBouncer]:
    if not pgbouncer.available():
        pytest.fail("pgbouncer is not installed: `apt-get install pgbouncer` (.ci/run does)")
    b = pgbouncer.start(pg_server.admin_dsn, pool_size=2)
    try:
        yield b
    finally:
        b.stop()


def unit_lines(agent: int, n: int) -> bytes:
    """Unit ``n`` of writer ``agent``: one span, plus trace start/end records and a repeated chat id."""
    seq = agent * 100_000 + n
    out = [span_line(seq)]
    if n % 10 == 0:
        trace_id = f"{0xABC0000000 + seq:032x}"
        started = (T0 + dt.timedelta(seconds=seq)).isoformat()
        out.append(orjson.dumps({"record_type": "trace", "trace_id": trace_id, "name": "chat", "status": "in_progress",
                                 "started_at": started, "timestamp": started}) + b"\n")
        out.append(orjson.dumps({"record_type": "trace", "trace_id": trace_id, "name": "chat", "status": "completed",
                                 "started_at": started, "timestamp": started, "duration_ms": 42}) + b"\n")
    if n % 5 == 0:
        msg = {"record_type": "chat_message", "id": str(uuid.UUID(int=seq)), "role": "user", "content": f"m{seq}",
               "timestamp": (T0 + dt.timedelta(milliseconds=seq)).isoformat()}
        out.extend([orjson.dumps(msg) + b"\n"] * 2)  # the app logged it twice
    return b"".join(out)


def write_live(path: Path, agent: int, stop_at: int, pause: float) -> threading.Thread:
    def run() -> None:
        with path.open("ab", buffering=0) as fh:
            for n in range(stop_at):
                fh.write(unit_lines(agent, n))
                if n % 50 == 0:
                    time.sleep(pause)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def server_connections(admin_dsn: str, database: str) -> int:
    return int(fetchval_sync(admin_dsn, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database))


async def test_eight_agents_through_pgbouncer_exact_and_quiet(
    tmp_path: Path, dsn: str, pg_server: DbServer, bouncer: pgbouncer.PgBouncer
) -> None:
    database = urlsplit(dsn).path.lstrip("/")
    via = bouncer.dsn_for(database)
    agents: list[Agent] = []
    writers: list[threading.Thread] = []
    try:
        for i in range(AGENTS):
            logs = tmp_path / f"logs{i}"
            logs.mkdir()
            # The rollup runs too, every second, under its transaction-scoped advisory lock.
            a = Agent(workdir=tmp_path, dsn=via, logs=logs, agent_id=f"pooled-{i}",
                      env={"HYPERTAIL_OPS__ROLLUP_ENABLED": "true", "HYPERTAIL_OPS__ROLLUP_INTERVAL_S": "1"})
            a.start()
            agents.append(a)
            writers.append(write_live(logs / "app.log", i, PER_AGENT, pause=0.02))
        for a in agents:
            wait_until(lambda a=a: '"event":"agent.ready"' in a.output(), timeout=90, what=f"{a.agent_id} ready")
        victim = agents[3]
        victim.kill9()  # mid-stream, with its writer still appending
        victim.start()
        wait_until(lambda: '"event":"agent.ready"' in victim.output(), timeout=90, what="the restarted agent ready")
        for w in writers:
            w.join(timeout=120)
        for a in agents:
            assert a.term() == 0, a.output()
        # Everything the writers wrote is committed; once more from the checkpoints, to be sure.
        for a in agents:
            a.start("--exit-when-idle", "--idle-grace", "0.5")
        for a in agents:
            assert a.wait(120) == 0, a.output()
    finally:
        for a in agents:
            a.stop_quietly()
    assert server_connections(pg_server.admin_dsn, database) <= 2 + 1  # the pool, and our own query
    conn = await asyncpg.connect(dsn)
    try:
        got = await seqs(conn)
        expected = {i * 100_000 + n for i in range(AGENTS) for n in range(PER_AGENT)}
        assert set(got) == expected and all(c == 1 for c in got.values()), "spans not exact"
        traces = await conn.fetch("SELECT status, duration_ms FROM observability.traces")
        assert len(traces) == AGENTS * PER_AGENT // 10
        assert {(r["status"], r["duration_ms"]) for r in traces} == {("completed", 42)}
        chats = await conn.fetchval("SELECT count(*) FROM observability.chat_messages")
        assert chats == AGENTS * PER_AGENT // 5
        assert await conn.fetchval("SELECT count(*) FROM hypertail.dead_letters") == 0
    finally:
        await conn.close()
    for a in agents:
        for run in range(1, a.runs + 1):
            out = (a.workdir / f"{a.agent_id}.{run}.out").read_text(errors="replace")
            assert '"event":"db.stalled"' not in out and '"event":"db.retry"' not in out, (a.agent_id, run, out[-3000:])


def test_migrate_through_the_pooler(empty_dsn: str, bouncer: pgbouncer.PgBouncer) -> None:
    database = urlsplit(empty_dsn).path.lstrip("/")
    p = subprocess.run([sys.executable, "-m", "agent.cli", "migrate", "--dsn", bouncer.dsn_for(database)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "schema applied" in p.stdout and "Traceback" not in p.stderr


async def test_an_agent_holds_two_server_connections(agent: Agent, logs: Path, dsn: str) -> None:
    """Ingest on one; ping, provider_sync_status and the rollup take turns on the other."""
    database = urlsplit(dsn).path.lstrip("/")
    agent.env = {"HYPERTAIL_OPS__ROLLUP_ENABLED": "true", "HYPERTAIL_OPS__ROLLUP_INTERVAL_S": "0.5"}
    (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(2000)))
    agent.start()
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "observer"})
    try:
        wait_until(lambda: '"event":"rollup.done"' in agent.output(), timeout=60, what="a rollup run")
        seen = set()
        for _ in range(40):  # ~4 s: several pings, sync reports and rollups
            n = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'hypertail'",
                database)
            seen.add(int(n))
            await asyncio.sleep(0.1)
        assert max(seen) == 2, seen
        assert len(await seqs(conn)) == 2000
    finally:
        await conn.close()
        agent.stop_quietly()


async def test_stop_through_pgbouncer_while_a_job_waits_on_a_lock(
    tmp_path: Path, dsn: str, bouncer: pgbouncer.PgBouncer
) -> None:
    """Through the pooler, the status report blocks on a lock another session holds; SIGTERM
    still drains and exits 0 while the lock is held, without waiting on a CancelRequest."""
    logs = tmp_path / "logs"
    logs.mkdir()
    a = Agent(workdir=tmp_path, dsn=bouncer.dsn_for(urlsplit(dsn).path.lstrip("/")), logs=logs, agent_id="locked")
    a.start()
    try:
        wait_until(lambda: '"event":"agent.ready"' in a.output(), timeout=90, what="ready")
        (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(300)))
        count = "SELECT count(*) FROM observability.spans"
        wait_until(lambda: fetchval_sync(dsn, count) == 300, timeout=60, what="the rows")
        db = await asyncpg.connect(dsn)
        try:
            async with db.transaction():
                await db.execute("LOCK TABLE observability.provider_sync_status IN ACCESS EXCLUSIVE MODE")
                await asyncio.sleep(1.0)  # the agent's next status report now waits on the lock
                code = await asyncio.to_thread(a.term)
        finally:
            await db.close()
        out = a.output()
        assert code == 0, out
        assert '"event":"agent.stopped"' in out and "agent.shutdown_stuck" not in out, out
    finally:
        a.stop_quietly()
