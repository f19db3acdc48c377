"""The first hour with hypertail (issue 22): what a new user meets, one test per problem found."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import asyncpg

from agent.sink.schema import SCHEMA_LOCK_KEY
from tests.e2e.harness import Agent, fetchval_sync, span_line, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_no_sync_failure_before_the_schema_exists(tmp_path: Path, logs: Path, empty_dsn: str) -> None:
    """Item 2: on a new database the ops loop waited for nobody and reported into a table that
    startup had not created yet. Startup is held on the schema lock here until the ops loop has
    had several rounds, so the old order fails every time."""
    agent = Agent(workdir=tmp_path, dsn=empty_dsn, logs=logs)
    (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(20)))
    held = threading.Event()
    release = threading.Event()

    def hold_schema_lock() -> None:
        import asyncio

        async def run() -> None:
            conn = await asyncpg.connect(empty_dsn)
            try:
                await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
                held.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait)
                await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
            finally:
                await conn.close()

        asyncio.run(run())

    holder = threading.Thread(target=hold_schema_lock)
    holder.start()
    try:
        held.wait(30)
        agent.start("--exit-when-idle", "--idle-grace", "0.3")
        # startup waits on the lock; the ops loop (every 200 ms here) pings meanwhile
        wait_until(lambda: fetchval_sync(empty_dsn, "SELECT count(*) FROM pg_stat_activity WHERE "
                                         "application_name = 'hypertail' AND wait_event_type = 'Lock'") == 1,
                   what="startup waiting for the schema lock")
        ends: set[object] = set()  # the ends of the ops loop's report transactions, committed or not

        def rounds_seen() -> bool:
            ends.add(fetchval_sync(empty_dsn, "SELECT max(query_start) FROM pg_stat_activity WHERE application_name "
                                   "= 'hypertail' AND (query LIKE 'COMMIT%' OR query LIKE 'ROLLBACK%')"))
            return len(ends - {None}) >= 3

        wait_until(rounds_seen, what="three sync reports of the ops loop while startup waits")
    finally:
        release.set()
        holder.join(30)
    assert agent.wait(120) == 0, agent.output()
    out = agent.output()
    assert '"agent.ready"' in out and "sync.failed" not in out and '"level":"warning"' not in out, out
    assert fetchval_sync(empty_dsn, "SELECT count(*) FROM observability.spans") == 20


def test_a_port_clash_names_http_listen(agent: Agent, logs: Path) -> None:
    """Item 9: `[Errno 98] address already in use` said nothing about which setting to change."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        agent.port = taken.getsockname()[1]
        agent.start()
        code = agent.wait(60)
    out = agent.output()
    assert code == 2, out
    assert "http.listen" in out and f"127.0.0.1:{agent.port}" in out and "HYPERTAIL_HTTP__LISTEN" in out, out
    assert "Traceback" not in out


def run_cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, **kw)  # type: ignore[call-overload, no-any-return]


def run_into_closed_pipe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """``hypertail ARGS | head -0``: stdout is a pipe whose reader has already gone."""
    import os

    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "agent.cli", *args], stdout=w, stderr=subprocess.PIPE,
                              cwd=ROOT, timeout=120, env={**os.environ, **(env or {})})
    finally:
        os.close(w)


async def test_every_command_ends_quietly_when_its_reader_goes(dsn: str, conn: asyncpg.Connection,
                                                               tmp_path: Path) -> None:
    """Item 4: `trace ID | head -3`, `traces --json | head -1` and `embedded status | head -1` exited 1
    with `[Errno 32] Broken pipe`; a Unix tool exits 0 and says nothing."""
    from tests.tracedata import TRACE_ID, insert_known_trace

    await insert_known_trace(conn)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\ndsn = "{dsn}"\n[[sources]]\nname = "app"\npaths = ["{tmp_path}/*.log"]\n')
    commands = [
        ("trace", TRACE_ID, "--config", str(cfg)), ("trace", TRACE_ID, "--config", str(cfg), "--json"),
        ("traces", "--since", "3650d", "--config", str(cfg)), ("traces", "--since", "3650d", "--json",
                                                                "--config", str(cfg)),
        ("status", "--config", str(cfg)), ("status", "--json", "--config", str(cfg)),
        ("check-config", str(cfg)), ("embedded", "status", "--data-dir", str(tmp_path / "none")),
        ("--help",),
    ]
    for args in commands:
        done = run_into_closed_pipe(*args)
        assert (done.returncode, done.stderr) == (0, b""), (args, done.stderr.decode()[-2000:])
