"""The asyncio loop: watchfiles wake-ups, rescan-only mode, pause/resume, stop."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

from agent.model import Line
from agent.sources import Tailer, TailOptions

from .support import Writer, lines_of, spec, until


async def collect(t: Tailer, want: int, out: list[Line]) -> None:
    async for blocks in t.batches():
        lines = lines_of(blocks)
        out += lines
        for line in lines:
            t.ack(line.file, line.end)
        if len(out) >= want:
            return


async def run_until(t: Tailer, want: int, out: list[Line]) -> None:
    await asyncio.wait_for(collect(t, want, out), 20)


async def test_events_wake_the_loop_through_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    t = Tailer([spec(tmp_path / "app.log*")], [], TailOptions(rescan_interval_s=30, read_interval_s=30))
    out: list[Line] = []
    task = asyncio.create_task(collect(t, 10**9, out))
    first = w.lines(50)
    await until(lambda: len(out) >= 50, "the first 50 lines")
    os.rename(log, tmp_path / "app.log.1")
    late = w.lines(5)
    fresh = Writer(log).lines(5)  # a new file: only an event can reveal it before 30 s
    await until(lambda: len(out) >= 60, "the lines after the rotation (events, not the 30 s rescan)")
    t.stop()
    await asyncio.wait_for(task, 5)
    assert Counter(x.data for x in out) == Counter(first + late + fresh)


async def test_rescan_only_mode(tmp_path: Path) -> None:
    sub = tmp_path / "later"  # a folder that does not exist yet
    t = Tailer([spec(sub / "*.log")], [], TailOptions(use_events=False, rescan_interval_s=0.05))
    out: list[Line] = []
    task = asyncio.create_task(run_until(t, 20, out))
    await until(lambda: t.gone_checkpoints() is not None, "a first scan without the folder")
    sub.mkdir()
    lines = Writer(sub / "a.log").lines(20)
    await task
    t.stop()
    assert Counter(x.data for x in out) == Counter(lines)


async def test_pause_reads_nothing_until_resume(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    lines = Writer(log).lines(10)
    t = Tailer([spec(log)], [], TailOptions(use_events=False, rescan_interval_s=0.02, read_interval_s=0.02))
    t.pause()
    out: list[Line] = []
    task = asyncio.create_task(run_until(t, 10, out))
    await asyncio.sleep(0.2)  # ten read intervals pass; a paused tailer reads nothing in them
    assert out == [] and t.poll_once() == []
    t.resume()
    await task
    t.stop()
    assert Counter(x.data for x in out) == Counter(lines)


async def test_stop_ends_batches_promptly(tmp_path: Path) -> None:
    t = Tailer([spec(tmp_path / "*.log")], [], TailOptions())
    out: list[Line] = []
    task = asyncio.create_task(collect(t, 1, out))
    await until(lambda: t.gone_checkpoints() is not None, "a first scan: the loop is waiting for work")
    t.stop()
    await asyncio.wait_for(task, 5)
    assert out == []
