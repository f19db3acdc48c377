"""Cost of agent.parse per line shape, against bare ``orjson.loads`` of the same lines.

The shapes are those of the mixed bench file (``tests/mixed.py``): spans as ``agent.emit``
writes them, without ``started_at``, with a custom discriminator key, with shuffled keys and
dropped optional fields, with nested metadata; trace start and end records, chat messages,
document events and app-log lines. Each shape is timed over ``--lines`` distinct lines, in
rounds that alternate the shapes and the ``orjson.loads`` baseline, by process CPU time (the
machine is shared: wall time would count other processes); the best round counts.

Goal (issue 11): every shape <= 3 us/line and within 1.5x of the fastest shape.

    python bench/parse.py [--lines 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from agent.model import AppLog, Row  # noqa: E402
from agent.parse import parse  # noqa: E402
from tests.mixed import SHAPES  # noqa: E402


def cpu_us(fn: Callable[[bytes], Any], lines: list[bytes]) -> float:
    start = time.process_time()
    for line in lines:
        fn(line)
    return (time.process_time() - start) / len(lines) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    data: dict[str, tuple[list[bytes], str]] = {}
    for name, shape in SHAPES.items():
        made = [shape(seq) for seq in range(args.lines)]
        data[name] = ([m.data for m in made], made[0].key)
        for m in made[:100]:  # the bench times real rows, not dead letters
            assert isinstance(parse(m.data, record_type_key=m.key), AppLog if m.table is None else Row)
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for name, (lines, key) in data.items():
            def ours(line: bytes, key: str = key) -> Any:
                return parse(line, record_type_key=key)
            for label, fn in (("parse", ours), ("loads", orjson.loads)):
                t = cpu_us(fn, lines)
                best[name, label] = min(best.get((name, label), t), t)
    records = [n for n in data if n != "app_log"]  # app-log lines are not records: no row to build
    fastest = min(best[n, "parse"] for n in records)
    print(f"{'shape':22} {'bytes':>5} {'loads us':>9} {'parse us':>9} {'x loads':>8} {'x fastest':>9}")
    for name, (lines, _) in data.items():
        p, loads = best[name, "parse"], best[name, "loads"]
        size = sum(map(len, lines)) / len(lines)
        print(f"{name:22} {size:5.0f} {loads:9.2f} {p:9.2f} {p / loads:8.2f} {p / fastest:9.2f}")
    worst = max(best[n, "parse"] for n in records)
    print(f"records: slowest shape {worst:.2f} us/line (goal <= 3), {worst / fastest:.2f}x the fastest record "
          "shape (goal <= 1.5); x fastest is against that record shape")


if __name__ == "__main__":
    main()
