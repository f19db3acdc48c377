"""``hypertail demo``: see the whole pipe work in one command, with nothing set up.

It starts the embedded PostgreSQL, creates a private ``hypertail_demo`` database (once: later
runs add to it, so what a user queried stays there; ``--fresh`` starts over), runs a small
simulated RAG application (:mod:`agent.demo.app`, a separate process that logs only through
``agent.emit``), ingests what it wrote with the real agent, and prints what landed: rows per
table and one trace drawn as the waterfall of ``hypertail trace`` (its log lines among its spans),
then one line saying that the server keeps running and how to query and stop it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from agent.config import Settings, mask_dsn
from agent.embedded import embedded_session, notice
from agent.ops.rollup import run_rollup
from agent.runner import Runner
from agent.sink.connect import connect
from agent.sink.status import counts_if_created, create_database_once, recreate_database, richest_trace, table_counts
from agent.sink.traces import read_trace
from agent.views.model import TraceView
from agent.views.waterfall import render

DEMO_DB = "hypertail_demo"


def _demo_settings(base: Settings, dsn: str, logs: Path) -> Settings:
    return Settings.model_validate({
        "database": {"dsn": dsn},
        "sources": [{"name": "demo-app", "paths": [str(logs / "*.log")]}],
        "tail": {"rescan_interval_ms": 100},
        "batch": {"max_age_ms": 50},
        "agent": {"id": "demo", "data_dir": base.agent.data_dir},
        "http": {"enabled": False},
        "ops": {"rollup_enabled": False, "sync_interval_ms": 200},
    })


def run_app(logs: Path, chats: int, documents: int) -> int:
    """Run the simulated app to completion; returns how many lines it wrote."""
    out = logs / "app.log"
    subprocess.run(
        [sys.executable, "-m", "agent.demo.app", "--out", str(out), "--chats", str(chats),
         "--documents", str(documents)],
        check=True,
    )
    return sum(1 for _ in out.open("rb"))


async def _ingest(settings: Settings, total: int, stream: TextIO) -> None:
    runner = Runner(settings, settings.database.dsn or "", exit_when_idle=True, idle_grace_s=0.5)
    bar = tqdm(total=total, unit="line", desc="ingesting", file=stream)
    task = asyncio.create_task(runner.run())
    while not task.done():
        bar.update(runner.lines_committed - bar.n)
        await asyncio.sleep(0.05)
    bar.update(runner.lines_committed - bar.n)
    bar.close()
    await task


async def _prepare_database(admin_dsn: str, fresh: bool) -> None:
    """Create the demo database unless it exists: earlier runs' rows are the user's to keep."""
    if fresh:
        await recreate_database(admin_dsn, DEMO_DB)
    else:
        await create_database_once(admin_dsn, DEMO_DB)


async def _summarise(settings: Settings, before: dict[str, int]) -> str:
    conn = await connect(settings.database, settings.database.dsn or "")
    try:
        # Close the current buckets early so the demo's fresh spans show up in the rollup.
        now = await conn.fetchval("SELECT now()")
        await run_rollup(conn, now=now + timedelta(hours=2), lookback_1m=timedelta(hours=3),
                         lookback_1h=timedelta(hours=4))
        counts = await table_counts(conn)
        trace, _ = await richest_trace(conn)
        view = await read_trace(conn, trace["trace_id"]) if trace is not None else None
    finally:
        await conn.close()
    return render_counts(counts, before) + "\n\n" + render_waterfall(view, settings.database.dsn or "")


def render_counts(counts: dict[str, int], before: dict[str, int] | None = None) -> str:
    """Rows per table: added by this run, and in total (earlier demo runs included)."""
    before = before or {}
    width = max(map(len, counts)) + len("observability.")
    head = f"rows per table in {DEMO_DB}:".ljust(width + 2) + "  this run     total"
    rows = [f"  {'observability.' + t:<{width}}  {n - before.get(t, 0):>8}  {n:>8}" for t, n in counts.items()]
    return "\n".join([head, *rows])


def render_waterfall(view: TraceView | None, dsn: str) -> str:
    """One trace as ``hypertail trace`` draws it (plain text: the CLI prints the summary as is),
    and the command that draws it again from the demo's database."""
    if view is None:
        return "no completed trace"
    width = shutil.get_terminal_size((120, 40)).columns
    again = f"see it again: HYPERTAIL_DATABASE__DSN='{mask_dsn(dsn)}' hypertail trace {view.trace_id}"
    return "\n".join(line.plain for line in render(view, width)) + "\n\n" + again


def run_demo(base: Settings, *, chats: int = 30, documents: int = 12, fresh: bool = False,
             stream: TextIO = sys.stderr) -> str:
    """The whole demo; returns the summary text ending with the server's notice (the CLI prints it)."""
    agent = base.agent
    with embedded_session(agent.data_dir, keep_running=agent.embedded_keep_running) as emb:
        asyncio.run(_prepare_database(emb.admin_dsn, fresh))
        dsn = emb.dsn_for(DEMO_DB)
        before = asyncio.run(counts_if_created(dsn))
        with tempfile.TemporaryDirectory(prefix="hypertail-demo-") as tmp:
            logs = Path(tmp)
            print(f"simulated app writing to {logs / 'app.log'} ...", file=stream)
            total = run_app(logs, chats, documents)
            settings = _demo_settings(base, dsn, logs)
            asyncio.run(_ingest(settings, total, stream))
            summary = asyncio.run(_summarise(settings, before))
    line = notice(emb, agent.data_dir, keep_running=agent.embedded_keep_running, database=DEMO_DB, ended=True)
    return f"{summary}\n\n{line}"
