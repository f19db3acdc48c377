"""The agent's own logging is never on the data path (issue 22): with stdout and stderr on a pipe
whose reader has gone, it keeps ingesting, counts the lines it could not log, and a SIGTERM
still drains and exits 0. And what it does say: one JSON object per stdout line, a line per
source naming its files, a warning for a glob that matches nothing, progress lines, a log level.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.e2e.harness import Agent, fetchval_sync, span_line, wait_until
from tests.e2e.test_ops import metrics

ROOT = Path(__file__).resolve().parents[2]


def _read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    """What the agent wrote on the pipe until ``marker`` appeared (we are its reader for now)."""
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} on the agent's stdout; it wrote:\n{got.decode(errors='replace')[-3000:]}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"the agent closed its stdout before {marker!r}:\n{got.decode(errors='replace')[-3000:]}"
            got += chunk
    return got


def test_closed_stdout_neither_stops_ingestion_nor_the_stop(agent: Agent, logs: Path, dsn: str) -> None:
    agent.write_config()
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(agent.config_path)],
                            stdout=w, stderr=w, cwd=ROOT)
    os.close(w)
    try:
        _read_until(r, b'"agent.ready"')
        os.close(r)  # the log collector died: every write to stdout or stderr now fails (EPIPE)
        # Lines written after the reader left, a dead letter among them (its log line is dropped).
        (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(300)) + b"{not json\n")
        wait_until(lambda: fetchval_sync(dsn, "SELECT count(*) FROM observability.spans") == 300, what="rows")
        wait_until(lambda: fetchval_sync(dsn, "SELECT count(*) FROM hypertail.dead_letters") == 1,
                   what="the dead letter")
        wait_until(lambda: metrics(agent).get("hypertail_log_lines_dropped_total{reason=write_failed}", 0) >= 1,
                   what="dropped log lines counted")
        with (logs / "app.log").open("ab") as fh:  # still ingesting after its log lines failed
            fh.write(b"".join(span_line(s) for s in range(300, 400)))
        wait_until(lambda: fetchval_sync(dsn, "SELECT count(*) FROM observability.spans") == 400, what="more rows")
        assert agent.get("/readyz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_stdout_holds_only_json_lines(agent: Agent, logs: Path) -> None:
    """docs/events.md promises one JSON object per line: watchfiles' "1 change detected" (which
    it logs at INFO through the logging module) is not one."""
    agent.start()
    wait_until(lambda: '"agent.ready"' in agent.output(), what="the agent to start")
    for n in range(3):  # appends while it runs: filesystem events wake the tailer
        with (logs / "app.log").open("ab") as fh:
            fh.write(span_line(n))
        wait_until(lambda n=n: metrics(agent).get("hypertail_rows_written_total{table=spans}") == n + 1, what="row")
    assert agent.term() == 0
    lines = agent.output().splitlines()
    assert [line for line in lines if not line.startswith("{")] == []
    assert all(isinstance(orjson.loads(line), dict) for line in lines)


def test_stdout_is_json_lines_and_says_what_it_ingests(agent: Agent, logs: Path) -> None:
    """Every stdout line is one JSON object (watchfiles' "1 change detected" is not printed), the
    start names each source's files and warns about a glob that matches nothing, progress lines
    come while there is work, and agent.stopped sums up the run."""
    (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(50)))
    agent.extra_toml = "progress_interval_s = 0.2"  # [ops] is the last table of the harness config
    agent.globs = [f"{logs}/*.log", f"{logs}/nothing-here/*.log"]
    agent.write_config()
    out, err = agent.workdir / "stdout", agent.workdir / "stderr"
    with out.open("wb") as fh, err.open("wb") as eh:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(agent.config_path)],
                                stdout=fh, stderr=eh, cwd=ROOT)
        try:
            wait_until(lambda: b'"source.files"' in out.read_bytes(), what="the start lines")
            with (logs / "app.log").open("ab") as app:  # appended while it runs: events wake the tailer
                app.write(b"".join(span_line(s) for s in range(50, 150)))
            wait_until(lambda: b'"ingest.progress"' in out.read_bytes(), what="a progress line")
            wait_until(lambda: metrics(agent).get("hypertail_rows_written_total{table=spans}") == 150, what="rows")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert err.read_bytes() == b""
    lines = out.read_bytes().splitlines()
    events = [orjson.loads(line) for line in lines]  # raises on any line that is not JSON
    assert all(isinstance(e, dict) and "event" in e for e in events)
    by_name = {e["event"]: e for e in events}
    files = by_name["source.files"]
    assert (files["source"], files["files"], files["paths"]) == ("app", 1, [str(logs / "app.log")])
    miss = by_name["source.no_match"]
    assert miss["level"] == "warning" and miss["glob"] == f"{logs}/nothing-here/*.log"
    assert (miss["folder"], miss["folder_exists"]) == (f"{logs}/nothing-here", False)
    progress = [e for e in events if e["event"] == "ingest.progress"]
    assert progress and all({"lines", "lines_per_s", "rows", "dead_letters", "bytes_behind"} <= set(p)
                            for p in progress)
    assert sum(p["rows"].get("spans", 0) for p in progress) <= 150
    stopped = by_name["agent.stopped"]
    assert (stopped["lines"], stopped["rows"], stopped["dead_letters"]) == (150, {"spans": 150}, 0)
    assert "batch.committed" not in by_name  # debug: not at the default level


def test_log_level_from_the_flag_and_the_environment(agent: Agent, logs: Path) -> None:
    (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(10)))
    agent.start("--exit-when-idle", "--idle-grace", "0.3", "--log-level", "debug")
    assert agent.wait(60) == 0, agent.output()
    assert '"batch.committed"' in agent.output()
    agent.env = {"HYPERTAIL_AGENT__LOG_LEVEL": "warning"}
    with (logs / "app.log").open("ab") as fh:
        fh.write(span_line(10))
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(60) == 0, agent.output()
    levels = {orjson.loads(line)["level"] for line in agent.output().splitlines()}
    assert levels <= {"warning"}  # none below (a server without TimescaleDB warns so, that is all)
