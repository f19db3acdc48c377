"""OTLP JSON Lines against structlog lines, on the same spans, in the same run (issue 23).

    python bench/otel.py [--spans 50000] [--rounds 5] [--dsn DSN] [--no-e2e]

The spans come from the real OpenTelemetry SDK: a RAG request as a GenAI app instruments it (a
server span, an embeddings call, a retrieval, a chat call with the gen_ai attributes), exported
by ``opentelemetry-exporter-otlp-json-file``'s ``FileSpanExporter`` behind a ``BatchSpanProcessor``
(512 spans per line, its default). The same spans are also written as ``agent.emit`` writes a
span (one structlog line each, the attributes in ``metadata``), so both formats carry the same
information.

1. Parse: CPU microseconds per span and spans per CPU-second of :class:`agent.parse.Parser` on
   each file (``format = "otlp_json"`` against the default), in rounds that alternate the two,
   by process CPU time (the machine is shared), the best round counting; and the OTLP lines' sizes.
2. End to end (unless ``--no-e2e``): ``hypertail run --exit-when-idle`` on each file into a fresh
   database (embedded PostgreSQL unless ``--dsn``): spans per second and the agent's CPU
   microseconds per span (wait4, minus an empty run's), rows checked.

Prints figures; asserts nothing but the row counts.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opentelemetry import trace as otel_trace  # noqa: E402
from opentelemetry.exporter.otlp.json.file import FileSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from agent.parse import Parser  # noqa: E402
from agent.parse.applogs import AppLogPolicy  # noqa: E402
from agent.runner.lifecycle import _settle_gc  # noqa: E402
from bench.e2e import count, fresh_db, run_agent  # noqa: E402
from tests.pgserver import admin_dsn, drop_database  # noqa: E402

SPAN_TYPES = {"chat": "llm", "embeddings": "embedding", "retrieval": "retrieval"}


def make_spans(n: int) -> tuple[list[bytes], list[ReadableSpan]]:
    """About ``n`` spans of RAG requests: their OTLP lines (as the file exporter writes them) and
    the spans themselves."""
    out = io.StringIO()
    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "rag-api", "deployment.environment.name": "prod"}))
    tp.add_span_processor(BatchSpanProcessor(FileSpanExporter(stream=out), max_queue_size=n + 1024,
                                             schedule_delay_millis=600_000))
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tracer = tp.get_tracer("opentelemetry.instrumentation.openai_v2", "2.1b0")
    for i in range(n // 4):
        with tracer.start_as_current_span("POST /ask", kind=otel_trace.SpanKind.SERVER, attributes={
                "http.request.method": "POST", "url.path": "/ask", "http.response.status_code": 200}):
            with tracer.start_as_current_span("embeddings text-embedding-3-small", kind=otel_trace.SpanKind.CLIENT,
                                              attributes={"gen_ai.operation.name": "embeddings",
                                                          "gen_ai.provider.name": "openai",
                                                          "gen_ai.request.model": "text-embedding-3-small",
                                                          "gen_ai.usage.input_tokens": 21 + i % 7}):
                pass
            with tracer.start_as_current_span("retrieval kb", attributes={
                    "gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "kb-1",
                    "db.system.name": "postgresql"}):
                pass
            with tracer.start_as_current_span("chat gpt-4o", kind=otel_trace.SpanKind.CLIENT, attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
                    "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 512,
                    "gen_ai.usage.input_tokens": 1207 + i % 300, "gen_ai.usage.output_tokens": 300 + i % 50,
                    "gen_ai.response.id": f"chatcmpl-{i:020d}", "gen_ai.response.finish_reasons": ["stop"],
                    "server.address": "api.openai.com", "server.port": 443}):
                pass
    tp.shutdown()
    return [line.encode() for line in out.getvalue().splitlines()], list(memory.get_finished_spans())


def structlog_line(s: ReadableSpan) -> bytes:
    """The span as ``agent.emit`` writes one: the LLM columns named, every attribute in metadata."""
    a = dict(s.attributes or {})
    ctx, parent = s.get_span_context(), s.parent
    start, end = s.start_time or 0, s.end_time or 0
    rec: dict[str, Any] = {
        "span_id": format(ctx.span_id, "016x"), "trace_id": format(ctx.trace_id, "032x"),
        "name": s.name, "span_type": SPAN_TYPES.get(str(a.get("gen_ai.operation.name")), "custom"),
        "status": "completed", "started_at": datetime.fromtimestamp(start / 1e9, UTC).isoformat(),
        "duration_ms": (end - start) // 1_000_000, "metadata": {**a, "service.name": "rag-api"},
        "record_type": "span", "event": "span", "level": "info",
        "timestamp": datetime.fromtimestamp(end / 1e9, UTC).isoformat(),
    }
    if parent is not None:
        rec["parent_span_id"] = format(parent.span_id, "016x")
    for column, key in (("model", "gen_ai.response.model"), ("input_tokens", "gen_ai.usage.input_tokens"),
                        ("output_tokens", "gen_ai.usage.output_tokens"), ("temperature", "gen_ai.request.temperature")):
        if key in a:
            rec[column] = a[key]
    return orjson.dumps(rec)


def cpu_s(parse: Callable[[bytes], Any], lines: Sequence[bytes]) -> float:
    start = time.process_time()
    for line in lines:
        parse(line)
    return time.process_time() - start


def parse_figures(otlp: list[bytes], plain: list[bytes], spans: int, rounds: int) -> dict[str, Any]:
    _settle_gc()
    otlp_parser = Parser(source="bench", format="otlp_json", app_logs=AppLogPolicy())
    plain_parser = Parser(source="bench", app_logs=AppLogPolicy())
    best = {"otlp_json": float("inf"), "structlog": float("inf")}
    for _ in range(rounds):
        best["otlp_json"] = min(best["otlp_json"], cpu_s(otlp_parser.parse, otlp))
        best["structlog"] = min(best["structlog"], cpu_s(plain_parser.parse, plain))
    sizes = sorted(map(len, otlp))
    return {
        "spans": spans, "otlp_lines": len(otlp), "otlp_line_kb_median": round(sizes[len(sizes) // 2] / 1024, 1),
        "otlp_line_kb_max": round(sizes[-1] / 1024, 1), "otlp_bytes_per_span": round(sum(sizes) / spans),
        "structlog_bytes_per_span": round(sum(map(len, plain)) / spans),
        "otlp_cpu_us_per_span": round(best["otlp_json"] / spans * 1e6, 2),
        "structlog_cpu_us_per_span": round(best["structlog"] / spans * 1e6, 2),
        "otlp_spans_per_cpu_s": round(spans / best["otlp_json"]),
        "structlog_spans_per_cpu_s": round(spans / best["structlog"]),
        "cpu_ratio_otlp_to_structlog": round(best["otlp_json"] / best["structlog"], 2),
    }


def config(tmp: Path, dsn: str, logs: Path, fmt: str) -> Path:
    p = tmp / f"otel-{fmt}.toml"
    p.write_text(f"""
