"""The suite's own hygiene: the session-end check finds what the suite started, and only that."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import psutil
import pytest

from tests.conftest import leftover_processes
from tests.pgserver import DbServer

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = """
[database]
dsn = "postgresql://nobody@127.0.0.1:1/none"
connect_timeout_s = 1.0

[[sources]]
name = "app"
paths = ["{logs}/*.log"]

[http]
enabled = false
"""


def test_the_check_sees_an_agent_until_it_is_stopped(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(UNREACHABLE.format(logs=tmp_path))  # it retries forever: alive until stopped
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proc.pid in {p.pid for p in leftover_processes([])}
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.pid not in {p.pid for p in leftover_processes([])}


async def test_the_check_counts_the_test_server_only_if_the_suite_started_it(pg_server: DbServer) -> None:
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:  # the backend serving this connection is a child of the postmaster (while it is open)
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        try:
            postmaster: int | None = psutil.Process(backend).ppid()
        except psutil.NoSuchProcess:  # a server in a container or on another host: not ours to see
            postmaster = None
    finally:
        await conn.close()
    if postmaster is None:
        pytest.skip("the test server is not on this machine: no process of it to count")
    counted = {p.pid: p.info["cmdline"] for p in leftover_processes([])}
    if pg_server.kind == "embedded":
        assert postmaster in counted, (postmaster, counted)  # started by this session: it must stop it
    else:
        assert postmaster not in counted, counted  # e.g. TimescaleDB on port 55440, started outside the suite


def test_a_leaked_process_fails_the_session_and_is_stopped(tmp_path: Path) -> None:
    """Run a small inner suite whose test leaks an agent: the inner run fails, naming it."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    cfg = tmp_path / "leak.toml"
    cfg.write_text(UNREACHABLE.format(logs=tmp_path))
    (tmp_path / "test_leak.py").write_text(
        "import subprocess, sys\n\n"
        "def test_leaks() -> None:\n"
        f"    subprocess.Popen([sys.executable, '-m', 'agent.cli', 'run', '--config', {str(cfg)!r}],\n"
        "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        inner = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q",
             "--basetemp", str(tmp_path / "inner"), "test_leak.py"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
        assert inner.returncode == 1, inner.stdout + inner.stderr
        assert "1 passed" in inner.stdout and "leftover processes" in inner.stdout
        assert str(cfg) in inner.stdout
        assert not [p for p in _running_with(str(cfg))], "the check did not stop what it reported"
    finally:
        for p in _running_with(str(cfg)):
            with contextlib.suppress(psutil.Error):
                p.kill()


def _running_with(arg: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if arg in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out
