"""The embedded default's lifecycle: it keeps running, says so, and can be seen, reached and stopped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil
import pytest

from agent.cli import main
from tests.e2e.harness import span_line

DEMO = ("demo", "--chats", "3", "--documents", "2")


def ht(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``hypertail ARGS`` with ``agent.data_dir`` set (as a user's shell would run it)."""
    full_env = {**os.environ, "HYPERTAIL_AGENT__DATA_DIR": str(data_dir), **env}
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=300)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    out, err = result.stdout[-3000:], result.stderr[-3000:]
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in result.stderr
    return result


def demo_counts(stdout: str) -> dict[str, tuple[int, int]]:
    """{table: (rows this run, rows in total)} from the demo's summary."""
    return {t: (int(a), int(b)) for t, a, b in re.findall(r"observability\.(\w+)\s+(\d+)\s+(\d+)", stdout)}


def status(data_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(ok(ht("embedded", "status", "--json", data_dir=data_dir)).stdout)
    return result


def test_demo_then_status_psql_stop_and_demo_again(embedded_dir: Path) -> None:
    pgdata = embedded_dir / "pgdata"
    first = ok(ht(*DEMO, data_dir=embedded_dir))
    last = first.stdout.strip().splitlines()[-1]
    assert "keeps running" in last and str(pgdata) in last
    assert f"hypertail embedded stop --data-dir {embedded_dir}" in last
    assert "hypertail embedded psql -d hypertail_demo" in last
    spans_new, spans_total = demo_counts(first.stdout)["spans"]
    assert spans_new == spans_total > 0

    st = status(embedded_dir)
    assert st["state"] == "running" and psutil.pid_exists(st["pid"])
    assert st["data_directory"] == str(pgdata) and st["size_bytes"] > 0
    assert st["version"].startswith("PostgreSQL ") and st["data_version"]
    human = ok(ht("embedded", "status", data_dir=embedded_dir)).stdout
    assert f"running (pid {st['pid']})" in human and str(pgdata) in human

    psql = ok(ht("embedded", "psql", "-d", "hypertail_demo", "-c", "select count(*) from observability.spans",
                 "--", "-A", "-t", data_dir=embedded_dir))
    assert psql.stdout.strip() == str(spans_total)
    dsn = ok(ht("embedded", "dsn", "-d", "hypertail_demo", data_dir=embedded_dir)).stdout.strip()
    assert asyncpg_count(dsn) == spans_total

    stop = ok(ht("embedded", "stop", data_dir=embedded_dir))
    assert f"pid {st['pid']}" in stop.stdout
    assert not psutil.pid_exists(st["pid"])
    after = status(embedded_dir)
    assert (after["state"], after["pid"], after["dsn"]) == ("stopped", None, None)
    again = ok(ht("embedded", "stop", data_dir=embedded_dir))
    assert "not running" in again.stderr

    second = ok(ht(*DEMO, data_dir=embedded_dir))
    assert demo_counts(second.stdout)["spans"] == (spans_new, 2 * spans_total)  # the earlier rows are there
    assert status(embedded_dir)["state"] == "running"


def asyncpg_count(dsn: str) -> int:
    import asyncio

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM observability.spans"))
        finally:
            await conn.close()

    return asyncio.run(count())


def test_keep_running_false_stops_only_the_server_it_started(embedded_dir: Path) -> None:
    off = {"HYPERTAIL_AGENT__EMBEDDED_KEEP_RUNNING": "false"}
    first = ok(ht(*DEMO, data_dir=embedded_dir, **off))
    assert "was stopped (agent.embedded_keep_running = false)" in first.stdout.strip().splitlines()[-1]
    assert status(embedded_dir)["state"] == "stopped"

    ok(ht("embedded", "start", data_dir=embedded_dir))
    pid = status(embedded_dir)["pid"]
    second = ok(ht(*DEMO, data_dir=embedded_dir, **off))
    assert "already running, so it is left running" in second.stdout
    assert status(embedded_dir)["pid"] == pid  # someone else's server: not stopped from under them
    assert demo_counts(second.stdout)["spans"][1] == 2 * demo_counts(first.stdout)["spans"][0]


def write_run_config(tmp_path: Path, logs: Path, keep_running: bool, data_dir: Path) -> Path:
    cfg = tmp_path / f"run-{keep_running}.toml"
    cfg.write_text(f"""
[[sources]]
name = "app"
paths = ["{logs}/*.log"]

[tail]
rescan_interval_ms = 100

[batch]
max_age_ms = 50

[agent]
id = "embedded-run"
data_dir = "{data_dir}"
embedded_keep_running = {str(keep_running).lower()}

[http]
enabled = false

[ops]
rollup_enabled = false
""")
    return cfg


def events(stdout: str) -> list[str]:
    return [orjson.loads(line)["event"] for line in stdout.splitlines() if line.startswith("{")]


def test_run_says_at_start_and_stops_when_asked_without_losing_rows(tmp_path: Path, embedded_dir: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(50)))
    keep = ok(ht("run", "--config", str(write_run_config(tmp_path, logs, True, embedded_dir)), "--exit-when-idle",
                 "--idle-grace", "0.3", data_dir=embedded_dir))
    assert "keeps running in the background" in keep.stderr.splitlines()[0]
    assert "db.embedded" in events(keep.stdout) and "db.embedded_stopped" not in events(keep.stdout)
    assert status(embedded_dir)["state"] == "running"

    ok(ht("embedded", "stop", data_dir=embedded_dir))
    with (logs / "app.log").open("ab") as fh:
        fh.write(b"".join(span_line(s) for s in range(50, 80)))
    off = ok(ht("run", "--config", str(write_run_config(tmp_path, logs, False, embedded_dir)), "--exit-when-idle",
                "--idle-grace", "0.3", data_dir=embedded_dir))
    assert "is stopped when this command ends" in off.stderr.splitlines()[0]
    assert events(off.stdout)[-1] == "db.embedded_stopped"
    assert status(embedded_dir)["state"] == "stopped"
    dsn = ok(ht("embedded", "dsn", data_dir=embedded_dir)).stdout.strip()
    assert asyncpg_count(dsn) == 80  # both runs' rows survived the clean stops


def test_stop_and_status_when_nothing_was_ever_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "never"
    assert main(["embedded", "stop", "--data-dir", str(data)]) == 0
    assert "not running" in capsys.readouterr().err
    assert main(["embedded", "status", "--json", "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "absent"
    assert not (data / "pgdata").exists()  # looking did not create a server


def test_psql_missing_prints_how_to_connect(embedded_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import agent.embedded

    empty = tmp_path / "no-bin"
    empty.mkdir()
    monkeypatch.setattr(agent.embedded, "_bundled_bin", lambda: empty)
    monkeypatch.setenv("PATH", str(empty))
    assert main(["embedded", "psql", "--data-dir", str(embedded_dir), "-c", "select 1"]) == 1
    err = capsys.readouterr().err
    assert "psql is not installed" in err and f"host={embedded_dir / 'pgdata'}" in err


def test_a_bad_keep_running_value_is_a_config_error(tmp_path: Path) -> None:
    bad = ht(*DEMO, data_dir=tmp_path / "data", HYPERTAIL_AGENT__EMBEDDED_KEEP_RUNNING="sometimes")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "agent.embedded_keep_running" in bad.stderr and "HYPERTAIL_AGENT__EMBEDDED_KEEP_RUNNING" in bad.stderr
    assert not (tmp_path / "data" / "pgdata").exists()  # nothing was started
