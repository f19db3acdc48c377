"""OTLP JSON lines -> rows (issue 23): the real exporter's output, the encoding's liberties (base64
ids, numbers as text, enum names, absent fields), spans, log records, metric data points, and what
becomes of a line or a record that cannot be rows."""

from __future__ import annotations

import base64
import io
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.json.file import FileMetricExporter, FileSpanExporter
from opentelemetry.exporter.otlp.json.file._log_exporter import FileLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from agent import contract as c
from agent.model import AppLog, DeadLetter, Row, Rows
from agent.parse import Parser
from agent.parse.applogs import AppLogPolicy
from tests.otlp import T0, TRACE, exception, log_record, logs_line, metrics_line, span, traces_line

LINE_ID = "6f1c1d0e-8f43-4b8e-9a51-3b7f6c2d9e10"
SPANS = c.COLUMNS["spans"]
TRACES = c.COLUMNS["traces"]


def parse(line: bytes, app_logs: AppLogPolicy | None = None) -> Any:
    return Parser(source="otel", format="otlp_json", app_logs=app_logs or AppLogPolicy()).parse(line, lambda: LINE_ID)


def rows(line: bytes, table: str | None = None, **kw: Any) -> list[dict[str, Any]]:
    """The line's rows (of ``table``) as column -> value, metadata decoded; the line must be all rows."""
    result = parse(line, **kw)
    assert type(result) is Rows and result.dead is None, result
    return [as_dict(r) for r in result.rows if table is None or r.table == table]


def as_dict(r: Row) -> dict[str, Any]:
    d = dict(zip(c.COLUMNS[r.table], r.values, strict=True))
    d["_table"] = r.table
    for key in ("metadata", "attributes", "resource", "buckets"):
        if isinstance(d.get(key), str):
            d[key] = orjson.loads(d[key])
    return d


def at(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 / 1e6, UTC)


# --- the real exporter ------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")
def test_the_python_exporters_lines_become_rows() -> None:
    """opentelemetry-exporter-otlp-json-file's own output: nested spans, a failed one, a log record
    inside a span, metrics; each span one row, the root one trace row too."""
    spans_out, logs_out, metrics_out = io.StringIO(), io.StringIO(), io.StringIO()
    resource = Resource.create({"service.name": "rag-api"})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(FileSpanExporter(stream=spans_out)))
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(FileLogExporter(stream=logs_out)))
    logger = logging.getLogger("tests.otlp.app")
    logger.addHandler(LoggingHandler(logger_provider=lp))
    logger.propagate = False
    reader = PeriodicExportingMetricReader(FileMetricExporter(stream=metrics_out), export_interval_millis=3_600_000)
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    tracer = tp.get_tracer("rag", "1.2")
    try:
        with tracer.start_as_current_span("ask", kind=otel_trace.SpanKind.SERVER) as root:
            with tracer.start_as_current_span("chat gpt-4o", kind=otel_trace.SpanKind.CLIENT, attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3}):
                logger.warning("inside %s", "chat", extra={"user": "u-7"})
            with pytest.raises(ValueError), tracer.start_as_current_span("fail"):
                raise ValueError("boom")
        mp.get_meter("app").create_counter("requests").add(3, {"route": "/ask"})
        mp.force_flush()
    finally:
        tp.shutdown()
        lp.shutdown()
        mp.shutdown()
        logger.handlers.clear()
    trace_id = format(root.get_span_context().trace_id, "032x")
    got = [r for line in spans_out.getvalue().splitlines() for r in rows(line.encode())]
    spans = {r["name"]: r for r in got if r["_table"] == "spans"}
    assert set(spans) == {"ask", "chat gpt-4o", "fail"}
    assert {r["trace_id"] for r in spans.values()} == {trace_id}
    assert spans["chat gpt-4o"]["parent_span_id"] == spans["ask"]["span_id"] == spans["fail"]["parent_span_id"]
    chat = spans["chat gpt-4o"]
    assert (chat["span_type"], chat["model"], chat["input_tokens"], chat["output_tokens"], chat["status"]) == \
        ("llm", "gpt-4o", 12, 3, "completed")
    assert chat["metadata"]["resource"]["service.name"] == "rag-api"
    assert (chat["metadata"]["otel.scope.name"], chat["metadata"]["otel.scope.version"]) == ("rag", "1.2")
    assert chat["metadata"]["span.kind"] == "client"
    assert (spans["fail"]["status"], spans["fail"]["error_type"], spans["fail"]["error_message"]) == \
        ("failed", "ValueError", "boom")
    [trace] = [r for r in got if r["_table"] == "traces"]
    assert (trace["trace_id"], trace["name"], trace["status"], trace["timestamp"]) == \
        (trace_id, "ask", "completed", spans["ask"]["timestamp"])
    [log] = [r for line in logs_out.getvalue().splitlines() for r in rows(line.encode())]
    assert (log["trace_id"], log["span_id"], log["level"], log["event"], log["logger"], log["source"]) == \
        (trace_id, chat["span_id"], "warning", "inside chat", "tests.otlp.app", "otel")
    assert log["metadata"]["user"] == "u-7"
    [metric] = rows(metrics_out.getvalue().splitlines()[0].encode())  # then shutdown exports it again
    assert (metric["name"], metric["kind"], metric["temporality"], metric["value"], metric["attributes"]) == \
        ("requests", "counter", "cumulative", 3.0, {"route": "/ask"})


