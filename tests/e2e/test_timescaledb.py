"""The ``hypertail`` commands on TimescaleDB as a new user meets it (issue 9, acceptance).

* ``migrate`` three times, then ``run`` twice in a row, on the server under test (hypertables with
  compression on, the shipped default) and over a first-release schema: exact every time.
* A PostgreSQL 15 cluster where TimescaleDB's files are installed but ``shared_preload_libraries``
  does not name it (the state right after ``apt install``): ``auto`` falls back to plain mode
  with a warning naming the postgresql.conf line, ``require`` exits 1 with that message, and no
  command prints a traceback.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.harness import Agent, assert_exact, dead_letters, free_port, seqs, span_line

PG15 = Path("/usr/lib/postgresql/15")
FIRST_RELEASE = (Path(__file__).parent.parent / "integration" / "fixtures" / "schema_first_release.sql").read_text()
PRELOAD_LINE = "shared_preload_libraries = 'timescaledb'"


def hypertail(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(dsn)
    yield c
    await c.close()


def _migrate_thrice_then_run_twice(agent: Agent, logs: Path, dsn: str) -> None:
    for _ in range(3):
        p = hypertail("migrate", "--dsn", dsn)
        assert p.returncode == 0, p.stdout + p.stderr
        no_traceback(p)
    for run, seq_range in enumerate((range(0, 300), range(300, 600))):
        with (logs / "app.log").open("ab") as fh:
            fh.write(b"".join(span_line(s) for s in seq_range))
        agent.start("--exit-when-idle", "--idle-grace", "0.5")
        assert agent.wait(120) == 0, agent.output()
        assert "db.retry" not in agent.output() and "db.stalled" not in agent.output(), f"run {run}"


async def test_migrate_thrice_then_run_twice_is_exact(agent: Agent, logs: Path, dsn: str,
                                                       db: asyncpg.Connection) -> None:
    _migrate_thrice_then_run_twice(agent, logs, dsn)
    assert_exact(await seqs(db), 600)
    assert await dead_letters(db) == []


async def test_the_same_over_a_first_release_schema(tmp_path: Path, logs: Path, empty_dsn: str) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute("SET client_min_messages = warning")
        await conn.execute(FIRST_RELEASE)
        agent = Agent(workdir=tmp_path, dsn=empty_dsn, logs=logs)
        try:
            _migrate_thrice_then_run_twice(agent, logs, empty_dsn)
        finally:
            agent.stop_quietly()
        assert_exact(await seqs(conn), 600)
        assert await dead_letters(conn) == []
    finally:
        await conn.close()


# ---- installed but not preloaded --------------------------------------------------------------
@contextlib.contextmanager
def _unpreloaded_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL 15 cluster without TimescaleDB in shared_preload_libraries."""
    base = Path(tempfile.mkdtemp(prefix="ht-unpreloaded-", dir="/var/tmp"))
    data, port = base / "data", free_port()
    owner = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    as_owner = ["runuser", "-u", owner, "--"] if os.geteuid() == 0 else []
    shutil.chown(base, owner)
    try:
        subprocess.run([*as_owner, str(PG15 / "bin/initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                       check=True, stdout=subprocess.DEVNULL)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n")
        subprocess.run([*as_owner, str(PG15 / "bin/pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "start"],
                       check=True, stdout=subprocess.DEVNULL)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*as_owner, str(PG15 / "bin/pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def unpreloaded() -> Iterator[str]:
    if not (PG15 / "lib" / "timescaledb.so").exists():
        pytest.skip("needs TimescaleDB's files for PostgreSQL 15 (../shared/timescaledb/start installs them)")
    with _unpreloaded_cluster() as dsn:
        yield dsn


def test_unpreloaded_auto_falls_back_and_require_exits_1(unpreloaded: str, tmp_path: Path, logs: Path) -> None:
    auto = hypertail("migrate", "--dsn", unpreloaded)
    no_traceback(auto)
    assert auto.returncode == 0, auto.stderr
    assert "schema applied: plain PostgreSQL" in auto.stdout
    assert PRELOAD_LINE in auto.stderr and "not preloaded" in auto.stderr

    require = hypertail("migrate", "--dsn", unpreloaded, env={"HYPERTAIL_SCHEMA__TIMESCALEDB": "require"})
    no_traceback(require)
    assert require.returncode == 1
    assert len(require.stderr.strip().splitlines()) == 1
    assert "schema.timescaledb = require" in require.stderr and PRELOAD_LINE in require.stderr

    (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(50)))
    agent = Agent(workdir=tmp_path, dsn=unpreloaded, logs=logs)
    try:
        agent.start("--exit-when-idle", "--idle-grace", "0.5")
        assert agent.wait(120) == 0, agent.output()
        assert "db.timescaledb_unavailable" in agent.output() and PRELOAD_LINE in agent.output()
        agent.env = {"HYPERTAIL_SCHEMA__TIMESCALEDB": "require"}
        agent.start("--exit-when-idle")
        assert agent.wait(120) == 1
        no_traceback(subprocess.CompletedProcess([], 1, agent.output(), ""))
        assert "schema.timescaledb = require" in agent.output()
    finally:
        agent.stop_quietly()
