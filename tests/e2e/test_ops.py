"""Operating the agent: metrics, sync status, status command, demo, secrets, the event catalogue."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from agent.ops.log import EVENTS
from tests.e2e.harness import Agent, assert_exact, seqs, span_line, wait_until
from tests.pgserver import DbServer

ROOT = Path(__file__).resolve().parents[2]


def metrics(agent: Agent) -> dict[str, float]:
    """The agent's metrics as {name{labels}: value}; empty until its HTTP server answers."""
    try:
        status, body = agent.get("/metrics")
    except OSError:
        return {}
    assert status == 200
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(str(body)):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


async def test_metrics_match_what_was_written(agent: Agent, logs: Path, dsn: str) -> None:
    (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(1500)) + b"{broken\n" + b'{"event": "x"}\n')
    agent.start()
    wait_until(lambda: metrics(agent).get("hypertail_rows_written_total{table=spans}", 0) >= 1500, what="metrics")
    wait_until(lambda: sum(v for k, v in metrics(agent).items() if k.startswith("hypertail_dead_letters_total")) == 1,
               what="dead-letter metric")
    behind = "hypertail_bytes_behind{source=app}"
    wait_until(lambda: metrics(agent).get(behind) == 0, what="bytes behind reaching 0")
    m = metrics(agent)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM observability.spans")
        dead = await conn.fetchval("SELECT count(*) FROM hypertail.dead_letters")
    finally:
        await conn.close()
    assert m["hypertail_rows_written_total{table=spans}"] == rows == 1500
    assert sum(v for k, v in m.items() if k.startswith("hypertail_dead_letters_total")) == dead == 1
    assert m["hypertail_lines_read_total{source=app}"] == 1502
    assert m["hypertail_app_log_lines_total{}"] == 0  # stored (app_logs = "store" by default), not only counted
    assert m["hypertail_rows_written_total{table=logs}"] == 1
    assert m["hypertail_batch_rows_count{}"] >= 1
    assert m["hypertail_commit_latency_seconds_count{}"] == m["hypertail_commits_total{}"]
    assert m["hypertail_seconds_since_last_commit{}"] >= 0
    assert agent.term() == 0


async def test_sync_status_shows_outage_and_recovery(agent: Agent, logs: Path, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("""
            CREATE FUNCTION refuse() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'disk full (simulated)' USING ERRCODE = '53100'; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER refuse BEFORE INSERT ON observability.spans FOR EACH STATEMENT EXECUTE FUNCTION refuse();
        """)
        (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(100)))
        agent.start()

        async def row() -> asyncpg.Record | None:
            return await conn.fetchrow(
                "SELECT * FROM observability.provider_sync_status WHERE provider_name = 'hypertail' "
                "AND entity_type = 'file'"
            )

        deadline = time.monotonic() + 30
        r = await row()
        while (r is None or r["retry_count"] < 2) and time.monotonic() < deadline:
            time.sleep(0.1)
            r = await row()
        assert r is not None and r["sync_status"] == "error" and r["retry_count"] >= 2
        assert "53100" in r["error_message"] and r["entity_id"] == f"e2e-agent:{logs / 'app.log'}"
        await conn.execute("DROP TRIGGER refuse ON observability.spans")
        deadline = time.monotonic() + 30
        while (r is None or r["sync_status"] != "synced") and time.monotonic() < deadline:
            time.sleep(0.1)
            r = await row()
        assert r is not None and (r["sync_status"], r["retry_count"], r["error_message"]) == ("synced", 0, None)
        assert r["last_synced_at"] is not None
        assert_exact(await seqs(conn), 100)
    finally:
        await conn.close()
    assert agent.term() == 0


async def test_status_json_shape(agent: Agent, logs: Path, dsn: str) -> None:
    f = logs / "app.log"
    f.write_bytes(b"".join(span_line(s) for s in range(10)) + b"not json\n")
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(60) == 0, agent.output()
    with f.open("ab") as fh:
        fh.write(span_line(10))
    out = subprocess.run([sys.executable, "-m", "agent.cli", "status", "--config", str(agent.config_path), "--json"],
                         capture_output=True, text=True, check=True).stdout
    status = json.loads(out)
    assert set(status) == {"agent_id", "generated_at", "agents", "files", "compress_after", "sources", "hypertables"}
    assert status["agent_id"] == "e2e-agent"
    [me] = status["agents"]
    assert (me["agent_id"], me["status"], me["error"], me["retries"]) == ("e2e-agent", "stopped", None, 0)
    assert me["last_commit"] is not None
    timescale = bool(status["hypertables"])
    assert {h["table"] for h in status["hypertables"]} == (
        {"traces", "spans", "chat_messages", "document_events", "logs", "metrics", "workflow_transitions",
         "metrics_aggregates"} if timescale else set())
    if timescale:
        spans = next(h for h in status["hypertables"] if h["table"] == "spans")
        assert (spans["chunk_interval"], spans["compress_after"], spans["retention"]) == ("1 day", "7 days", "90 days")
        assert spans["chunks"] >= 1
    [entry] = status["files"]
    assert set(entry) == {"source", "path", "file_key", "agent_id", "committed_offset", "size", "bytes_behind",
                          "state", "last_commit", "dead_letters_1h", "data_time", "behind_compress_after"}
    assert entry["data_time"] is not None  # the spans' time (2026-11-01), as far as committed
    assert entry["behind_compress_after"] is (None if not timescale else entry["data_time"] < _week_ago())
    assert status["sources"] == [{"source": "app", "behind_compress_after": entry["behind_compress_after"],
                                  "data_time": entry["data_time"] if entry["behind_compress_after"] else None}]
    assert entry["path"] == str(f) and entry["size"] == f.stat().st_size
    assert entry["bytes_behind"] == len(span_line(10)) and entry["state"] == "behind"
    assert entry["dead_letters_1h"] == 1
    table = subprocess.run([sys.executable, "-m", "agent.cli", "status", "--config", str(agent.config_path)],
                           capture_output=True, text=True, check=True).stdout
    assert "BEHIND" in table and str(f) in table and "agent e2e-agent: stopped" in table
    assert ("hypertables:" in table) == timescale


