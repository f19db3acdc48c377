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
    warnings = [line for line in out.splitlines() if '"level":"warning"' in line
                and "db.timescaledb_unavailable" not in line]  # a server without TimescaleDB says that
    assert '"agent.ready"' in out and "sync.failed" not in out and warnings == [], out
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


def ht(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``hypertail ARGS`` as a user's shell runs it, with ``agent.data_dir`` set."""
    import os

    env = {**os.environ, "HYPERTAIL_AGENT__DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def readme_commands(section: str) -> list[list[str]]:
    """The ``hypertail ...`` lines of the README's code block under ``section`` (comments dropped)."""
    import shlex

    text = (ROOT / "README.md").read_text()
    block = text[text.index(section):].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("  #", 1)[0])[1:] for line in block.splitlines() if line.startswith("hypertail ")]


def shown_trace(stdout: str) -> str:
    line = next(x for x in stdout.splitlines() if x.startswith("see it again: hypertail trace "))
    return line.split()[5]


def test_the_demo_then_the_readme(embedded_dir: Path) -> None:
    """Items 5, 8 and 9 on the demo's path: a summary without JSON warnings, one progress line in a
    pipe, the trace of this run, failed requests to find, and the README's "Look at what landed"
    commands working (or saying what to pass) after it."""
    import datetime as dt
    import json

    first = ht("demo", "--chats", "3", "--documents", "8", data_dir=embedded_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    for stream in (first.stdout, first.stderr):
        assert [x for x in stream.splitlines() if x.lstrip().startswith("{")] == [], stream
    assert "warning" not in first.stderr.lower() and "timescaledb" not in first.stderr.lower(), first.stderr
    assert first.stderr.count("ingested ") == 1 and "ingesting" not in first.stderr, first.stderr

    started = dt.datetime.now(dt.UTC)
    second = ht("demo", "--chats", "3", "--documents", "8", data_dir=embedded_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    trace_id = shown_trace(second.stdout)
    assert trace_id != shown_trace(first.stdout)  # the same seed ties the counts: the old pick was run 1's
    shown = json.loads(ht("trace", trace_id, "-d", "hypertail_demo", "--json", data_dir=embedded_dir).stdout)
    assert dt.datetime.fromisoformat(shown["started_at"]) >= started - dt.timedelta(seconds=1)

    failed = json.loads(ht("traces", "-d", "hypertail_demo", "--status", "failed", "--json",
                           data_dir=embedded_dir).stdout)
    assert len(failed) == 2 and {t["name"] for t in failed} == {"ingest_document"}  # document 3 of each run

    commands = readme_commands("### Look at what landed")
    assert len(commands) >= 3
    for args in commands:
        args = [trace_id if a == "4bf92f3577b34da6a3ce929d0e0e4736" else a for a in args]
        as_written = ht(*args, data_dir=embedded_dir)
        if as_written.returncode != 0:  # the default database is not the demo's: it must say what to pass
            assert "-d NAME" in as_written.stderr and "hypertail_demo" in as_written.stderr, as_written.stderr
            assert as_written.stderr.count("\n") == 1, as_written.stderr
        demo = ht(*args, "-d", "hypertail_demo", data_dir=embedded_dir)
        assert demo.returncode == 0 and demo.stdout.strip(), (args, demo.stderr)



def test_embedded_psql_runs_every_c(embedded_dir: Path) -> None:
    """Item 9: `embedded psql -c A -c B` ran only B."""
    psql = ht("embedded", "psql", "-c", "select 1", "-c", "select 2", "--", "-At", data_dir=embedded_dir)
    assert psql.returncode == 0 and psql.stdout.split() == ["1", "2"], psql


def test_reading_never_starts_the_embedded_server(embedded_dir: Path) -> None:
    """Item 9: `traces` silently started a stopped embedded server (or created a new, empty one)."""
    import json

    for args in (("traces",), ("trace", "4bf92f3577b34da6a3ce929d0e0e4736"), ("status",)):
        never = ht(*args, data_dir=embedded_dir)
        assert never.returncode == 1 and "hypertail embedded start" in never.stderr, never.stderr
        assert not (embedded_dir / "pgdata").exists()  # no empty cluster made to read from
    assert ht("embedded", "start", data_dir=embedded_dir).returncode == 0
    assert ht("embedded", "stop", data_dir=embedded_dir).returncode == 0
    stopped = ht("traces", data_dir=embedded_dir)
    assert stopped.returncode == 1 and "not running" in stopped.stderr, stopped.stderr
    assert json.loads(ht("embedded", "status", "--json", data_dir=embedded_dir).stdout)["state"] == "stopped"


def test_an_empty_listing_says_since_as_written(dsn: str, tmp_path: Path) -> None:
    """Item 9: `traces --since 1d` on no traces said `in the last 1 day, 0:00:00`."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\ndsn = "{dsn}"\n')
    done = run_cli("traces", "--since", "1d", "--config", str(cfg))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "no traces started in the last 1d match\n")


def test_no_timescaledb_warning_on_the_embedded_server(embedded_dir: Path, tmp_path: Path) -> None:
    """Item 8: every command against the embedded server warned that TimescaleDB is unavailable,
    which it always is there; plain tables are no news. `require` still refuses."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(5)))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[sources]]\nname = "app"\npaths = ["{logs}/*.log"]\n[http]\nenabled = false\n'
                   "[ops]\nrollup_enabled = false\n")
    run = ht("run", "--config", str(cfg), "--exit-when-idle", "--idle-grace", "0.3", data_dir=embedded_dir)
    assert run.returncode == 0, run.stderr
    assert "timescaledb_unavailable" not in run.stdout and '"level":"warning"' not in run.stdout, run.stdout
    assert '"mode":"plain PostgreSQL"' in run.stdout
    migrate = ht("migrate", "--config", str(cfg), data_dir=embedded_dir)
    assert migrate.returncode == 0 and "warning" not in migrate.stderr, migrate.stderr
    import os

    refused = subprocess.run([sys.executable, "-m", "agent.cli", "migrate", "--config", str(cfg)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HYPERTAIL_AGENT__DATA_DIR": str(embedded_dir),
                                  "HYPERTAIL_SCHEMA__TIMESCALEDB": "require"})
    assert refused.returncode == 1 and "schema.timescaledb = require" in refused.stderr, refused.stderr
