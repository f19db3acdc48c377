"""``hypertail demo``: see the whole pipe work in one command, with nothing set up.

It starts the embedded PostgreSQL, creates a private ``hypertail_demo`` database, runs a small
simulated RAG application (:mod:`agent.demo_app`, a separate process that logs only through
``agent.emit``), ingests what it wrote with the real agent, and prints what landed: rows per
table and one trace drawn as a span tree.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from agent.config import Settings
from agent.embedded import start_embedded
from agent.ops.rollup import run_rollup
from agent.runner import Runner
from agent.sink.connect import connect
from agent.sink.status import recreate_database, richest_trace, table_counts

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
        [sys.executable, "-m", "agent.demo_app", "--out", str(out), "--chats", str(chats),
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


async def _summarise(settings: Settings) -> str:
    conn = await connect(settings.database, settings.database.dsn or "")
    try:
        # Close the current buckets early so the demo's fresh spans show up in the rollup.
        now = await conn.fetchval("SELECT now()")
        await run_rollup(conn, now=now + timedelta(hours=2), lookback_1m=timedelta(hours=3),
                         lookback_1h=timedelta(hours=4))
        counts = await table_counts(conn)
        trace, spans = await richest_trace(conn)
    finally:
        await conn.close()
    return render_counts(counts) + "\n\n" + render_tree(trace, spans)


def render_counts(counts: dict[str, int]) -> str:
    width = max(map(len, counts))
    return "rows per table:\n" + "\n".join(f"  observability.{t.ljust(width)}  {n:>6}" for t, n in counts.items())


def render_tree(trace: Any, spans: list[Any]) -> str:
    """One trace as an indented span tree with durations, tokens and cost."""
    if trace is None:
        return "no completed trace"
    lines = [
        f"trace {trace['trace_id']}  {trace['name']} ({trace['operation_type']})  "
        f"{trace['duration_ms']} ms  tokens {trace['total_input_tokens'] or 0}/{trace['total_output_tokens'] or 0}"
        f"  cost ${trace['total_cost_usd'] or 0}"
    ]
    children: dict[str | None, list[Any]] = {}
    for s in spans:
        children.setdefault(s["parent_span_id"], []).append(s)
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if s["parent_span_id"] not in ids]

    def walk(span: Any, depth: int) -> None:
        extra = ""
        if span["model"]:
            extra = f"  {span['model']} tokens {span['input_tokens']}/{span['output_tokens']} ${span['cost_usd']}"
        lines.append(f"{'  ' * depth}└─ {span['name']} [{span['span_type']}] {span['duration_ms']} ms{extra}")
        for child in children.get(span["span_id"], []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 1)
    return "\n".join(lines)


def run_demo(base: Settings, *, chats: int = 30, documents: int = 12, stream: TextIO = sys.stderr) -> str:
    """The whole demo; returns the summary text (the CLI prints it)."""
    admin = start_embedded(base.agent.data_dir)
    asyncio.run(recreate_database(admin, DEMO_DB))
    dsn = admin.replace("/postgres?", f"/{DEMO_DB}?", 1)
    with tempfile.TemporaryDirectory(prefix="hypertail-demo-") as tmp:
        logs = Path(tmp)
        print(f"simulated app writing to {logs / 'app.log'} ...", file=stream)
        total = run_app(logs, chats, documents)
        settings = _demo_settings(base, dsn, logs)
        asyncio.run(_ingest(settings, total, stream))
        return asyncio.run(_summarise(settings))
