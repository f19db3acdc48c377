"""The Grafana dashboard's SQL, run on a database the demo app filled (issue 13).

Every panel's query (and every template variable's) is interpolated the way Grafana's PostgreSQL
data source does it - macros ($__timeFilter, $__timeFrom/$__timeTo, $__timeGroupAlias) and
variables (multi-value, "All" as the custom value '__all') - then run in plain mode and, where
the server has TimescaleDB, in TimescaleDB mode. Each must return the columns its panel expects,
and rows: the demo writes every kind of data the dashboard shows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from agent.config import Settings
from agent.ops.rollup import run_rollup
from agent.runner import Runner
from agent.sink.schema import detect_mode
from tests.conftest import pause_policies

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "hypertail.json").read_text())
EXPECTED = {
    "Requests per operation type": ["time", "metric", "requests"],
    "p95 latency per operation type": ["time", "metric", "p95_ms"],
    "LLM tokens per model": ["time", "metric", "tokens"],
    "LLM cost per model": ["time", "metric", "cost_usd"],
    "Error rate per operation type": ["time", "metric", "error_rate"],
    "Document pipeline: steps and failures": ["step", "completed", "failed", "p95_ms", "last_error"],
    "Ingest lag per sidecar": ["sidecar", "status", "seconds_since_commit", "seconds_since_report",
                               "files_behind", "error"],
    "Dead letters per reason": ["time", "metric", "dead_letters"],
    "Log volume per level": ["time", "metric", "lines"],
    "App counters: increase per second": ["time", "metric", "per_second"],
    "App histograms: p95": ["time", "metric", "p95"],
    "App gauges: last value per series": ["time", "metric", "last"],
    "Workflows by current state": ["state", "workflows", "longest_in_state_s", "inconsistent"],
}
NUMERIC = {"float8", "int8", "int4", "numeric"}


def interpolate(sql: str, start: dt.datetime, end: dt.datetime, variables: dict[str, list[str] | str]) -> str:
    """What Grafana sends for ``sql`` over [start, end] with 1-minute $__interval."""
    frm, to = (t.strftime("'%Y-%m-%dT%H:%M:%SZ'") for t in (start, end))
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m.group(1)} BETWEEN {frm} AND {to}", sql)
    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),\s*\$__interval\)",
                 lambda m: f'floor(extract(epoch from {m.group(1)})/60)*60 AS "time"', sql)
    sql = sql.replace("$__timeFrom()", frm).replace("$__timeTo()", to)
    for name, value in variables.items():
        text = value if isinstance(value, str) else ",".join("'" + v.replace("'", "''") + "'" for v in value)
        sql = sql.replace("${" + name + "}", text).replace("$" + name, text)
    assert "$" not in sql.replace("$$", ""), sql
    return sql


@pytest.fixture(params=["auto", "off"], ids=["timescaledb-if-available", "plain"])
async def demo_db(request: pytest.FixtureRequest, empty_dsn: str, tmp_path: Path) -> str:
    """The demo app's log (plus one bad line) ingested by the real agent, then rolled up."""
    logs = tmp_path / "logs"
    logs.mkdir()
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "agent.demo.app", "--out", str(logs / "app.log"),
                                             "--chats", "15", "--documents", "8"], check=True)
    with (logs / "app.log").open("ab") as f:
        f.write(b'{"record_type": "span", "name": "no ids"}\n')
    settings = Settings.model_validate({
        "database": {"dsn": empty_dsn}, "sources": [{"name": "demo", "paths": [str(logs / "*.log")]}],
        "batch": {"max_age_ms": 50}, "agent": {"id": "grafana-test"}, "http": {"enabled": False},
        "ops": {"rollup_enabled": False, "sync_interval_ms": 100}, "schema": {"timescaledb": request.param},
    })
    assert await Runner(settings, empty_dsn, exit_when_idle=True, idle_grace_s=0.3).run() == 0
    conn = await asyncpg.connect(empty_dsn)
    try:
        await pause_policies(conn)
        now = await conn.fetchval("SELECT now()")
        await run_rollup(conn, now=now + dt.timedelta(hours=2), lookback_1m=dt.timedelta(hours=3),
                         lookback_1h=dt.timedelta(hours=4))
    finally:
        await conn.close()
    return empty_dsn


def targets() -> list[tuple[str, str, str]]:
    return [(p["title"], t["format"], t["rawSql"]) for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def test_every_panel_has_an_expectation_and_the_variables_exist() -> None:
    assert sorted(title for title, _, _ in targets()) == sorted(EXPECTED)
    names = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert {"datasource", "granularity", "operation", "model", "app_metric"} <= names
    rows = [p for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert all("targets" not in p for p in rows) and [p["title"] for p in rows] == ["Application metrics and workflows"]
    used = set(re.findall(r"\$\{(\w+)\}", json.dumps(DASHBOARD["panels"])))
    assert used <= names, used - names


async def test_panels_return_their_columns_on_demo_data(demo_db: str) -> None:
    conn = await asyncpg.connect(demo_db)
    try:
        now = await conn.fetchval("SELECT now()")
        mode = await detect_mode(conn)
        start, end = now - dt.timedelta(hours=1), now + dt.timedelta(hours=3)
        variables = {v["name"]: await _values(conn, v, start, end) for v in DASHBOARD["templating"]["list"]
                     if v["type"] == "query"}
        assert "chat" in variables["operation"] and "gpt-4o-mini" in variables["model"], variables
        assert {"chat.requests", "chat.llm_ms", "chat.context_chunks"} <= set(variables["app_metric"]), variables
        for granularity in ("auto", "1h"):
            apps = ["chat.requests", "chat.llm_ms", "chat.context_chunks"]
            for op, model, app in ((["__all"], ["__all"], ["__all"]), (["chat"], ["gpt-4o-mini"], apps)):
                chosen = {"granularity": granularity,
                          "operation": "'__all'" if op == ["__all"] else op,
                          "model": "'__all'" if model == ["__all"] else model,
                          "app_metric": "'__all'" if app == ["__all"] else app}
                for title, fmt, raw in targets():
                    await _check_panel(conn, title, fmt, interpolate(raw, start, end, chosen), mode.describe())
    finally:
        await conn.close()


async def _values(conn: asyncpg.Connection, var: dict[str, str], start: dt.datetime, end: dt.datetime) -> list[str]:
    rows = await conn.fetch(interpolate(var["query"], start, end, {}))
    return [r[0] for r in rows]


async def _check_panel(conn: asyncpg.Connection, title: str, fmt: str, sql: str, mode: str) -> None:
    stmt = await conn.prepare(sql)
    columns = [a.name for a in stmt.get_attributes()]
    assert columns == EXPECTED[title], (title, mode)
    rows = await stmt.fetch()
    assert rows, f"{title}: no rows on demo data ({mode})\n{sql}"
    if fmt == "time_series":
        types = [a.type.name for a in stmt.get_attributes()]
        assert types[0] in ("timestamptz", "float8", "numeric", "int8"), (title, types)
        assert all(t in NUMERIC for t in types[2:]), (title, types)
        times = [r["time"] for r in rows]
        assert times == sorted(times), f"{title}: a time series must be sorted by time"
