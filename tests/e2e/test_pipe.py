"""The ``hypertail`` process on real files against the real database: exactly once, always.

Every line carries a unique ``seq``. The oracle after the agent drains: rows == N, no
duplicates, none missing, exactly the expected dead letters, and checkpoints at the byte length
of the complete lines.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from tests.e2e.harness import (
    Agent,
    assert_exact,
    checkpoints,
    count_sync,
    dead_letters,
    seqs,
    span_line,
    wait_until,
)
from tests.pgserver import DbServer


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(dsn)
    yield c
    await c.close()


def write_lines(path: Path, seqs_: range, *, partial: bytes = b"") -> None:
    with path.open("ab") as fh:
        fh.write(b"".join(span_line(s) for s in seqs_) + partial)



async def test_backfill_exact_and_exit_when_idle(agent: Agent, logs: Path, db: asyncpg.Connection) -> None:
    (logs / "sub").mkdir()
    write_lines(logs / "a.log", range(0, 3000))
    write_lines(logs / "sub" / "b.log", range(3000, 5000))
    (logs / "c.log").write_bytes(b'{"event": "plain app log", "level": "info"}\nnot json at all\n')
    agent.start("--exit-when-idle", "--idle-grace", "0.5")
    assert agent.wait(120) == 0, agent.output()
    assert_exact(await seqs(db), 5000)
    dls = await dead_letters(db)
    assert [(Path(d["path"]).name, d["byte_offset"]) for d in dls] == [("c.log", 44)]
    assert dls[0]["reason"]
    sizes = {str(p): p.stat().st_size for p in logs.rglob("*.log")}
    assert await checkpoints(db) == sizes


async def test_sigterm_drains_and_partial_line_is_finished_after_restart(
    agent: Agent, logs: Path, db: asyncpg.Connection
) -> None:
    f = logs / "app.log"
    fourth = span_line(3)
    write_lines(f, range(3), partial=fourth[:25])
    agent.start()
    wait_until(lambda: count_sync(agent.dsn) == 3, what="three rows")
    t0 = time.monotonic()
    assert agent.term() == 0, agent.output()
    assert time.monotonic() - t0 < 15
    assert_exact(await seqs(db), 3)
    assert (await checkpoints(db))[str(f)] == len(b"".join(span_line(s) for s in range(3)))
    with f.open("ab") as fh:
        fh.write(fourth[25:])
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(60) == 0, agent.output()
    assert_exact(await seqs(db), 4)
    assert await dead_letters(db) == []


async def test_kill9_during_copy_then_restart(agent: Agent, logs: Path, db: asyncpg.Connection) -> None:
    await db.execute("""
        CREATE FUNCTION slow() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$
        LANGUAGE plpgsql;
        CREATE TRIGGER slow BEFORE INSERT ON observability.spans FOR EACH STATEMENT EXECUTE FUNCTION slow();
    """)
    write_lines(logs / "app.log", range(20000))
    agent.start()
    wait_until(lambda: 0 < count_sync(agent.dsn) < 20000, timeout=60, what="some rows committed")
    agent.kill9()
    await db.execute("DROP TRIGGER slow ON observability.spans")
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(120) == 0, agent.output()
    assert_exact(await seqs(db), 20000)


async def test_kill9_right_after_commit_then_restart(agent: Agent, logs: Path, db: asyncpg.Connection) -> None:
    write_lines(logs / "app.log", range(5000))
    agent.env = {"HYPERTAIL_TEST_KILL_AFTER_COMMITS": "1"}
    agent.start()
    assert agent.wait(60) == -9, agent.output()
    first = await seqs(db)
    assert 0 < len(first) <= 5000
    agent.env = {}
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(120) == 0, agent.output()
    assert_exact(await seqs(db), 5000)


class Writer(threading.Thread):
    """Appends span lines at a steady rate, rotating the file now and then (rename + create)."""

    def __init__(self, path: Path, n: int, rate: float, rotate_every: int = 0) -> None:
        super().__init__(daemon=True)
        self.path, self.n, self.rate, self.rotate_every = path, n, rate, rotate_every

    def run(self) -> None:
        t0 = time.monotonic()
        fh = self.path.open("ab")
        rotations = 0
        for seq in range(self.n):
            fh.write(span_line(seq))
            fh.flush()
            if self.rotate_every and seq and seq % self.rotate_every == 0:
                fh.close()
                rotations += 1
                self.path.rename(self.path.with_name(f"{self.path.stem}.{rotations}.log"))
                fh = self.path.open("ab")
            ahead = t0 + (seq + 1) / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        fh.close()


async def test_random_kill9_cycles_while_writing(agent: Agent, logs: Path, db: asyncpg.Connection) -> None:
    rng = random.Random(20261124)
    n = 50_000
    writer = Writer(logs / "app.log", n, rate=2000, rotate_every=12_000)
    writer.start()
    for _ in range(20):
        agent.start()
        time.sleep(rng.uniform(0.3, 1.4))
        agent.kill9()
    writer.join()
    agent.start("--exit-when-idle", "--idle-grace", "1.0")
    assert agent.wait(180) == 0, agent.output()
    assert_exact(await seqs(db), n)
    assert await dead_letters(db) == []


async def test_two_agents_on_the_same_files(tmp_path: Path, logs: Path, dsn: str, db: asyncpg.Connection) -> None:
    write_lines(logs / "a.log", range(0, 20000))
    write_lines(logs / "b.log", range(20000, 30000))
    a = Agent(workdir=tmp_path, dsn=dsn, logs=logs, agent_id="agent-a")
    b = Agent(workdir=tmp_path, dsn=dsn, logs=logs, agent_id="agent-b")
    try:
        a.start("--exit-when-idle", "--idle-grace", "1.0")
        b.start("--exit-when-idle", "--idle-grace", "1.0")
        assert a.wait(120) == 0, a.output()
        assert b.wait(120) == 0, b.output()
    finally:
        a.stop_quietly()
        b.stop_quietly()
    assert_exact(await seqs(db), 30000)


async def test_retryable_errors_and_statement_timeout(agent: Agent, logs: Path, db: asyncpg.Connection) -> None:
    await db.execute("""
        CREATE SEQUENCE flaky_seq;
        CREATE FUNCTION flaky() RETURNS trigger AS $$
        DECLARE n int := nextval('flaky_seq');
        BEGIN
            IF n = 1 THEN RAISE EXCEPTION 'serialization' USING ERRCODE = '40001'; END IF;
            IF n = 2 THEN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END IF;
            IF n = 3 THEN PERFORM pg_sleep(2); END IF;  -- beyond the statement timeout
            IF n = 4 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER flaky BEFORE INSERT ON observability.spans FOR EACH STATEMENT EXECUTE FUNCTION flaky();
    """)
    agent.env = {"HYPERTAIL_DATABASE__STATEMENT_TIMEOUT_MS": "500"}
    write_lines(logs / "app.log", range(2000))
    agent.start("--exit-when-idle", "--idle-grace", "0.5")
    assert agent.wait(120) == 0, agent.output()
    assert_exact(await seqs(db), 2000)
    assert await dead_letters(db) == []
    out = agent.output()
    assert "db.retry" in out and "40001" in out and "57014" in out


async def _restartable(pg_server: DbServer) -> None:
    if not pg_server.restartable:
        pytest.skip("stopping the server needs the embedded PostgreSQL, or HYPERTAIL_TEST_PGDATA naming the data "
                    "directory of the HYPERTAIL_TEST_DSN server")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_database_restart_mid_run(
    agent: Agent, logs: Path, db: asyncpg.Connection, pg_server: DbServer, mode: str
) -> None:
    await _restartable(pg_server)
    n = 12_000
    writer = Writer(logs / "app.log", n, rate=2000)
    writer.start()
    agent.start()
    wait_until(lambda: count_sync(agent.dsn) >= 1000, what="rows committed before the outage")
    await db.close()
    pg_server.stop(mode)
    _status, body = _wait_probe(agent, "/readyz", 503)
    assert "database unreachable" in str(body)
    assert agent.get("/livez")[0] == 200
    time.sleep(1.0)  # the outage lasts a while: the writer goes on appending into it
    pg_server.start()
    writer.join()
    wait_until(lambda: count_sync(agent.dsn) >= n, timeout=90, what="all rows after restart")
    assert _wait_probe(agent, "/readyz", 200)[0] == 200
    assert agent.term() == 0
    c = await asyncpg.connect(agent.dsn)
    try:
        assert_exact(await seqs(c), n)
    finally:
        await c.close()


async def test_database_down_at_start(agent: Agent, logs: Path, dsn: str, pg_server: DbServer) -> None:
    await _restartable(pg_server)
    write_lines(logs / "app.log", range(1000))
    pg_server.stop("fast")
    try:
        agent.start()
        assert _wait_probe(agent, "/livez", 200)[0] == 200
        status, _body = agent.get("/readyz")
        assert status == 503
        assert agent.get("/startupz")[0] == 503
    finally:
        pg_server.start()
    assert _wait_probe(agent, "/startupz", 200, timeout=60)[0] == 200
    wait_until(lambda: count_sync(dsn) == 1000, what="rows after the database came up")
    assert agent.term() == 0


def _wait_probe(agent: Agent, path: str, want: int, timeout: float = 30) -> tuple[int, object]:
    got: list[tuple[int, object]] = []

    def check() -> bool:
        try:
            got.append(agent.get(path))
        except OSError:
            return False
        return got[-1][0] == want

    wait_until(check, timeout=timeout, interval=0.1, what=f"{path} == {want}")
    return got[-1]


async def test_memory_budget_holds_while_database_is_down(
    agent: Agent, logs: Path, dsn: str, pg_server: DbServer
) -> None:
    await _restartable(pg_server)
    budget = 4 << 20
    agent.env = {"HYPERTAIL_BATCH__MEMORY_BUDGET_BYTES": str(budget)}
    agent.start()
    _wait_probe(agent, "/readyz", 200)
    assert agent.proc is not None
    baseline = psutil.Process(agent.proc.pid).memory_info().rss
    pg_server.stop("fast")
    n = 120_000  # ~40 MB of lines, ten times the budget
    write_lines(logs / "app.log", range(n))
    peak = baseline
    for _ in range(40):
        peak = max(peak, psutil.Process(agent.proc.pid).memory_info().rss)
        time.sleep(0.1)
    pg_server.start()
    wait_until(lambda: count_sync(dsn) == n, timeout=120, what="all rows after the outage")
    assert agent.term() == 0
    assert peak - baseline < 2 * budget + (8 << 20), (baseline, peak)


async def test_stop_while_a_background_job_waits_on_a_lock(
    agent: Agent, logs: Path, dsn: str, db: asyncpg.Connection
) -> None:
    """The status report blocks on a lock another session holds; SIGTERM still drains and exits
    0: the stuck job's connection is terminated, not cancelled and waited for."""
    agent.start()
    _wait_probe(agent, "/readyz", 200)
    write_lines(logs / "app.log", range(500))
    wait_until(lambda: count_sync(dsn) == 500, timeout=60, what="the rows")
    async with db.transaction():
        await db.execute("LOCK TABLE observability.provider_sync_status IN ACCESS EXCLUSIVE MODE")
        waiting_sql = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hypertail' "
                       "AND wait_event_type = 'Lock'")
        # sync_interval_ms = 200: the agent's next report soon waits on the lock
        wait_until(lambda: count_sync(dsn, waiting_sql) >= 1, timeout=30, what="a report waiting on the lock")
        write_lines(logs / "app.log", range(500, 600))  # and ingestion goes on meanwhile
        wait_until(lambda: count_sync(dsn) == 600, timeout=60, what="the rows written under the lock")
        code = await asyncio.to_thread(agent.term)  # while the lock is still held
    assert code == 0, agent.output()
    assert count_sync(dsn) == 600
    out = agent.output()
    assert '"event":"agent.stopped"' in out and "agent.shutdown_stuck" not in out, out
    # The final report also waits on the lock and fails after its 2 s: one warning. The periodic
    # report the stop terminated under it on purpose is no failure and logs none.
    assert out.count('"event":"sync.failed"') == 1, out


