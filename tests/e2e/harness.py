"""Run the real ``hypertail`` process on real files and check the exactly-once oracle."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def span_line(seq: int, **extra: Any) -> bytes:
    """A completed span record carrying a unique ``seq`` (kept in metadata)."""
    rec: dict[str, Any] = {
        "record_type": "span",
        "timestamp": (T0 + dt.timedelta(milliseconds=seq)).isoformat(),
        "trace_id": f"{seq + 1:032x}",
        "span_id": f"{seq + 1:016x}",
        "name": "op",
        "span_type": "llm",
        "status": "completed",
        "duration_ms": seq % 997,
        "seq": seq,
    }
    rec.update(extra)
    return orjson.dumps(rec) + b"\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Agent:
    """A ``hypertail run`` process with its own config, log file and probe port."""

    workdir: Path
    dsn: str
    logs: Path
    agent_id: str = "e2e-agent"
    extra_toml: str = ""
    source_toml: str = ""  # more keys of the [[sources]] table, e.g. app_logs = "skip"
    globs: list[str] | None = None  # the source's paths (default: every *.log below ``logs``)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.agent_id}.toml"

    def write_config(self) -> None:
        self.config_path.write_text(
            f"""
[database]
dsn = "{self.dsn}"
retry_initial_ms = 20
retry_max_ms = 300
connect_timeout_s = 2.0

[[sources]]
name = "app"
paths = {orjson.dumps(self.globs or [f"{self.logs}/**/*.log"]).decode()}
{self.source_toml}

[tail]
rescan_interval_ms = 100
rotate_grace_ms = 500

[batch]
max_age_ms = 50

[agent]
id = "{self.agent_id}"
shutdown_timeout_s = 15

[http]
listen = "127.0.0.1:{self.port}"

[ops]
sync_interval_ms = 200
rollup_enabled = false
{self.extra_toml}
"""
        )

    def start(self, *args: str) -> None:
        self.write_config()
        self.runs += 1
        out = (self.workdir / f"{self.agent_id}.{self.runs}.out").open("wb")
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config_path), *args],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )

    def output(self) -> str:
        return (self.workdir / f"{self.agent_id}.{self.runs}.out").read_text(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def term(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(60)

    def wait(self, timeout: float = 120) -> int:
        """The exit code; a process still running after ``timeout`` fails with its output's end."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.agent_id} still running after {timeout}s; its output ends:\n"
                                 + self.output()[-4000:]) from None

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=10)

    def get(self, path: str) -> tuple[int, dict[str, Any] | str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                body = r.read().decode()
                status = r.status
        except urllib.error.HTTPError as e:
            body, status = e.read().decode(), e.code
        try:
            return status, orjson.loads(body)
        except orjson.JSONDecodeError:
            return status, body


def wait_until(pred: Any, timeout: float = 60, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def count_sync(dsn: str, sql: str = "SELECT count(*) FROM observability.spans") -> int:
    """A count from synchronous code (a ``wait_until`` condition): spans, or what ``sql`` counts."""
    return int(fetchval_sync(dsn, sql))


def fetchval_sync(dsn: str, query: str, *args: Any) -> Any:
    """One value from ``dsn``, from synchronous code inside a running test coroutine: the tests
    run on an event loop already, so a short-lived loop in a thread asks the database."""
    async def q() -> Any:
        c = await asyncpg.connect(dsn)
        try:
            return await c.fetchval(query, *args)
        finally:
            await c.close()

    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(asyncio.run(q())))
    t.start()
    t.join()
    return out[0]


async def seqs(conn: asyncpg.Connection) -> Counter[int]:
    rows = await conn.fetch("SELECT (metadata->>'seq')::int AS s FROM observability.spans")
    return Counter(r["s"] for r in rows)


async def dead_letters(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM hypertail.dead_letters ORDER BY path, byte_offset"))


async def checkpoints(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT path, committed_offset FROM hypertail.checkpoints WHERE fingerprint <> ''")
    return {r["path"]: r["committed_offset"] for r in rows}


def assert_exact(got: Counter[int], n: int) -> None:
    dupes = {s: c for s, c in got.items() if c > 1}
    missing = sorted(set(range(n)) - set(got))
    extra = sorted(set(got) - set(range(n)))
    assert not dupes, f"duplicated seqs: {list(dupes.items())[:10]}"
    assert not missing, f"{len(missing)} missing seqs, first {missing[:10]}"
    assert not extra, f"unexpected seqs {extra[:10]}"


@contextlib.contextmanager
def running(agent: Agent, *args: str) -> Iterator[Agent]:
    agent.start(*args)
    try:
        yield agent
    finally:
        agent.stop_quietly()