# --- spans -------------------------------------------------------------------------------------------

def test_a_span_and_its_columns() -> None:
    line = traces_line(span("00f067aa0ba902b7", name="retrieve", duration_ms=12, kind=3,
                            attributes={"n": 3, "tags": ["a", "b"], "cfg": {"k": 1.5}, "ok": True}))
    [s, t] = rows(line)
    assert s["_table"] == "spans" and t["_table"] == "traces"
    assert (s["span_id"], s["trace_id"], s["parent_span_id"], s["timestamp"], s["duration_ms"]) == \
        ("00f067aa0ba902b7", TRACE, None, at(T0), 12)
    assert s["metadata"] == {"n": 3, "tags": ["a", "b"], "cfg": {"k": 1.5}, "ok": True, "span.kind": "client",
                             "otel.scope.name": "rag", "resource": {"telemetry.sdk.language": "python",
                             "telemetry.sdk.name": "opentelemetry", "service.name": "rag-api"}}
    assert (t["ended_at"], t["duration_ms"], t["status"]) == (at(T0 + 12_000_000), 12, "completed")
    assert next(r for r in parse(line).rows if r.table == "traces").merge  # a root exported twice merges


def test_only_a_span_without_a_parent_is_a_trace() -> None:
    line = traces_line(span("00f067aa0ba902b7"), span("1111111111111111", parent="00f067aa0ba902b7"),
                       span("2222222222222222", parent="0" * 16, trace_id="5" * 32),
                       span("3333333333333333", parent="not-an-id"))
    got = rows(line)
    assert [r["_table"] for r in got] == ["spans", "traces", "spans", "spans", "traces", "spans"]
    assert got[3]["parent_span_id"] is None and "_invalid" not in got[3]["metadata"]  # all zero: no parent
    assert (got[5]["parent_span_id"], got[5]["metadata"]["_invalid"]) == (None, {"parentSpanId": "not-an-id"})


def test_ids_of_any_case_and_in_base64() -> None:
    b64_trace = base64.b64encode(bytes.fromhex(TRACE)).decode()
    b64_span = base64.b64encode(bytes.fromhex("00f067aa0ba902b7")).decode()
    for trace_id, span_id in ((TRACE.upper(), "00F067AA0BA902B7"), (b64_trace, b64_span),
                              (b64_trace.rstrip("="), b64_span.rstrip("="))):
        [s, _] = rows(traces_line(span(span_id, trace_id=trace_id)))
        assert (s["trace_id"], s["span_id"]) == (TRACE, "00f067aa0ba902b7"), (trace_id, span_id)


def test_numbers_as_text_or_numbers_and_enums_as_names() -> None:
    s = span("00f067aa0ba902b7", status=2, attributes={"gen_ai.usage.input_tokens": 7})
    s["startTimeUnixNano"], s["endTimeUnixNano"] = T0, T0 + 2_000_000  # numbers, not text
    s["kind"], s["status"] = "SPAN_KIND_SERVER", {"code": "STATUS_CODE_ERROR", "message": "bad gateway"}
    s["attributes"] = [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": 7}},
                       {"key": "ratio", "value": {"doubleValue": "NaN"}}]
    [r, _] = rows(traces_line(s))
    assert (r["timestamp"], r["duration_ms"], r["input_tokens"], r["status"], r["error_message"]) == \
        (at(T0), 2, 7, "failed", "bad gateway")
    assert r["metadata"]["span.kind"] == "server" and r["metadata"]["ratio"] == "NaN"


