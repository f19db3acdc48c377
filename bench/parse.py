"""Cost of agent.parse per line shape, against bare ``orjson.loads`` of the same lines, and which
path each line of the mixed file takes.

The shapes are those of the mixed bench file (``tests/mixed.py``): spans as ``agent.emit``
writes them, without ``started_at``, with a custom discriminator key, with shuffled keys and
dropped optional fields, with nested metadata; trace start and end records, chat messages,
document events and app-log lines (stored: timed to their ``logs`` row). Each shape goes through
one :class:`agent.parse.Parser` as a source's lines do in the runner (its typed decoders learn
the shape's app keys from its first line), over ``--lines`` distinct lines, in rounds that
alternate the shapes and the ``orjson.loads`` baseline, by process CPU time (the machine is
shared: wall time would count other processes), with the agent's collector settings; the best
round counts. Then the mixed file is parsed as two sources (one per discriminator key), and each
line counted by the path that decided it: the typed decoder, or the tolerant path.

Goal (issue 21): every shape <= 3 us/line and within 1.5x of the fastest shape.

    python bench/parse.py [--lines 20000] [--rounds 7] [--mixed 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from agent.model import Row  # noqa: E402
from agent.parse import Parser  # noqa: E402
from agent.parse.applogs import AppLogPolicy  # noqa: E402
from agent.runner.lifecycle import _settle_gc  # noqa: E402
from tests.mixed import SHAPES, mixed_shapes  # noqa: E402


def cpu_us(fn: Callable[[bytes], Any], lines: list[bytes]) -> float:
    start = time.process_time()
    for line in lines:
        fn(line)
    return (time.process_time() - start) / len(lines) * 1e6


def source_parser(key: str) -> Parser:
    """A parser as the runner makes one for a source that stores its app-log lines."""
    return Parser(key, app_logs=AppLogPolicy(), source="bench")


def paths(n: int) -> dict[str, Counter[str]]:
    """Per shape, how many lines of the first ``n`` of the mixed file each path decided."""
    parsers: dict[str, Parser] = {}
    out: dict[str, Counter[str]] = {name: Counter() for name in SHAPES}
    for name, line in mixed_shapes(n):
        parser = parsers.get(line.key) or parsers.setdefault(line.key, source_parser(line.key))
        if parser.typed(line.data) is None:
            parser.tolerant(line.data)
            out[name]["tolerant"] += 1
        else:
            out[name]["typed"] += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--mixed", type=int, default=20_000, help="lines of the mixed file to count paths on")
    args = parser.parse_args()

    data: dict[str, tuple[list[bytes], Parser]] = {}
    for name, shape in SHAPES.items():
        made = [shape(seq) for seq in range(args.lines)]
        ours = source_parser(made[0].key)
        data[name] = ([m.data for m in made], ours)
        for m in made[:100]:  # the bench times real rows (app-log lines: logs rows), not dead letters
            assert isinstance(ours.parse(m.data), Row), (name, ours.parse(m.data))
    _settle_gc()
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for name, (lines, ours) in data.items():
            for label, fn in (("parse", ours.parse), ("loads", orjson.loads)):
                t = cpu_us(fn, lines)
                best[name, label] = min(best.get((name, label), t), t)
    counted = paths(args.mixed)
    fastest = min(best[n, "parse"] for n in data)
    print(f"{'shape':22} {'bytes':>5} {'loads us':>9} {'parse us':>9} {'x loads':>8} {'x fastest':>9}"
          f" {'mixed: typed':>13} {'tolerant':>9}")
    for name, (lines, _) in data.items():
        p, loads = best[name, "parse"], best[name, "loads"]
        size = sum(map(len, lines)) / len(lines)
        typed, tolerant = counted[name]["typed"], counted[name]["tolerant"]
        print(f"{name:22} {size:5.0f} {loads:9.2f} {p:9.2f} {p / loads:8.2f} {p / fastest:9.2f}"
              f" {typed:13d} {tolerant:9d}")
    worst = max(best[n, "parse"] for n in data)
    total = sum(sum(c.values()) for c in counted.values())
    typed_share = sum(c["typed"] for c in counted.values()) / total
    print(f"slowest shape {worst:.2f} us/line (goal <= 3), {worst / fastest:.2f}x the fastest shape (goal <= 1.5); "
          f"mixed file: {typed_share:.2%} of {total} lines typed")


if __name__ == "__main__":
    main()
