"""Shared fixtures: one database server per session, one fresh database per test."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from hypothesis import settings

from agent.sink.status import recreate_database
from tests.pgserver import DbServer, drop_database, start_test_server

# CI gates a merge: it replays a fixed set of generated examples so that a red run means a
# regression, not a new example drawn by chance (which a developer's random runs still find).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_SQL = (ROOT / "schema.sql").read_text()
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[DbServer]:
    """The session's PostgreSQL (or TimescaleDB) server."""
    server = start_test_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def empty_dsn(pg_server: DbServer) -> AsyncIterator[str]:
    """DSN of a fresh, empty database (no schema applied), dropped after the test."""
    name = f"ht_{os.getpid()}_{next(_counter)}"
    await recreate_database(pg_server.admin_dsn, name)
    try:
        yield pg_server.dsn_for(name)
    finally:
        if pg_server.restartable:
            pg_server.start()  # a test may have left the server stopped
        await drop_database(pg_server.admin_dsn, name)


@pytest.fixture
async def dsn(empty_dsn: str) -> str:
    """DSN of a fresh database with schema.sql applied."""
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute("SET client_min_messages = warning")
        async with conn.transaction():  # the job scheduler sees the policies only once unscheduled
            await conn.execute(SCHEMA_SQL)
            await pause_policies(conn)
    finally:
        await conn.close()
    return empty_dsn


async def pause_policies(conn: asyncpg.Connection) -> None:
    """On TimescaleDB, unschedule this database's compression and retention jobs.

    Tests write fixed timestamps (many from 2024, far outside the 90-day retention), and the
    background scheduler would drop those chunks at a moment of its choosing. Tests that are about
    the policies run them when they choose, with ``CALL run_job(id)``; the agent re-applying the
    schema keeps a paused job paused (``if_not_exists``). Run in the transaction that creates the
    schema, no job ever starts; run after it, a job may already be running, and is ended.
    """
    if await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
        await conn.execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
            "WHERE hypertable_schema = 'observability'"
        )
        await _end_running_jobs(conn)


_RUNNING_JOBS = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND backend_type LIKE '% Policy [%]' AND pid <> pg_backend_pid()
"""


async def _end_running_jobs(conn: asyncpg.Connection) -> None:
    """Unscheduling does not stop a job the scheduler started in the moment after the schema
    created it. Such a job (a retention job dropping an old chunk) deadlocked with a test's
    INSERT in CI, so it is terminated, and the test starts once it is gone."""
    for _ in range(200):
        pids = [r["pid"] for r in await conn.fetch(_RUNNING_JOBS)]
        if not pids:
            return
        await conn.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
        await asyncio.sleep(0.05)
    raise AssertionError(f"TimescaleDB jobs still running in the test database: {pids}")


async def _connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection to the per-test database (schema applied), closed afterwards."""
    c = await asyncpg.connect(dsn)
    try:
        yield c
    finally:
        await c.close()


# Two independent connections to the same database; the second serves concurrency and locking tests.
conn = pytest.fixture(_connection, name="conn")
conn2 = pytest.fixture(_connection, name="conn2")


# --- Leftover processes ---------------------------------------------------------------------
# Every server, agent or writer process a test starts must be stopped by that test, also on
# failure: one leaked `postgres -D .../pytest-of-root/...` per run piles up on a developer's
# machine. The suite marks its environment at start; whatever it spawns inherits the mark (pg_ctl
# daemonises postgres away from the process tree, but its environment keeps the mark). At the
# end, a postgres, pgbouncer or hypertail process that carries the mark, descends from this
# process or names this session's temp folder fails the run, and is then stopped. A server
# started outside the suite (HYPERTAIL_TEST_DSN, e.g. TimescaleDB on port 55440) has none of these.
SESSION_MARK = "HYPERTAIL_TEST_SESSION"


_SESSION_TEMP: list[str] = []  # this session's pytest temp folder, once a test has used one


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ[SESSION_MARK] = f"{os.getpid()}-{os.urandom(6).hex()}"


@pytest.fixture(scope="session", autouse=True)
def _session_temp(tmp_path_factory: pytest.TempPathFactory) -> None:
    _SESSION_TEMP.append(str(tmp_path_factory.getbasetemp()))


def _is_watched_kind(proc: psutil.Process) -> bool:
    name, cmdline = proc.info["name"] or "", proc.info["cmdline"] or []
    if name.startswith(("postgres", "pgbouncer")) or "hypertail" in name:
        return True
    return any(arg in ("agent.cli", "agent.demo.app") or arg.endswith("/hypertail") for arg in cmdline[:3])


def _started_by_suite(proc: psutil.Process, mark: str, roots: list[str], ours: set[int]) -> bool:
    if proc.pid in ours:
        return True
    if any(root in arg for arg in proc.info["cmdline"] or [] for root in roots):
        return True
    try:
        return proc.environ().get(SESSION_MARK) == mark
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def leftover_processes(roots: list[str]) -> list[psutil.Process]:
    """Live postgres/pgbouncer/hypertail processes this session started (outermost ones only)."""
    mark = os.environ.get(SESSION_MARK, "")
    me = psutil.Process()
    ours = {p.pid for p in me.children(recursive=True)}
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        if proc.pid == me.pid or proc.info["status"] == psutil.STATUS_ZOMBIE or not _is_watched_kind(proc):
            continue
        if _started_by_suite(proc, mark, roots, ours):
            found[proc.pid] = proc
    return [p for p in found.values() if _safe_ppid(p) not in found]


def _safe_ppid(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.Error:
        return None


def _stop(procs: list[psutil.Process]) -> None:
    """SIGINT asks a postmaster for a fast shutdown; anything still alive after 10 s is killed."""
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGINT if (p.info["name"] or "").startswith("postgres") else signal.SIGTERM)
    _gone, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


@pytest.hookimpl(trylast=True)  # after the session fixtures (the test server) are torn down
def pytest_sessionfinish(session: pytest.Session) -> None:
    left = leftover_processes(_SESSION_TEMP)
    if not left:
        return
    lines = [f"  pid {p.pid}: {' '.join(p.info['cmdline'] or [p.info['name'] or '?'])[:300]}" for p in left]
    report = "\n".join(["processes started by the test suite are still running (now stopped):", *lines])
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "leftover processes", red=True)
        reporter.write_line(report)
    else:
        print(report, file=sys.stderr)
    _stop(left)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