def test_empty_and_missing_fields() -> None:
    bare = {"traceId": TRACE, "spanId": "00f067aa0ba902b7", "startTimeUnixNano": str(T0)}
    [s, t] = rows(orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [bare]}]}]}))
    assert (s["name"], s["span_type"], s["status"], s["duration_ms"], s["metadata"]) == ("", "custom", "completed",
                                                                                       None, {})
    assert (t["name"], t["ended_at"]) == ("", None)
    for empty in (b'{"resourceSpans":[]}', b'{"resourceSpans":[{}]}', b'{"resourceLogs":[{"scopeLogs":[{}]}]}'):
        assert parse(empty) == Rows(())  # nothing to store: the line is consumed


def test_unknown_fields_are_ignored() -> None:
    s = span("00f067aa0ba902b7", droppedAttributesCount=3, newField={"x": [1]})
    line = orjson.dumps({"resourceSpans": [{"resource": {"attributes": [], "entityRefs": []}, "schemaUrl": "u",
                                            "scopeSpans": [{"scope": {"name": "rag"}, "spans": [s]}]}],
                         "somethingNew": 1})
    assert [r["_table"] for r in rows(line)] == ["spans", "traces"]


def test_an_exception_event_fills_the_error_columns() -> None:
    events = [{"name": "retry", "timeUnixNano": str(T0)}, exception("TimeoutError", "upstream"),
              exception("RuntimeError", "x" * 2000)]
    [s, t] = rows(traces_line(span("00f067aa0ba902b7", status=2, events=events)))
    assert (s["status"], s["error_type"], s["error_message"]) == ("failed", "RuntimeError", "x" * 1000)
    assert (t["status"], t["error_type"]) == ("failed", "RuntimeError")
    assert [e["name"] for e in s["metadata"]["events"]] == ["retry", "exception", "exception"]
    assert s["metadata"]["events"][1]["attributes"]["exception.type"] == "TimeoutError"
    failed = rows(traces_line(span("00f067aa0ba902b7", status=2, message="denied",
                                   attributes={"error.type": "PermissionError"})))[0]
    assert (failed["error_type"], failed["error_message"]) == ("PermissionError", "denied")


def test_nul_escapes_become_replacement_characters() -> None:
    attributes = {"k\u0000": "v\u0000", "path": "C:\\u0000"}
    line = traces_line(span("00f067aa0ba902b7", name="a\u0000b", attributes=attributes))
    assert b"\\u0000" in line
    [s, _] = rows(line)
    assert s["name"] == "a\ufffdb" and s["metadata"]["k\ufffd"] == "v\ufffd"
    assert s["metadata"]["path"] == "C:\\u0000"  # an escaped backslash before u0000 is text, not NUL


# --- GenAI naming schemes -------------------------------------------------------------------------

