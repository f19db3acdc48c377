"""Application metrics and workflows end to end (issue 26): four processes of one app record
counters, gauges, histograms and move 100 workflows through four states (each state set by a
different process); their files reach the agent latest state first, and the agent is kill -9'd
after its second commit and started again. Then every counter's total, every gauge's last value
and every histogram's count and sum are exact, every p95 is within the stated relative error,
every workflow is in its last state, and nothing is a dead letter: through SQL and through the
``hypertail metrics`` / ``hypertail workflows`` commands a user would run."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from agent import contract as c
from tests.e2e.apps.metrics_app import STATES, WORKERS
from tests.e2e.harness import Agent

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = 100


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


def oracle(staging: Path) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """What the four workers recorded, merged per series (a series is name and attributes)."""
    counters: dict[str, float] = defaultdict(float)
    gauges: dict[str, float] = {}
    histograms: dict[str, list[float]] = defaultdict(list)
    for k in range(WORKERS):
        o = json.loads((staging / f"oracle-{k}.json").read_text())
        for s, v in o["counters"].items():
            counters[s] += v
        gauges.update(o["gauges"])  # each worker's gauges carry its own `worker` attribute
        for s, vs in o["histograms"].items():
            histograms[s] += vs
    return counters, gauges, histograms


def series_key(name: str, attributes: dict[str, Any]) -> str:
    return json.dumps([name, attributes], sort_keys=True)


def nearest_rank(values: list[float], q: Fraction) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def cli(agent: Agent, *args: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "agent.cli", *args, "--config", str(agent.config_path), "--json"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)


async def test_metrics_and_workflows_of_four_processes_exactly_once(agent: Agent, logs: Path, tmp_path: Path,
                                                                    db: asyncpg.Connection) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    subprocess.run([sys.executable, "-m", "tests.e2e.apps.metrics_app", "--out", str(staging),
                    "--workflows", str(WORKFLOWS)], check=True, cwd=ROOT, timeout=120)

    # The files of the later states reach the agent first; it dies after two commits.
    for k in (3, 2):
        shutil.move(staging / f"w{k}.log", logs / f"w{k}.log")
    agent.env = {"HYPERTAIL_TEST_KILL_AFTER_COMMITS": "2", "HYPERTAIL_BATCH__MAX_ROWS": "23"}
    agent.start()
    assert agent.wait(60) == -9, agent.output()
    first = await db.fetchval("SELECT count(*) FROM observability.workflow_transitions")
    assert 0 < first < 2 * WORKFLOWS  # only some of the later states are in
    for k in (1, 0):
        shutil.move(staging / f"w{k}.log", logs / f"w{k}.log")
    agent.env = {"HYPERTAIL_BATCH__MAX_ROWS": "23"}
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(120) == 0, agent.output()
    assert await db.fetchval("SELECT count(*) FROM hypertail.dead_letters") == 0

    lines = sum(1 for k in range(WORKERS) for line in (logs / f"w{k}.log").read_bytes().splitlines()
                if b'"record_type":"metric"' in line)
    assert await db.fetchval("SELECT count(*) FROM observability.metrics") == lines  # one row per line
    counters, gauges, histograms = oracle(staging)

    rows = await db.fetch("SELECT name, kind, attributes::text AS attributes, value, count, sum, start_time, "
                          '"timestamp", resource::text AS resource FROM observability.metrics')
    by: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for r in rows:
        by[series_key(r["name"], json.loads(r["attributes"]))].append(r)
    assert set(by) == set(counters) | set(gauges) | set(histograms)
    shared = by[series_key("items", {"pool": "shared"})]
    assert len({json.loads(r["resource"])["process.pid"] for r in shared}) == WORKERS
    for s, total in counters.items():
        assert sum(r["value"] for r in by[s]) == total, s
    for s, last in gauges.items():
        assert max(by[s], key=lambda r: (r["start_time"], r["timestamp"]))["value"] == last, s
    for s, values in histograms.items():
        assert sum(r["count"] for r in by[s]) == len(values), s
        assert sum(r["sum"] for r in by[s]) == sum(values), s  # multiples of 1/64: exact in any order

    shown = {series_key(m["name"], m["attributes"]): m for m in cli(agent, "metrics", "--since", "1h")}
    assert set(shown) == set(by)
    for s, values in histograms.items():
        exact = nearest_rank(values, Fraction(95, 100))
        assert abs(shown[s]["p95"] - exact) <= c.HISTOGRAM_RELATIVE_ERROR * exact * (1 + 1e-9), (s, shown[s], exact)
        assert shown[s]["count"] == len(values) and shown[s]["total"] == sum(values)
    for s, total in counters.items():
        assert shown[s]["total"] == total
    for s, last in gauges.items():
        assert shown[s]["last"] == last

    found = cli(agent, "workflows", "--limit", "1000")
    final = {f"job-{i:03d}": "failed" if i % 7 == 3 else STATES[-1] for i in range(WORKFLOWS)}
    assert {w["workflow_id"]: w["state"] for w in found["workflows"]} == final
    assert found["per_state"] == {"done": 86, "failed": 14}
    for w in found["workflows"]:
        assert w["transitions"] == WORKERS and w["consistent"], w
        assert [h["state"] for h in w["history"]] == [*STATES[:-1], final[w["workflow_id"]]]
