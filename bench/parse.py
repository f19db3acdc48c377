"""Throughput of agent.parse on span lines against bare ``orjson.loads`` on the same lines.

The lines are written by ``agent.emit`` itself (so they look like production lines): traces of
seven spans - a root, nested retrieval and embedding spans, LLM calls with tokens, cost and
previews - of which only the span lines are kept. Variants:

* ``plain``: spans with contract fields only;
* ``metadata``: every span also gets app keyword arguments (``seq=n, user_tier="pro"``), which
  ``agent.emit`` writes as a nested ``"metadata": {...}`` object;
* ``context``: app context bound with ``structlog.contextvars`` (``request_id``, ``user_tier``),
  which arrives as unknown top-level keys;
* ``e2e``: ``bench/e2e.py``'s ``span_line`` (an LLM span with an unknown ``seq`` key), when that
  module imports (it needs asyncpg).

Both loops run over the same list in the same process; the figure is the ratio of lines per
second (goal: parse >= 0.5 x loads), and the share of lines the span fast path took.

    python bench/parse.py [--lines 200000] [--repeat 3] [--variant plain --variant metadata ...]
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
import structlog  # noqa: E402

from agent import emit  # noqa: E402
from agent.model import Row  # noqa: E402
from agent.parse import parse  # noqa: E402
from agent.parse_fast import fast_span  # noqa: E402

VARIANTS = ("plain", "metadata", "context", "e2e")


def one_trace(i: int, meta: dict[str, Any]) -> None:
    """Seven spans; ``meta`` (possibly empty) is passed to each as app keyword arguments."""
    def kw(n: int) -> dict[str, Any]:
        return {k: (7 * i + n if k == "seq" else v) for k, v in meta.items()}

    with emit.trace(f"question {i}", operation_type="rag_query"), emit.span("handle", "custom", **kw(0)):
        with emit.span("retrieve", "retrieval", **kw(1)) as r:
            with emit.span("embed query", "embedding", model="text-embedding-3-small", input_tokens=12, **kw(2)):
                pass
            with emit.span("vector search", "retrieval", result_count=8, **kw(3)):
                pass
            r.set(result_count=5)
        with emit.span("rerank", "rerank", result_count=5, **kw(4)):
            pass
        emit.llm_call("gpt-4o-mini", input_tokens=1800 + i % 100, output_tokens=250, cost_usd=0.00042 + i % 97 * 1e-6,
                      temperature=0.2, input_preview="Answer the question using the context: ...",
                      output_preview="Hypertail is a sidecar that ...", duration_ms=900, **kw(5))
        with emit.span("format answer", "custom", **kw(6)):
            pass


def span_lines(count: int, variant: str = "plain") -> list[bytes]:
    """``count`` span lines as ``agent.emit`` writes them, in the given variant."""
    if variant == "e2e":
        return e2e_lines(count)
    meta = {"seq": 0, "user_tier": "pro"} if variant == "metadata" else {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spans.log"
        emit.configure(path, max_bytes=2**40)
        try:
            for i in range(count // 7 + 1):
                if variant == "context":
                    with structlog.contextvars.bound_contextvars(request_id=f"req-{i:08d}", user_tier="pro"):
                        one_trace(i, meta)
                else:
                    one_trace(i, meta)
        finally:
            emit.shutdown()
        lines = [line for line in path.read_bytes().splitlines() if b'"record_type":"span"' in line]
    return lines[:count]


def e2e_lines(count: int) -> list[bytes]:
    """``bench/e2e.py``'s span lines (without their newline); raises ImportError without asyncpg."""
    sys.path.insert(0, str(ROOT / "bench"))
    from e2e import span_line  # type: ignore[import-not-found]

    return [span_line(i).rstrip(b"\n") for i in range(count)]


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
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="repeatable; default: all")
    args = parser.parse_args()

    print(f"{'variant':9} {'bytes':>5} {'fast':>5} {'loads us':>9} {'parse us':>9} {'parse lines/s':>14} {'ratio':>6}")
    for variant in args.variant or VARIANTS:
        try:
            lines = span_lines(args.lines, variant)
        except ImportError as exc:
            print(f"{variant:9} skipped: {exc}")
            continue
        assert len(lines) == args.lines
        sample = lines[:2000]
        assert all(isinstance(parse(line), Row) for line in sample)
        fast = sum(fast_span(orjson.loads(line), "record_type") is not None for line in sample) / len(sample)
        loads = rate(orjson.loads, lines, args.repeat)
        parsed = rate(parse, lines, args.repeat)
        size = sum(map(len, lines)) / len(lines)
        print(f"{variant:9} {size:5.0f} {fast:5.0%} {1e6 / loads:9.2f} {1e6 / parsed:9.2f} {parsed:14,.0f} "
              f"{parsed / loads:6.2f}")
    print("ratio = parse lines/s / orjson.loads lines/s (goal >= 0.5); fast = share on the span fast path")


if __name__ == "__main__":
    main()