SCHEMES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "gen_ai (semconv 1.37+)": ({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 1207,
        "gen_ai.usage.output_tokens": 300, "gen_ai.request.temperature": 0.2, "gen_ai.usage.cost": 0.0125,
        "gen_ai.input.messages": orjson.dumps([{"role": "user", "parts": [{"type": "text", "content": "Hi?"}]}])
        .decode(),
        "gen_ai.output.messages": orjson.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Hello."}],
                                                 "finish_reason": "stop"}]).decode(),
    }, {"span_type": "llm", "model": "gpt-4o-2024-08-06", "input_tokens": 1207, "output_tokens": 300,
        "temperature": 0.2, "cost_usd": Decimal("0.012500"), "input_preview": "Hi?", "output_preview": "Hello."}),
    "gen_ai (before 1.27)": ({
        "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4", "gen_ai.usage.prompt_tokens": 10,
        "gen_ai.usage.completion_tokens": 4, "gen_ai.request.temperature": 1,
    }, {"span_type": "llm", "model": "gpt-4", "input_tokens": 10, "output_tokens": 4, "temperature": 1.0}),
    "OpenInference": ({
        "openinference.span.kind": "LLM", "llm.model_name": "claude-3-5-sonnet", "llm.token_count.prompt": 50,
        "llm.token_count.completion": 20, "llm.invocation_parameters": '{"temperature": 0.7, "max_tokens": 64}',
        "llm.cost.total": 0.0066, "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "Be brief.", "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Weather?", "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Rainy.", "input.value": "Weather?", "output.value": "Rainy.",
    }, {"span_type": "llm", "model": "claude-3-5-sonnet", "input_tokens": 50, "output_tokens": 20,
        "temperature": 0.7, "cost_usd": Decimal("0.006600"), "input_preview": "Weather?", "output_preview": "Rainy."}),
    "OpenInference retriever": ({
        "openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.id": "a",
        "retrieval.documents.0.document.score": 0.9, "retrieval.documents.1.document.id": "b",
    }, {"span_type": "retrieval", "result_count": 2, "model": None}),
    "OpenInference embedding": ({"openinference.span.kind": "EMBEDDING",
                                 "embedding.model_name": "text-embedding-3-small"},
                                {"span_type": "embedding", "model": "text-embedding-3-small"}),
    "Traceloop (2024-05 on)": ({
        "llm.request.type": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.prompt_tokens": 30, "gen_ai.usage.completion_tokens": 9, "llm.usage.total_tokens": 39,
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Tell a joke",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "No.",
    }, {"span_type": "llm", "model": "gpt-4o-mini", "input_tokens": 30, "output_tokens": 9,
        "input_preview": "Tell a joke", "output_preview": "No."}),
    "Traceloop (before 2024-05)": ({
        "llm.request.type": "completion", "llm.vendor": "OpenAI", "llm.request.model": "davinci",
        "llm.usage.prompt_tokens": 5, "llm.usage.completion_tokens": 6, "llm.temperature": 0.5,
        "llm.prompts.0.role": "user", "llm.prompts.0.content": "Say hi",
        "llm.completions.0.role": "assistant", "llm.completions.0.content": "hi",
    }, {"span_type": "llm", "model": "davinci", "input_tokens": 5, "output_tokens": 6, "temperature": 0.5,
        "input_preview": "Say hi", "output_preview": "hi"}),
    "Traceloop workflow": ({"traceloop.span.kind": "workflow", "traceloop.entity.name": "answer",
                            "traceloop.entity.input": '{"q": "why"}'},
                           {"span_type": "workflow", "input_preview": '{"q": "why"}'}),
    "embeddings operation": ({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e5"},
                             {"span_type": "embedding", "model": "e5"}),
    "tool": ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}, {"span_type": "tool"}),
    "agent": ({"gen_ai.operation.name": "invoke_agent"}, {"span_type": "agent"}),
    "http": ({"http.request.method": "GET"}, {"span_type": "http"}),
    "db": ({"db.system.name": "postgresql"}, {"span_type": "db"}),
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_each_genai_naming_scheme_fills_the_llm_columns(scheme: str) -> None:
    attributes, want = SCHEMES[scheme]
    [s, _] = rows(traces_line(span("00f067aa0ba902b7", attributes=attributes)))
    assert {k: s[k] for k in want} == want
    assert s["metadata"].items() >= {k: v for k, v in attributes.items() if "messages" not in k and ".0." not in k
                                     and k not in ("input.value", "output.value")}.items()


def test_out_of_range_llm_values_stay_in_metadata_only() -> None:
    attributes = {"gen_ai.request.model": "m" * 101, "gen_ai.usage.input_tokens": -1,
                  "gen_ai.usage.output_tokens": 2**40, "gen_ai.usage.cost": 12345.0,
                  "gen_ai.request.temperature": "hot"}
    [s, _] = rows(traces_line(span("00f067aa0ba902b7", attributes=attributes)))
    assert (s["model"], s["input_tokens"], s["output_tokens"], s["cost_usd"], s["temperature"]) == (None,) * 5
    assert s["metadata"].items() >= attributes.items()


