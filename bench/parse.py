"""Throughput of agent.parse on span lines against bare ``orjson.loads`` on the same lines.

The lines are written by ``agent.emit`` itself (so they look like production lines): traces of
seven spans - a root, nested retrieval and embedding spans, LLM calls with tokens, cost and
previews - of which only the span lines are kept. Both loops run over the same list in the same
process; the figure is the ratio of lines per second (goal: parse >= 0.5 x loads).

    python bench/parse.py [--lines 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from agent import emit  # noqa: E402
from agent.model import Row  # noqa: E402
from agent.parse import parse  # noqa: E402


def one_trace(i: int) -> None:
    with emit.trace(f"question {i}", operation_type="rag_query"), emit.span("handle", "custom"):
        with emit.span("retrieve", "retrieval") as r:
            with emit.span("embed query", "embedding", model="text-embedding-3-small", input_tokens=12):
                pass
            with emit.span("vector search", "retrieval", result_count=8):
                pass
            r.set(result_count=5)
        with emit.span("rerank", "rerank", result_count=5):
            pass
        emit.llm_call("gpt-4o-mini", input_tokens=1800 + i % 100, output_tokens=250, cost_usd=0.00042,
                      temperature=0.2, input_preview="Answer the question using the context: ...",
                      output_preview="Hypertail is a sidecar that ...", duration_ms=900)
        with emit.span("format answer", "custom"):
            pass


def span_lines(count: int) -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spans.log"
        emit.configure(path, max_bytes=2**40)
        try:
            for i in range(count // 7 + 1):
                one_trace(i)
        finally:
            emit.shutdown()
        lines = [line for line in path.read_bytes().splitlines() if b'"record_type":"span"' in line]
    return lines[:count]


def rate(fn: Callable[[bytes], Any], lines: list[bytes], repeat: int) -> float:
    """Best lines/s over ``repeat`` passes."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for line in lines:
            fn(line)
        best = max(best, len(lines) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    lines = span_lines(args.lines)
    assert len(lines) == args.lines
    assert all(isinstance(parse(line), Row) for line in lines[:1000])
    loads = rate(orjson.loads, lines, args.repeat)
    parsed = rate(parse, lines, args.repeat)
    size = sum(map(len, lines)) / len(lines)
    print(f"span lines:        {len(lines)} (mean {size:.0f} bytes)")
    print(f"orjson.loads:      {loads:12,.0f} lines/s  ({1e6 / loads:.2f} us/line)")
    print(f"agent.parse.parse: {parsed:12,.0f} lines/s  ({1e6 / parsed:.2f} us/line)")
    print(f"ratio parse/loads: {parsed / loads:12.2f}   (goal >= 0.5)")


if __name__ == "__main__":
    main()
