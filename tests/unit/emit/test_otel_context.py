"""agent.emit inside a span of the real OpenTelemetry SDK (issue 23): one trace for both, whatever
emit writes there carrying the OTel span's ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import structlog
from opentelemetry.sdk.trace import TracerProvider

from agent import emit


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_emit_records_inside_an_otel_span_carry_its_ids(log_path: Path) -> None:
    tracer = TracerProvider().get_tracer("test")  # not the global provider: nothing else sees it
    with tracer.start_as_current_span("POST /ask") as otel_span:
        ctx = otel_span.get_span_context()
        trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
        assert emit.current() == emit.TraceContext(trace_id, span_id, int(ctx.trace_flags))
        with emit.span("rerank", "rerank") as s:
            structlog.get_logger().info("inside emit's span")
        structlog.get_logger().info("inside the otel span")
        emit.chat_message("user", "hi", conversation_id="c1")
    structlog.get_logger().info("after")
    inner_log, span, otel_log, chat, after = records(log_path)
    assert (span["trace_id"], span["parent_span_id"]) == (trace_id, span_id)
    assert (inner_log["trace_id"], inner_log["span_id"]) == (trace_id, s.span_id)
    assert (otel_log["trace_id"], otel_log["span_id"]) == (trace_id, span_id)
    assert (chat["trace_id"], chat["span_id"]) == (trace_id, span_id)
    assert "trace_id" not in after and emit.current() is None