def test_messages_of_a_conversation_become_chat_rows() -> None:
    attributes = {**SCHEMES["gen_ai (semconv 1.37+)"][0], "gen_ai.conversation.id": "conv-1",
                  "gen_ai.input.messages": orjson.dumps([
                      {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                      {"role": "user", "parts": [{"type": "text", "content": "Hi?"}]}]).decode()}
    got = rows(traces_line(span("00f067aa0ba902b7", duration_ms=900, attributes=attributes)))
    chats = [r for r in got if r["_table"] == "chat_messages"]
    assert [(m["role"], m["content"], m["conversation_id"]) for m in chats] == \
        [("user", "Hi?", "conv-1"), ("assistant", "Hello.", "conv-1")]
    user, reply = chats
    assert (user["timestamp"], reply["timestamp"]) == (at(T0), at(T0 + 900_000_000))
    assert (reply["model"], reply["input_tokens"], reply["output_tokens"], reply["latency_ms"]) == \
        ("gpt-4o-2024-08-06", 1207, 300, 900)
    assert reply["metadata"] == {"finish_reason": "stop"}
    assert (user["trace_id"], user["span_id"]) == (TRACE, "00f067aa0ba902b7")
    assert user["id"] != reply["id"]
    [s] = [r for r in got if r["_table"] == "spans"]
    assert "gen_ai.input.messages" not in s["metadata"] and "gen_ai.output.messages" not in s["metadata"]
    assert (s["input_preview"], s["output_preview"]) == ("Hi?", "Hello.")


def test_messages_without_a_conversation_stay_in_metadata_cut_to_the_preview_length() -> None:
    long = "x" * 2000
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.input.messages": orjson.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": long}]}]).decode(),
        "llm.input_messages.0.message.content": "short"}
    [s, _] = rows(traces_line(span("00f067aa0ba902b7", attributes=attributes)))
    assert len(s["metadata"]["gen_ai.input.messages"]) == c.PREVIEW_MAX
    assert s["metadata"]["llm.input_messages.0.message.content"] == "short"
    assert s["metadata"]["_truncated"] == ["gen_ai.input.messages"]
    assert s["input_preview"] == "x" * c.PREVIEW_MAX


# --- log records -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("number", "text", "level"), [
    (1, "TRACE", "trace"), (5, "DEBUG", "debug"), (9, "INFO", "info"), (13, "WARN", "warning"),
    (17, "ERROR", "error"), (21, "FATAL", "critical"), (24, "", "critical"), ("SEVERITY_NUMBER_WARN2", "", "warning"),
    (0, "Notice", "notice"), (0, "", None)])
def test_severity_becomes_the_level(number: Any, text: str, level: str | None) -> None:
    [r] = rows(logs_line(log_record("hello", severity=number, text=text)))
    assert r["level"] == level


def test_a_log_record_and_its_columns() -> None:
    rec = log_record({"msg": "structured"}, trace_id=TRACE.upper(), span_id="00f067aa0ba902b7",
                     attributes={"k": "v"}, eventName="app.started")
    [r] = rows(logs_line(rec))
    assert (r["timestamp"], r["trace_id"], r["span_id"], r["level"], r["logger"], r["event"], r["source"]) == \
        (at(T0), TRACE, "00f067aa0ba902b7", "info", "app.x", '{"msg":"structured"}', "otel")
    assert r["metadata"] == {"k": "v", "event.name": "app.started", "resource": {
        "telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry", "service.name": "rag-api"}}


def test_a_log_record_without_a_time_or_with_bad_ids_is_still_stored() -> None:
    rec = log_record(None, trace_id="nothex", span_id="00f067aa0ba902b7", eventName="tick")
    rec.pop("timeUnixNano")
    observed = rows(logs_line(rec))[0]
    assert (observed["timestamp"], observed["trace_id"], observed["event"]) == (at(T0 + 1000), None, "tick")
    assert observed["metadata"]["_invalid"] == {"traceId": "nothex"}
    rec.pop("observedTimeUnixNano")
    before = datetime.now(UTC)
    [r] = rows(logs_line(rec))
    assert r["timestamp"] >= before and r["metadata"]["_time_from_agent"] is True


def test_the_sources_app_log_policy_counts_what_it_does_not_store() -> None:
    line = logs_line(log_record("dbg", severity=5), log_record("warn", severity=13))
    kept = parse(line, AppLogPolicy(True, "info"))
    assert [r.values[6] for r in kept.rows] == ["warn"] and kept.app_logs == 1
    assert parse(line, AppLogPolicy(False)) == Rows((), None, 2)


