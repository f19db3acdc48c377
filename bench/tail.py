"""Benchmark of the sources stage: throughput against a bare read loop, and live latency.

    python bench/tail.py [--lines 200000] [--seconds 5] [--rate 2000]

1. Throughput: lines/s through ``Tailer.poll_once`` (discovery, identity, chunked reads, line
   splitting into one Block per read) on a file of structlog-like JSON lines, against a bare
   ``for line in open(path, "rb")`` loop over the same file, in the same run (best of several
   rounds each). One more figure shows where the time goes: splitting with offsets alone.
2. Latency: a writer thread appends at ``--rate`` lines/s, each line carrying its
   ``time.perf_counter()``; the async ``batches()`` loop with watchfiles events receives them;
   append-to-emitted latency p50/p99/max. The same with events off (polling) for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from itertools import accumulate, repeat
from operator import add
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.sources import SourceSpec, Tailer, TailOptions

LINE = (b'{"event": "span.end", "timestamp": "2024-05-01T12:00:00.%06dZ", "level": "info", '
        b'"record_type": "span", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "n": %d}\n')


def make_file(path: Path, n: int) -> int:
    with path.open("wb") as fh:
        for i in range(n):
            fh.write(LINE % (i % 1000000, i))
    return path.stat().st_size


def best_of(rounds: int, fn: Callable[[], int]) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t0)
    return best, count


def bare_loop(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        for _line in fh:
            n += 1
    return n


def through_tailer(path: Path) -> int:
    t = Tailer([SourceSpec("bench", (str(path),))], [], TailOptions(use_events=False))
    n = 0
    while True:
        n += sum(len(block.data) for block in t.poll_once())
        if t.idle():
            break
    t.stop()
    return n


def split_only(path: Path) -> int:
    """The reader's splitting and offset arithmetic alone (no tailer around it)."""
    fd, pos, n = os.open(path, os.O_RDONLY), 0, 0
    while data := os.pread(fd, 1 << 18, pos):
        parts = data.split(b"\n")  # as the reader splits a chunk: the last part is held back
        held = parts.pop()
        bounds = list(accumulate(map(add, map(len, parts), repeat(1)), initial=pos))
        n += len(bounds) - 1
        pos += len(data) - len(held)
    os.close(fd)
    return n


def throughput(tmp: Path, n_lines: int, rounds: int) -> None:
    path = tmp / "big.log"
    size = make_file(path, n_lines)
    base, n0 = best_of(rounds, lambda: bare_loop(path))
    ours, n1 = best_of(rounds, lambda: through_tailer(path))
    split, _ = best_of(rounds, lambda: split_only(path))
    assert n0 == n1 == n_lines, (n0, n1)
    print(f"throughput: {n_lines} lines, {size / 2**20:.1f} MiB, best of {rounds}")
    print(f"  bare `for line in open(path, 'rb')`: {n0 / base:12,.0f} lines/s  ({base * 1e3:7.1f} ms)")
    print(f"  sources stage (Tailer.poll_once)  : {n1 / ours:12,.0f} lines/s  ({ours * 1e3:7.1f} ms)")
    print(f"  ratio sources/bare                : {base / ours:.2f}   (goal >= 0.5)")
    print(f"  where it goes: split+offsets {split * 1e3:.1f} ms, the rest (reads, identity, blocks) "
          f"{max(ours - split, 0) * 1e3:.1f} ms")


class PacedWriter(threading.Thread):
    """Appends ``rate`` lines/s, each stamped with ``time.perf_counter()`` when written."""

    def __init__(self, path: Path, rate: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.path, self.rate, self.seconds = path, rate, seconds
        self.written = 0

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        start = time.perf_counter()
        total = int(self.rate * self.seconds)
        while self.written < total:
            due = min(total, int((time.perf_counter() - start) * self.rate) + 1)
            while self.written < due:
                os.write(fd, b'{"ts": %.9f, "n": %d, "event": "tick"}\n' % (time.perf_counter(), self.written))
                self.written += 1
            time.sleep(0.0002)
        os.close(fd)


async def measure_latency(tmp: Path, rate: int, seconds: float, events: bool) -> list[float]:
    path = tmp / f"live-{events}.log"
    path.write_bytes(b'{"ts": 0.0, "n": -1, "event": "start"}\n')  # identified before the clock runs
    options = TailOptions(use_events=events, debounce_ms=20, read_interval_s=0.25)
    t = Tailer([SourceSpec("bench", (str(path),))], [], options)
    writer = PacedWriter(path, rate, seconds)
    lat: list[float] = []
    want = int(rate * seconds)

    async def consume() -> None:
        async for blocks in t.batches():
            now = time.perf_counter()
            stamps = (float(x[7 : x.index(b",")]) for block in blocks for x in block.data)
            lat.extend(now - ts for ts in stamps if ts > 0)
            if len(lat) >= want:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)  # the watcher is up
    writer.start()
    await asyncio.wait_for(task, seconds + 10)
    t.stop()
    return lat


def report_latency(label: str, lat: list[float]) -> None:
    qs = statistics.quantiles(lat, n=100)
    print(f"  {label}: n={len(lat)}  p50 {qs[49] * 1e3:6.1f} ms  p99 {qs[98] * 1e3:6.1f} ms  "
          f"max {max(lat) * 1e3:6.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hypertail-bench-") as d:
        tmp = Path(d)
        throughput(tmp, args.lines, args.rounds)
        print(f"latency: writer at {args.rate} lines/s for {args.seconds:.0f} s, append -> emitted")
        report_latency("async batches(), watchfiles events (goal p99 <= 50 ms)",
                       asyncio.run(measure_latency(tmp, args.rate, args.seconds, events=True)))
        report_latency("async batches(), polling only, read_interval 250 ms   ",
                       asyncio.run(measure_latency(tmp, args.rate, args.seconds, events=False)))


if __name__ == "__main__":
    main()
