"""``hypertail demo``: see the whole pipe work in one command, with nothing set up.

It starts the embedded PostgreSQL, creates a private ``hypertail_demo`` database (once: later
runs add to it, so what a user queried stays there; ``--fresh`` starts over), runs a small
simulated RAG application (:mod:`agent.demo.app`, a separate process that logs only through
``agent.emit``), ingests what it wrote with the real agent, and prints what landed: rows per
table and one trace drawn as the waterfall of ``hypertail trace`` (its log lines among its spans),
then how to look at it again and one line saying that the server keeps running and how to query
and stop it.

The summary is for a human on stdout; everything else goes to stderr: the progress (a bar on a
terminal, one line otherwise) and the agent's own warnings, as readable lines (nothing is
expected there: the embedded server has no TimescaleDB, so plain tables are no news).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.config import Settings
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
        "ops": {"rollup_enabled": False, "sync_interval_ms": 200, "progress_interval_s": 0},
        "schema": {"timescaledb": "off"},  # the embedded server never has it: plain tables, no warning
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
    """Ingest with the real agent; a progress bar on a terminal, else one line when done."""
    runner = Runner(settings, settings.database.dsn or "", exit_when_idle=True, idle_grace_s=0.5)
    task = asyncio.create_task(runner.run())
    console = Console(file=stream, highlight=False)
    t0 = time.monotonic()
    if console.is_terminal:
        columns = (TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(), TextColumn("lines"),
                   TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("ingesting", total=total)
            while not task.done():
                progress.update(bar, completed=runner.lines_committed)
                await asyncio.wait({task}, timeout=0.05)
            progress.update(bar, completed=runner.lines_committed)
    await task
    if not console.is_terminal:
        console.print(f"ingested {runner.lines_committed} of {total} lines in {time.monotonic() - t0:.1f} s")


async def _prepare_database(admin_dsn: str, fresh: bool) -> None:
    """Create the demo database unless it exists: earlier runs' rows are the user's to keep."""
    if fresh:
        await recreate_database(admin_dsn, DEMO_DB)
    else:
        await create_database_once(admin_dsn, DEMO_DB)


async def _summarise(settings: Settings, before: dict[str, int], since: datetime, again: str) -> str:
    conn = await connect(settings.database, settings.database.dsn or "")
    try:
        # Close the current buckets early so the demo's fresh spans show up in the rollup.
        now = await conn.fetchval("SELECT now()")
        await run_rollup(conn, now=now + timedelta(hours=2), lookback_1m=timedelta(hours=3),
                         lookback_1h=timedelta(hours=4))
        counts = await table_counts(conn)
        trace, _ = await richest_trace(conn, since)
        view = await read_trace(conn, trace["trace_id"]) if trace is not None else None
    finally:
        await conn.close()
    return render_counts(counts, before) + "\n\n" + render_waterfall(view, again)


def render_counts(counts: dict[str, int], before: dict[str, int] | None = None) -> str:
    """Rows per table: added by this run, and in total (earlier demo runs included)."""
    before = before or {}
    width = max(map(len, counts)) + len("observability.")
    head = f"rows per table in {DEMO_DB}:".ljust(width + 2) + "  this run     total"
    rows = [f"  {'observability.' + t:<{width}}  {n - before.get(t, 0):>8}  {n:>8}" for t, n in counts.items()]
    return "\n".join([head, *rows])


def render_waterfall(view: TraceView | None, again: str = "") -> str:
    """One trace of this run as ``hypertail trace`` draws it (plain text: the CLI prints the summary
    as is), and the commands that look at what landed again (``again``: the options that reach
    the demo's data, e.g. ``-d hypertail_demo``)."""
    if view is None:
        return "no completed trace"
    width = shutil.get_terminal_size((120, 40)).columns
    look = [f"see it again: hypertail trace {view.trace_id} {again}".rstrip(),
            f"look around:  hypertail traces {again} --since 1h   (--status failed: the failed requests)"]
    return "\n".join(line.plain for line in render(view, width)) + "\n\n" + "\n".join(look)


def run_demo(base: Settings, *, chats: int = 30, documents: int = 12, fresh: bool = False,
             stream: TextIO = sys.stderr, again: str = f"-d {DEMO_DB}") -> str:
    """The whole demo; returns the summary text ending with the server's notice (the CLI prints it).

    ``again`` is what the commands printed at the end need besides the subcommand to read the
    demo's database (``-d hypertail_demo``, and ``--config PATH`` if the demo was given one)."""
    agent = base.agent
    with embedded_session(agent.data_dir, keep_running=agent.embedded_keep_running) as emb:
        asyncio.run(_prepare_database(emb.admin_dsn, fresh))
        dsn = emb.dsn_for(DEMO_DB)
        before = asyncio.run(counts_if_created(dsn))
        with tempfile.TemporaryDirectory(prefix="hypertail-demo-") as tmp:
            logs = Path(tmp)
            print(f"simulated app writing to {logs / 'app.log'} ...", file=stream)
            started = datetime.now(UTC)  # the app's clock: its records are stamped by it
            total = run_app(logs, chats, documents)
            settings = _demo_settings(base, dsn, logs)
            asyncio.run(_ingest(settings, total, stream))
            summary = asyncio.run(_summarise(settings, before, started, again))
    line = notice(emb, agent.data_dir, keep_running=agent.embedded_keep_running, database=DEMO_DB, ended=True)
    return f"{summary}\n\n{line}"