def test_genai_message_events_of_a_conversation_become_chat_rows() -> None:
    ids = {"trace_id": TRACE, "span_id": "00f067aa0ba902b7"}
    user = log_record({"content": "Hi?"}, eventName="gen_ai.user.message",
                      attributes={"gen_ai.conversation.id": "conv-9", "gen_ai.system": "openai"}, **ids)
    choice = log_record({"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Yo."}},
                        attributes={"event.name": "gen_ai.choice", "session.id": "conv-9"}, **ids)
    alone = log_record({"content": "no conversation"}, eventName="gen_ai.user.message", **ids)
    got = rows(logs_line(user, choice, alone))
    assert [r["_table"] for r in got] == ["chat_messages", "logs", "chat_messages", "logs", "logs"]
    assert [(r["role"], r["content"], r["conversation_id"], r["span_id"]) for r in got if r["_table"] != "logs"] == \
        [("user", "Hi?", "conv-9", "00f067aa0ba902b7"), ("assistant", "Yo.", "conv-9", "00f067aa0ba902b7")]
    assert len({r["id"] for r in got}) == 5


# --- metrics ---------------------------------------------------------------------------------------

def test_a_resource_metrics_line() -> None:
    exemplar = {"traceId": TRACE, "spanId": "00f067aa0ba902b7", "asDouble": 9.5, "timeUnixNano": str(T0)}
    point = {"attributes": [{"key": "route", "value": {"stringValue": "/ask"}}],
             "startTimeUnixNano": str(T0), "timeUnixNano": str(T0 + 10**10)}
    line = metrics_line(
        {"name": "requests", "unit": "1", "sum": {"dataPoints": [{**point, "asInt": "12"}], "aggregationTemporality": 2,
                                                  "isMonotonic": True}},
        {"name": "inflight", "sum": {"dataPoints": [{**point, "asInt": "-2"}], "aggregationTemporality": 1}},
        {"name": "queue", "description": "depth",
         "gauge": {"dataPoints": [{"timeUnixNano": str(T0), "asDouble": 7.5}]}},
        {"name": "latency", "unit": "ms", "histogram": {"aggregationTemporality": 1, "dataPoints": [{
            **point, "count": "3", "sum": 60.5, "min": 1.5, "max": 40, "bucketCounts": ["1", "1", "1"],
            "explicitBounds": [5, 25], "exemplars": [exemplar]}]}},
        {"name": "size", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [{
            **point, "count": "4", "sum": 10, "scale": 3, "zeroCount": "1",
            "positive": {"offset": 8, "bucketCounts": ["2", "0", "1"]}, "negative": {}}]}},
        {"name": "rpc", "summary": {"dataPoints": [{**point, "count": "5", "sum": 2.5,
                                                    "quantileValues": [{"quantile": 0.5, "value": 0.4}]}]}},
    )
    got = {r["name"]: r for r in rows(line)}
    assert list(got) == ["requests", "inflight", "queue", "latency", "size", "rpc"]
    req = got["requests"]
    assert (req["kind"], req["temporality"], req["value"], req["unit"], req["attributes"], req["timestamp"],
            req["start_time"]) == ("counter", "cumulative", 12.0, "1", {"route": "/ask"}, at(T0 + 10**10), at(T0))
    assert req["resource"]["service.name"] == "rag-api" and "resource" not in req["metadata"]
    assert (got["inflight"]["kind"], got["inflight"]["temporality"], got["inflight"]["value"]) == \
        ("updown_counter", "delta", -2.0)
    assert (got["queue"]["kind"], got["queue"]["temporality"], got["queue"]["value"], got["queue"]["start_time"]) == \
        ("gauge", None, 7.5, None)
    assert got["queue"]["metadata"] == {"description": "depth", "otel.scope.name": "app"}
    lat = got["latency"]
    assert (lat["kind"], lat["count"], lat["sum"], lat["min"], lat["max"], lat["trace_id"], lat["span_id"]) == \
        ("histogram", 3, 60.5, 1.5, 40.0, TRACE, "00f067aa0ba902b7")
    assert lat["buckets"] == {"explicit_bounds": [5.0, 25.0], "bucket_counts": [1, 1, 1]}
    assert got["size"]["buckets"] == {"scale": 3, "zero_count": 1,
                                      "positive": {"offset": 8, "bucket_counts": [2, 0, 1]}}
    assert (got["rpc"]["kind"], got["rpc"]["count"], got["rpc"]["metadata"]["quantile_values"]) == \
        ("summary", 5, [{"quantile": 0.5, "value": 0.4}])
    assert len({r["id"] for r in got.values()}) == 6


