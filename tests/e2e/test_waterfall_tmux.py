"""`hypertail trace` on a real terminal: tmux runs it in a pane of fixed size, and the captured
screen shows the bars where the spans' start offsets and durations put them (issue 13)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.integration.test_trace_view import check_bars
from tests.tracedata import TRACE_ID, insert_known_trace

WIDTH, HEIGHT = 120, 50


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def session() -> Iterator[str]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (apt-get install -y tmux; .ci/run installs it)")
    name = f"ht13-{os.getpid()}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


async def test_waterfall_on_a_real_terminal(dsn: str, conn: asyncpg.Connection, tmp_path: Path, session: str) -> None:
    await insert_known_trace(conn)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\ndsn = "{dsn}"\n')
    done = tmp_path / "done"
    command = (f"{sys.executable} -m agent.cli trace {TRACE_ID} --config {cfg}; echo $? > {done}; sleep 60")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(WIDTH), "-y", str(HEIGHT), command],
                   check=True, env=env, cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 60
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.read_text().strip() == "0"
    screen = tmux("capture-pane", "-p", "-t", session).splitlines()
    assert any(line.startswith("trace " + TRACE_ID) for line in screen), screen
    check_bars(screen, WIDTH)
    axis = next(line for line in screen if "├" in line)
    assert axis.rstrip().endswith("┤") and len(axis.rstrip()) <= WIDTH
    colored = tmux("capture-pane", "-p", "-e", "-t", session).splitlines()
    rerank = next(line for line in colored if "rerank [" in line)
    assert "\x1b[1m\x1b[31m" in rerank or "\x1b[1;31m" in rerank or "\x1b[31m" in rerank, repr(rerank)


def run_in_pane(session: str, command: str, width: int, height: int, done: Path) -> list[str]:
    """Run ``command`` in a fresh tmux pane of ``width`` x ``height``; the screen once it exited 0."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(width), "-y", str(height),
                    f"{command}; echo $? > {done}; sleep 60"],
                   check=True, env=env, cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 60
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.read_text().strip() == "0"
    screen = tmux("capture-pane", "-p", "-t", session).splitlines()
    joined = tmux("capture-pane", "-p", "-J", "-t", session).splitlines()  # wrapped lines joined back
    assert screen == joined, "a line wrapped at the pane's edge"
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    return screen


async def test_traces_and_trace_at_80_columns(dsn: str, conn: asyncpg.Connection, tmp_path: Path,
                                              session: str) -> None:
    """Issue 22: at 80 columns `traces` rendered `O…  N…  S…` and `trace` wrapped its header."""
    await insert_known_trace(conn)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\ndsn = "{dsn}"\n')
    cli = f"{sys.executable} -m agent.cli"
    listing = run_in_pane(session, f"{cli} traces --since 3650d --config {cfg}", 80, 20, tmp_path / "done1")
    header = next(line for line in listing if line.startswith("STARTED"))
    assert header.split() == ["STARTED", "TRACE", "ID", "NAME", "STATUS", "DURATION"]
    row = next(line for line in listing if TRACE_ID in line)
    assert "answer question" in row and "completed" in row and "…" not in "".join(listing)
    assert any(line.startswith("hidden at 80 columns: OPERATION, SPANS, TOKENS IN/OUT, COST") for line in listing)
    screen = run_in_pane(session, f"{cli} trace {TRACE_ID} --config {cfg}", 80, 50, tmp_path / "done2")
    assert screen[0] == f"trace {TRACE_ID}  answer question  chat  completed"
    assert screen[1].startswith("started 2026-11-01 12:00:00.000 UTC  6 spans  2 log lines")
    check_bars(screen, 80)
    assert any(line.startswith("  +920 ms  assistant  gpt-4o") for line in screen), screen