async def test_trace_start_end_and_duplicate_span_end_to_end(
    agent: Agent, logs: Path, db: asyncpg.Connection
) -> None:
    import orjson

    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    start = {"record_type": "trace", "trace_id": tid, "name": "chat", "status": "in_progress",
             "started_at": "2026-11-01T12:00:00+00:00", "timestamp": "2026-11-01T12:00:00+00:00",
             "operation_type": "chat"}
    end = {**start, "status": "completed", "duration_ms": 1500, "timestamp": "2026-11-01T12:00:01.5+00:00",
           "ended_at": "2026-11-01T12:00:01.5+00:00"}
    end.pop("operation_type")
    f = logs / "app.log"
    f.write_bytes(orjson.dumps(end) + b"\n" + span_line(1) + span_line(1))
    agent.start()
    wait_until(lambda: count_sync(agent.dsn) == 1, what="the span")
    with f.open("ab") as fh:
        fh.write(orjson.dumps(start) + b"\n")
    size = os.path.getsize(f)
    committed_sql = f"SELECT coalesce(max(committed_offset), 0) FROM hypertail.checkpoints WHERE path = '{f}'"
    wait_until(lambda: count_sync(agent.dsn, committed_sql) == size, what="the start record committed")
    assert agent.term() == 0
    rows = await db.fetch("SELECT status, duration_ms, operation_type FROM observability.traces")
    assert [tuple(r) for r in rows] == [("completed", 1500, "chat")]
    assert await db.fetchval("SELECT count(*) FROM observability.spans") == 1
    assert os.path.getsize(f) == (await checkpoints(db))[str(f)]
