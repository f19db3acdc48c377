"""Many sidecars on one database: 1, 4, 16 and 32 agents, directly and through PgBouncer.

    python bench/agents.py [--dsn ADMIN_DSN] [--sizes 1,4,16,32] [--lines-per-agent 5000]
                           [--pool-size 4] [--rollup-interval 2]

For every size and path: a fresh database, N ``hypertail run`` processes (each its own log folder
and agent id, rollup on), all started and ready before any line is written; then every agent's
file gets its lines at once, and the clock runs until the last row is committed. Printed per run:

* aggregate rows/s (all agents' lines / time to the last commit);
* peak server connections to that database (pg_stat_activity, sampled every 100 ms): direct, that
  is 2 per agent; through PgBouncer, at most its pool;
* the rollup leader: runs that really ran (``rollup.done`` at info), and the most that fell into
  any one interval across all agents (should be 1);
* exact: every line one row, none twice.

The baseline, measured in the same run, is the 1-agent direct figure: the ratio says what adding
agents (and the pooler) does to aggregate throughput on this machine. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.sink.status import recreate_database  # noqa: E402
from tests import pgbouncer  # noqa: E402
from tests.e2e.harness import Agent, span_line  # noqa: E402
from tests.pgserver import admin_dsn, replace_database  # noqa: E402


class ConnectionSampler:
    """Peak connections to one database, sampled from another thread while the agents run."""

    def __init__(self, admin_dsn: str, database: str) -> None:
        self.admin_dsn, self.database, self.peak = admin_dsn, database, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn, server_settings={"application_name": "bench"})
        try:
            while not self._stop.is_set():
                n = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name <> 'bench'",
                    self.database)
                self.peak = max(self.peak, int(n))
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


async def count_rows(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "bench"})
    try:
        r = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT (metadata->>'seq')) AS d FROM observability.spans")
        return int(r["n"]), int(r["d"])
    finally:
        await conn.close()


def rollup_runs(agents: list[Agent], interval: float) -> tuple[int, int]:
    """(runs that ran, the most in any one interval) from every agent's log."""
    stamps: list[float] = []
    for a in agents:
        for run in range(1, a.runs + 1):
            for line in (a.workdir / f"{a.agent_id}.{run}.out").read_text(errors="replace").splitlines():
                if '"event":"rollup.done"' in line and '"level":"info"' in line:
                    ts = json.loads(line)["timestamp"]
                    stamps.append(time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + ts[19:-1]))
    per_interval = Counter(int(t // interval) for t in stamps)
    return len(stamps), max(per_interval.values(), default=0)


def run_size(admin: str, n: int, lines_per_agent: int, via: pgbouncer.PgBouncer | None,
             rollup_interval: float, work: Path) -> dict[str, Any]:
    name = f"bench_agents_{'pooled' if via else 'direct'}_{n}"
    asyncio.run(recreate_database(admin, name))
    direct_dsn = replace_database(admin, name)
    dsn = via.dsn_for(name) if via else direct_dsn
    env = {"HYPERTAIL_OPS__ROLLUP_ENABLED": "true", "HYPERTAIL_OPS__ROLLUP_INTERVAL_S": str(rollup_interval),
           "HYPERTAIL_HTTP__ENABLED": "false"}  # 32 probe ports picked at once would collide
    base = work / name
    agents: list[Agent] = []
    try:
        with ConnectionSampler(admin, name) as sampler:
            for i in range(n):
                logs = base / f"logs{i}"
                logs.mkdir(parents=True)
                (logs / "app.log").touch()
                a = Agent(workdir=base, dsn=dsn, logs=logs, agent_id=f"agent-{i}", env=env)
                a.start()
                agents.append(a)
            deadline = time.monotonic() + 300
            for a in agents:
                while '"event":"agent.ready"' not in a.output():
                    if time.monotonic() > deadline or (a.proc and a.proc.poll() is not None):
                        raise RuntimeError(f"{a.agent_id} did not become ready: {a.output()[-2000:]}")
                    time.sleep(0.1)
            total = n * lines_per_agent
            t0 = time.monotonic()
            for i, a in enumerate(agents):
                seqs = range(i * lines_per_agent, (i + 1) * lines_per_agent)
                (a.logs / "app.log").write_bytes(b"".join(span_line(s) for s in seqs))
            rows = distinct = 0
            while rows < total and time.monotonic() - t0 < 600:
                time.sleep(0.2)
                rows, distinct = asyncio.run(count_rows(direct_dsn))
            elapsed = time.monotonic() - t0
            time.sleep(2 * rollup_interval)  # let the rollup leader show itself a few more times
            for a in agents:
                a.term()
        ran, most = rollup_runs(agents, rollup_interval)
    finally:
        for a in agents:
            a.stop_quietly()
    return {
        "agents": n, "path": "pgbouncer" if via else "direct", "lines": total,
        "rows_per_s": round(total / elapsed), "seconds": round(elapsed, 2),
        "peak_server_connections": sampler.peak, "rollup_runs": ran, "rollup_max_per_interval": most,
        "exact": rows == total and distinct == total, "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="an admin DSN (default: start an embedded PostgreSQL)")
    p.add_argument("--sizes", default="1,4,16,32")
    p.add_argument("--lines-per-agent", type=int, default=5000)
    p.add_argument("--pool-size", type=int, default=4, help="PgBouncer's server connections")
    p.add_argument("--rollup-interval", type=float, default=2.0)
    args = p.parse_args()
    results = []
    with admin_dsn(args.dsn) as admin:
        bouncer = pgbouncer.start(admin, pool_size=args.pool_size, max_client_conn=1000)
        try:
            with tempfile.TemporaryDirectory(prefix="ht-bench-agents-") as tmp:
                for n in (int(x) for x in args.sizes.split(",")):
                    for via in (None, bouncer):
                        r = run_size(admin, n, args.lines_per_agent, via, args.rollup_interval, Path(tmp))
                        results.append(r)
                        print(json.dumps(r), flush=True)
        finally:
            bouncer.stop()
    base = next((r["rows_per_s"] for r in results if r["agents"] == 1 and r["path"] == "direct"), None)
    if base:
        print(json.dumps({"baseline_1_agent_direct_rows_per_s": base,
                          "ratios": {f"{r['agents']}/{r['path']}": round(r["rows_per_s"] / base, 2) for r in results}}))


if __name__ == "__main__":
    main()
