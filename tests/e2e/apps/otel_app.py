"""An OpenTelemetry app for the e2e test of issue 23: the real SDK and its OTLP JSON file exporters,
set up as docs/opentelemetry.md says (a ``BatchSpanProcessor(FileSpanExporter(path))`` and a
``BatchLogRecordProcessor(FileLogExporter(path))``, one file per signal), plus ``agent.emit`` in
the same process writing into the same traces.

Each request is a root server span with nested spans under it: a retrieval, a chat call with the
GenAI attributes of the current conventions (model, tokens, temperature, the conversation and its
messages: a long system prompt, as RAG apps send, so a batch line is several MiB), and a tool call
that fails with an exception every fifth request; log records through the stdlib ``logging``
handler inside the spans (an error one for each failure); and, inside the chat span, an
``emit.span`` and a structlog line written by ``agent.emit`` to its own file.

What it did is saved to ``oracle.json``: every span (ids, parent, name, failed or not), every
log record (its trace and span), every emit span.

    python -m tests.e2e.apps.otel_app --out DIR --requests 300
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.json.file import FileSpanExporter
from opentelemetry.exporter.otlp.json.file._log_exporter import FileLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agent import emit

SYSTEM_PROMPT = "Answer from the context below.\n" + "Chat messages are kept for 365 days. " * 400  # ~15 KB


def ids(span: Any) -> dict[str, str]:
    ctx = span.get_span_context()
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--requests", type=int, default=300)
    a = p.parse_args()
    resource = Resource.create({"service.name": "rag-api"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(FileSpanExporter(a.out / "spans.jsonl"),
                                                          max_queue_size=8192, schedule_delay_millis=60_000))
    trace.set_tracer_provider(tracer_provider)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(  # smaller batches: more lines
        FileLogExporter(a.out / "logs.jsonl"), max_queue_size=8192, max_export_batch_size=64,
        schedule_delay_millis=60_000))
    set_logger_provider(logger_provider)
    log = logging.getLogger("rag")
    log.addHandler(LoggingHandler(logger_provider=logger_provider))
    log.setLevel(logging.INFO)
    log.propagate = False
    emit.configure(str(a.out / "app.log"))
    slog = structlog.get_logger("rag.emit")
    tracer = trace.get_tracer("rag", "1.0")
    oracle: dict[str, list[dict[str, Any]]] = {"spans": [], "logs": [], "emit_spans": []}

    def record(span: Any, parent: Any, failed: bool = False) -> None:
        oracle["spans"].append({**ids(span), "parent": ids(parent)["span_id"] if parent else None,
                                "name": span.name, "failed": failed})

    for i in range(a.requests):
        with tracer.start_as_current_span("POST /ask", kind=trace.SpanKind.SERVER,
                                          attributes={"http.request.method": "POST", "url.path": "/ask"}) as root:
            with tracer.start_as_current_span("retrieval kb", attributes={
                    "gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "kb-1"}) as retrieval:
                log.info("retrieved %d chunks", 3 + i % 4)
                oracle["logs"].append(ids(retrieval))
            record(retrieval, root)
            messages = [{"role": "system", "parts": [{"type": "text", "content": SYSTEM_PROMPT}]},
                        {"role": "user", "parts": [{"type": "text", "content": f"question {i}?"}]}]
            answer = [{"role": "assistant", "parts": [{"type": "text", "content": f"answer {i}."}],
                       "finish_reason": "stop"}]
            with tracer.start_as_current_span("chat gpt-4o", kind=trace.SpanKind.CLIENT, attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
                    "gen_ai.request.temperature": 0.2, "gen_ai.usage.input_tokens": 1000 + i,
                    "gen_ai.usage.output_tokens": 100 + i, "gen_ai.conversation.id": f"conv-{i % 10}",
                    "gen_ai.input.messages": json.dumps(messages), "gen_ai.output.messages": json.dumps(answer),
            }) as chat:
                log.info("asked the model", extra={"request": i})
                oracle["logs"].append(ids(chat))
                with emit.span("rerank", "rerank", result_count=3) as rerank:  # agent.emit, in OTel's trace
                    slog.info("reranked", request=i)
                oracle["emit_spans"].append({**ids(chat), "emit_span_id": rerank.span_id})
            record(chat, root)
            if i % 5 == 4:
                try:
                    with tracer.start_as_current_span("execute_tool search", attributes={
                            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}) as tool:
                        raise TimeoutError(f"search timed out on request {i}")
                except TimeoutError:
                    log.error("tool failed", exc_info=True)
                    oracle["logs"].append({**ids(root)})
                record(tool, root, failed=True)
        oracle["spans"].append({**ids(root), "parent": None, "name": root.name, "failed": False})
    tracer_provider.shutdown()
    logger_provider.shutdown()
    emit.shutdown()
    (a.out / "oracle.json").write_text(json.dumps(oracle))


if __name__ == "__main__":
    main()