async def test_canary_password_never_leaks(tmp_path: Path, logs: Path, dsn: str, pg_server: DbServer) -> None:
    """Failed connections with a wrong password: the canary appears nowhere an operator looks."""
    canary = "canary-Pw-7f3a91"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP ROLE IF EXISTS ht_canary; CREATE ROLE ht_canary LOGIN PASSWORD '{canary}x'")
        await conn.execute("GRANT ALL ON SCHEMA observability, hypertail TO ht_canary")
    finally:
        await conn.close()
    await pg_server.require_password("ht_canary")
    a = Agent(workdir=tmp_path, dsn=_as_user(dsn, "ht_canary"), logs=logs,
              env={"HYPERTAIL_DATABASE__PASSWORD": canary})
    (logs / "app.log").write_bytes(span_line(1))
    a.start()
    try:
        # Until a login has really failed (not a fixed sleep: a loaded machine starts slowly).
        wait_until(lambda: "password authentication failed" in a.output(), timeout=60, what="a failed login")
        for path in ("/metrics", "/readyz", "/livez", "/startupz"):
            assert canary not in str(a.get(path)[1])
        assert a.get("/readyz")[0] == 503
    finally:
        a.stop_quietly()
    out = a.output()
    assert "password authentication failed" in out  # the failure path really ran
    assert canary not in out


def _as_user(dsn: str, user: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    p = urlsplit(dsn)
    host = p.netloc.rpartition("@")[2]
    return urlunsplit((p.scheme, f"{user}@{host}", p.path, p.query, p.fragment))


async def test_canary_password_not_in_dead_letters_or_sync_status(
    tmp_path: Path, logs: Path, dsn: str
) -> None:
    """The password of a working login never lands in logs, metrics, dead letters or sync status."""
    canary = "canary-Pw-b41c22"
    a = Agent(workdir=tmp_path, dsn=dsn, logs=logs, env={"HYPERTAIL_DATABASE__PASSWORD": canary})
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("""
            CREATE FUNCTION refuse() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '57P01'; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER refuse BEFORE INSERT ON observability.spans FOR EACH STATEMENT EXECUTE FUNCTION refuse();
        """)
        (logs / "app.log").write_bytes(span_line(1) + b"garbage\n")
        a.start()
        wait_until(lambda: "db.retry" in a.output(), what="a failed commit")
        await conn.execute("DROP TRIGGER refuse ON observability.spans")
        wait_until(lambda: int(metrics(a).get("hypertail_rows_written_total{table=spans}", 0)) == 1, what="row")
        texts = [a.output(), str(a.get("/metrics")[1]), str(a.get("/readyz")[1])]
        texts += [str(tuple(r)) for r in await conn.fetch("SELECT * FROM hypertail.dead_letters")]
        texts += [str(tuple(r)) for r in await conn.fetch("SELECT * FROM observability.provider_sync_status")]
        assert all(canary not in t for t in texts)
    finally:
        await conn.close()
        a.stop_quietly()


def test_logged_event_names_are_catalogued(tmp_path: Path) -> None:
    """Every event name in the source is in agent.ops.log.EVENTS and docs/events.md, and back."""
    used: set[str] = set()
    for path in (ROOT / "agent").rglob("*.py"):
        where = path.relative_to(ROOT / "agent").as_posix()
        if where.startswith("emit/") or where == "demo/app.py":
            continue  # the application side logs through the app's own structlog
        text = path.read_text()
        used |= set(re.findall(r'\.(?:info|warning|error|debug)\(\s*"([a-z_]+\.[a-z_.]+)"', text))
        used |= set(re.findall(r'event = "([a-z_]+\.[a-z_]+)"', text))
        used |= set(re.findall(r'"(db\.(?:stalled|retry))"', text))
    assert used, "found no log calls: the pattern is broken"
    assert used <= set(EVENTS), used - set(EVENTS)
    docs = (ROOT / "docs" / "events.md").read_text()
    assert all(f"`{name}`" in docs for name in EVENTS)


def test_demo_runs_on_a_fresh_machine(embedded_dir: Path) -> None:
    env = {**os.environ, "HYPERTAIL_AGENT__DATA_DIR": str(embedded_dir)}
    out = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "--chats", "9", "--documents", "8"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = dict(re.findall(r"observability\.(\w+)\s+(\d+)\s+\d+", out.stdout))
    assert set(counts) == {"traces", "spans", "chat_messages", "document_events", "logs", "metrics",
                           "workflow_transitions", "metrics_aggregates", "provider_sync_status"}
    assert all(int(n) > 0 for n in counts.values()), counts
    assert "ingested " in out.stderr  # one line, not a bar: stderr is not a terminal here
    # it ends with the waterfall of one trace, its log lines among the spans (issue 13)
    waterfall = out.stdout[out.stdout.index("\ntrace "):]
    assert "├" in waterfall and "█" in waterfall and "• INFO chat.question" in waterfall, waterfall
    assert "see it again: hypertail trace " in waterfall and " -d hypertail_demo" in waterfall


def _week_ago() -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=7)).isoformat()