# --- what is not rows ------------------------------------------------------------------------------

def test_a_truncated_line_is_a_dead_letter() -> None:
    line = traces_line(span("00f067aa0ba902b7"))
    for cut in (len(line) // 2, len(line) - 1, 20):
        result = parse(line[:cut])
        assert type(result) is DeadLetter and result.reason.startswith("invalid JSON"), (cut, result)


def test_a_record_that_cannot_be_a_row_costs_only_itself() -> None:
    good, bad_id = span("00f067aa0ba902b7"), span("xyz", name="bad id")
    no_start = span("1111111111111111", parent="00f067aa0ba902b7")
    no_start.pop("startTimeUnixNano")
    result = parse(traces_line(good, bad_id, no_start))
    assert type(result) is Rows and [r.table for r in result.rows] == ["spans", "traces"]
    assert result.dead == DeadLetter(
        "resourceSpans[0].scopeSpans[0].spans[1]: spanId: expected 16 hex digits (or base64 of 8 bytes), not all "
        "zero, got 'xyz' (2 of the line's 3 records could not be stored, this the first)", "spanId")
    only_bad = parse(traces_line(bad_id))
    assert type(only_bad) is DeadLetter and only_bad.field == "spanId"


def test_a_record_of_the_wrong_shape_costs_only_itself() -> None:
    odd = span("1111111111111111", attributes={"x": 1})
    odd["attributes"][0]["value"] = {"intValue": {"not": "a number"}}
    numbers_as_text = span("2222222222222222", kind="3", flags="256")
    result = parse(traces_line(span("00f067aa0ba902b7"), odd, numbers_as_text))
    assert type(result) is Rows
    assert [(r.table, r.values[0]) for r in result.rows] == [
        ("spans", "00f067aa0ba902b7"), ("traces", TRACE), ("spans", "2222222222222222"), ("traces", TRACE)]
    assert result.dead == DeadLetter("resourceSpans[0].scopeSpans[0].spans[1]: attributes[0].value.intValue: "
                                     "Expected `int | str | null`, got `object`", "intValue")


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"resourceSpans":{}}', "resourceSpans: expected an array, got object"),
    (b'{"resourceSpans":[5]}', "resourceSpans[0]: expected an object, got a number"),
    (b'{"resourceLogs":[{"scopeLogs":"x"}]}', "resourceLogs[0].scopeLogs: expected an array, got a string"),
    (b'{"resourceMetrics":[{"resource":{"attributes":7},"scopeMetrics":[]}]}',
     "resourceMetrics[0].resource.attributes: attributes: Expected `array`, got `int`"),
])
def test_a_malformed_envelope_is_one_dead_letter(line: bytes, reason: str) -> None:
    result = parse(line)
    assert type(result) is DeadLetter and reason in result.reason, result


def test_other_lines_of_an_otlp_source_are_read_as_structlog_lines() -> None:
    record = b'{"span_id":"00f067aa0ba902b7","trace_id":"' + TRACE.encode() + \
        b'","name":"s","record_type":"span","timestamp":"2024-05-01T12:00:00Z"}'
    assert parse(record).table == "spans"
    assert parse(b'{"event":"mentions \\"resourceSpans\\" in text","level":"info"}').table == "logs"
    assert type(Parser(format="otlp_json").parse(b'{"event":"x"}')) is AppLog
    assert parse(b'[1]') == DeadLetter("not a JSON object: got array")


def test_row_ids_are_those_of_the_line() -> None:
    line = logs_line(log_record("a"), log_record("b"))
    first = [r.values[0] for r in parse(line).rows]
    assert [r.values[0] for r in parse(line).rows] == first and len(set(first)) == 2  # read again: the same
    other = Parser(source="otel", format="otlp_json", app_logs=AppLogPolicy()).parse(line, lambda: str(LINE_ID[::-1]))
    assert not set(first) & {r.values[0] for r in other.rows}  # another line (offset): other ids
