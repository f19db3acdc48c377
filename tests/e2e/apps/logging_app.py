"""An app for the e2e tests of issue 13: traces, spans and ordinary log lines, inside and outside
traces, written through agent.emit (``--via emit``) or plain structlog with hypertail's processors
(``--via structlog``). Every log line carries a unique ``seq``; the ids that were active when it
was written are saved to ``--ids`` (JSON: seq -> [trace_id, span_id]) as the test's oracle.

    python -m tests.e2e.apps.logging_app --out app.log --ids ids.json --traces 50 [--via structlog]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import structlog

from agent import emit


class App:
    def __init__(self, start: int) -> None:
        self.seq = start
        self.ids: dict[int, list[str | None]] = {}
        self.log: Any = structlog.get_logger("e2e.app")

    def line(self, level: str, event: str, **kw: Any) -> None:
        ctx = emit.current()
        self.ids[self.seq] = [ctx.trace_id, ctx.span_id] if ctx else [None, None]
        getattr(self.log, level)(event, seq=self.seq, **kw)
        self.seq += 1

    def run(self, traces: int) -> None:
        self.line("info", "app.started")
        for i in range(traces):
            with emit.trace("request", operation_type="chat") as t:
                self.line("info", "request.received", n=i)
                with emit.span("retrieve", "retrieval") as s:
                    self.line("debug", "retrieve.query", q="x")
                    with emit.span("rerank", "rerank"):
                        self.line("warning", "rerank.slow")
                    s.set(result_count=3)
                emit.llm_call("gpt-4o", input_tokens=100 + i, output_tokens=20, cost_usd=0.0012, duration_ms=3)
                self.line("error", "request.answered", tenant={"id": i})
                t.set(metadata_note="done")
            self.line("info", "between.requests")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ids", type=Path, required=True)
    p.add_argument("--traces", type=int, default=20)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--via", choices=("emit", "structlog"), default="emit")
    a = p.parse_args()
    if a.via == "emit":
        emit.configure(a.out, level="debug")
    else:  # the documented setup for apps that configure structlog themselves
        structlog.configure(processors=emit.processors(),
                            logger_factory=structlog.BytesLoggerFactory(a.out.open("ab", buffering=0)))
    app = App(a.start)
    app.run(a.traces)
    a.ids.write_text(json.dumps(app.ids))


if __name__ == "__main__":
    main()
