"""OTLP JSON lines for tests, shaped as ``opentelemetry-exporter-otlp-json-file`` writes them
(checked against the real exporter's output in tests/unit/parse/test_otlp.py): ids in hex,
64-bit integers as decimal text, defaults left out."""

from __future__ import annotations

from typing import Any

import orjson

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z in nanoseconds


def value(v: Any) -> dict[str, Any]:
    """An OTLP ``AnyValue`` of ``v``, as the Python SDK encodes it."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, list | tuple):
        return {"arrayValue": {"values": [value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": attrs(v)}}
    return {}


def attrs(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": value(v)} for k, v in d.items()]


def span(span_id: str, *, trace_id: str = TRACE, parent: str = "", name: str = "op", start: int = T0,
         duration_ms: int = 5, kind: int = 1, attributes: dict[str, Any] | None = None, status: int = 0,
         message: str = "", events: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"traceId": trace_id, "spanId": span_id}
    if parent:
        s["parentSpanId"] = parent
    s.update({"name": name, "kind": kind, "startTimeUnixNano": str(start),
              "endTimeUnixNano": str(start + duration_ms * 1_000_000)})
    if attributes:
        s["attributes"] = attrs(attributes)
    if events:
        s["events"] = events
    st: dict[str, Any] = {}
    if message:
        st["message"] = message
    if status:
        st["code"] = status
    s["status"] = st
    s.update(extra)
    return s


def exception(kind: str, message: str, at: int = T0) -> dict[str, Any]:
    return {"timeUnixNano": str(at), "name": "exception",
            "attributes": attrs({"exception.type": kind, "exception.message": message,
                                 "exception.stacktrace": f"Traceback ...\n{kind}: {message}\n",
                                 "exception.escaped": "False"})}


RESOURCE = {"telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry", "service.name": "rag-api"}


def traces_line(*spans: dict[str, Any], scope: str = "rag", resource: dict[str, Any] | None = None) -> bytes:
    res = RESOURCE if resource is None else resource
    return orjson.dumps({"resourceSpans": [{"resource": {"attributes": attrs(res)},
                                            "scopeSpans": [{"scope": {"name": scope}, "spans": list(spans)}]}]})


def log_record(body: Any, *, at: int = T0, severity: int = 9, text: str = "INFO", trace_id: str = "",
               span_id: str = "", attributes: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"timeUnixNano": str(at), "observedTimeUnixNano": str(at + 1000)}
    if severity:
        r["severityNumber"] = severity
    if text:
        r["severityText"] = text
    if body is not None:
        r["body"] = value(body)
    if attributes:
        r["attributes"] = attrs(attributes)
    if trace_id:
        r["traceId"] = trace_id
    if span_id:
        r["spanId"] = span_id
    r.update(extra)
    return r


def logs_line(*records: dict[str, Any], scope: str = "app.x") -> bytes:
    return orjson.dumps({"resourceLogs": [{"resource": {"attributes": attrs(RESOURCE)},
                                           "scopeLogs": [{"scope": {"name": scope}, "logRecords": list(records)}]}]})


def metrics_line(*metrics: dict[str, Any], scope: str = "app") -> bytes:
    return orjson.dumps({"resourceMetrics": [{"resource": {"attributes": attrs(RESOURCE)},
                                              "scopeMetrics": [{"scope": {"name": scope}, "metrics": list(metrics)}]}]})
