"""Errors retrying cannot fix stall the agent, visibly, and it resumes once they are fixed (issue 9, Build 4).

The server refuses the schema's DDL with 0A000 (feature_not_supported), as TimescaleDB did for a
non-constant default on a compressed hypertable. An event trigger reproduces that refusal on any
server. The agent must not log an endless ``db.retry``: it stalls with readiness false and the
reason in ``/readyz``, ``hypertail status`` and ``provider_sync_status``, logs ``db.stalled`` once,
and ingests exactly once the trigger is dropped.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.e2e.harness import Agent, assert_exact, count_sync, seqs, span_line, wait_until

REFUSE_DDL = """
CREATE OR REPLACE FUNCTION refuse_alter() RETURNS event_trigger AS $$
BEGIN
    RAISE EXCEPTION 'ALTER TABLE is refused here' USING ERRCODE = '0A000';
END $$ LANGUAGE plpgsql;
CREATE EVENT TRIGGER refuse_alter ON ddl_command_start WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION refuse_alter();
"""


def readyz(agent: Agent) -> tuple[int, str]:
    """The readiness probe, or (0, "") while the agent is not listening yet."""
    try:
        code, body = agent.get("/readyz")
    except OSError:
        return 0, ""
    return code, str(body)


def status_json(agent: Agent) -> dict[str, object]:
    p = subprocess.run([sys.executable, "-m", "agent.cli", "status", "--config", str(agent.config_path), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    return dict(json.loads(p.stdout))


async def test_refused_ddl_stalls_visibly_then_resumes(agent: Agent, logs: Path, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(REFUSE_DDL)
        (logs / "app.log").write_bytes(b"".join(span_line(s) for s in range(100)))
        agent.start()
        try:
            wait_until(lambda: readyz(agent)[0] == 503 and "0A000" in readyz(agent)[1],
                       timeout=30, what="readiness to fail with the SQLSTATE")
            agent_row = ("SELECT sync_status, error_message FROM observability.provider_sync_status "
                         "WHERE entity_type = 'agent' AND entity_id = 'e2e-agent'")
            stalled = f"SELECT count(*) FROM ({agent_row}) r WHERE sync_status = 'stalled'"
            wait_until(lambda: count_sync(dsn, stalled) == 1, timeout=10, what="the agent's row to say stalled")
            row = await conn.fetchrow(agent_row)
            assert row is not None and row["sync_status"] == "stalled" and "0A000" in row["error_message"]
            [me] = status_json(agent)["agents"]  # type: ignore[misc]
            assert me["status"] == "stalled" and "ALTER TABLE is refused here" in me["error"]
            await asyncio.sleep(1.5)  # several more attempts on the backoff schedule (retry_max_ms = 300)
            out = agent.output()
            assert out.count('"event":"db.stalled"') == 1, out
            assert '"event":"db.retry"' not in out
            assert await conn.fetchval("SELECT count(*) FROM observability.spans") == 0

            await conn.execute("DROP EVENT TRIGGER refuse_alter")
            wait_until(lambda: readyz(agent)[0] == 200, timeout=30, what="readiness after the fix")
            wait_until(lambda: count_sync(dsn) == 100, timeout=20, what="the rows after the fix")
            assert_exact(await seqs(conn), 100)
        finally:
            agent.stop_quietly()
    finally:
        await conn.close()