[database]
dsn = "{dsn}"
[[sources]]
name = "bench"
paths = ["{logs}/*"]
format = "{fmt}"
[tail]
rescan_interval_ms = 200
[http]
enabled = false
[ops]
rollup_enabled = false
[agent]
id = "bench"
""")
    return p


def e2e_figures(admin: str, tmp: Path, files: dict[str, list[bytes]], spans: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    empty_logs = tmp / "empty"
    empty_logs.mkdir()
    dsn = asyncio.run(fresh_db(admin, "bench_otel_empty"))
    empty = run_agent(config(tmp, dsn, empty_logs, "structlog"))
    asyncio.run(drop_database(admin, "bench_otel_empty"))
    for fmt, lines in files.items():
        logs = tmp / fmt
        logs.mkdir()
        (logs / "spans.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        dsn = asyncio.run(fresh_db(admin, f"bench_otel_{fmt}"))
        run = run_agent(config(tmp, dsn, logs, fmt))
        got = asyncio.run(count(dsn))
        asyncio.run(drop_database(admin, f"bench_otel_{fmt}"))
        assert got == spans, f"{fmt}: {got} span rows, expected {spans}"
        wall, cpu = run["wall"] - empty["wall"], run["cpu"] - empty["cpu"]
        out[fmt] = {"spans_per_s": round(spans / wall), "agent_cpu_us_per_span": round(cpu / spans * 1e6, 2),
                    "agent_wall_s": round(run["wall"], 2), "peak_rss_mb": round(run["peak_rss"] / 2**20, 1)}
    out["agent_fixed_cost_s"] = round(empty["wall"], 2)
    out["cpu_ratio_otlp_to_structlog"] = round(out["otlp_json"]["agent_cpu_us_per_span"]
                                               / out["structlog"]["agent_cpu_us_per_span"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dsn", help="an admin DSN (default: start an embedded PostgreSQL)")
    p.add_argument("--no-e2e", action="store_true", help="only the parse figures")
    a = p.parse_args()
    otlp, spans = make_spans(a.spans)
    plain = [structlog_line(s) for s in spans]
    out = {"parse": parse_figures(otlp, plain, len(spans), a.rounds)}
    print(json.dumps(out, indent=2), flush=True)
    if not a.no_e2e:
        with admin_dsn(a.dsn) as admin, tempfile.TemporaryDirectory(prefix="hypertail-bench-otel-") as tmp:
            out["e2e"] = e2e_figures(admin, Path(tmp), {"otlp_json": otlp, "structlog": plain}, len(spans))
        print(json.dumps(out["e2e"], indent=2), flush=True)


if __name__ == "__main__":
    main()
