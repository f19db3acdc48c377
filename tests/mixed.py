"""The mixed log file of issue 11: every record kind, in the shapes other programs write.

Each shape is a function ``seq -> Line`` giving the line's bytes, the discriminator key its
source is configured with, and the row it must become - computed here from the typed values the
line was made of (a reference mapping independent of the parser). ``bench/parse.py`` times the
shapes one by one, ``bench/e2e.py`` loads the mixed file, ``tests/unit/test_mixed.py`` checks
every line of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from agent import contract as c

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CUSTOM_KEY = "kind"  # the discriminator of the second source ("other program")
_NS = uuid.UUID("0b9c7a52-3f1e-4c8a-9d2b-6e5f4a3b2c1d")


@dataclass(frozen=True)
class Line:
    """One line, its source's discriminator key and what it must become (``table`` ``None``:
    an app log; ``expected`` maps column -> value, metadata as a decoded object)."""

    data: bytes
    key: str
    table: str | None
    expected: dict[str, Any]


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _at(seq: int) -> datetime:
    return T0 + timedelta(milliseconds=seq)


def _row(table: str, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(c.COLUMNS[table])
    row.update(values)
    return row


def _span_values(seq: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The typed values of an LLM span, and the same as JSON-native line values."""
    duration = 1 + seq % 2000
    typed = {
        "span_id": f"{seq + 1:016x}", "trace_id": f"{seq // 10 + 1:032x}", "parent_span_id": f"{seq + 7:016x}",
        "name": "chat_completion", "span_type": "llm", "status": "completed", "duration_ms": duration,
        "model": "gpt-4o-mini", "input_tokens": 1200 + seq % 300, "output_tokens": 200 + seq % 50,
        "cost_usd": Decimal("0.000321"), "temperature": 0.2,
    }
    raw = {**typed, "cost_usd": 0.000321}
    return typed, raw


def emit_span(seq: int) -> Line:
    """A span as ``agent.emit`` writes it: its key order, ``started_at``, an app key."""
    typed, raw = _span_values(seq)
    start = _at(seq)
    record = {"event": "span", "record_type": "span", "level": "info",
              "timestamp": _iso(start + timedelta(milliseconds=typed["duration_ms"])), "started_at": _iso(start),
              **raw, "seq": seq}
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "spans",
                _row("spans", **typed, timestamp=start, metadata={"seq": seq}))


def derived_start_span(seq: int) -> Line:
    """No ``started_at``: the start is ``timestamp - duration_ms``; no app keys at all."""
    typed, raw = _span_values(seq)
    start = _at(seq)
    end = start + timedelta(milliseconds=typed["duration_ms"])
    record = {"record_type": "span", **raw, "timestamp": _iso(end), "level": "info", "event": "span"}
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "spans",
                _row("spans", **typed, timestamp=start, metadata={}))


def custom_key_span(seq: int) -> Line:
    """Hand-rolled structlog: another discriminator key, another event name, logger kept out."""
    typed, raw = _span_values(seq)
    start = _at(seq)
    end = start + timedelta(milliseconds=typed["duration_ms"])
    record = {"timestamp": _iso(end), "level": "info", "logger": "rag.llm", "event": "llm call finished",
              CUSTOM_KEY: "span", **raw, "request_id": f"req-{seq:08d}"}
    return Line(orjson.dumps(record), CUSTOM_KEY, "spans",
                _row("spans", **typed, timestamp=start,
                     metadata={"request_id": f"req-{seq:08d}", "event": "llm call finished"}))


def shuffled_span(seq: int) -> Line:
    """Keys in another order, optional fields dropped (status and span type take defaults)."""
    typed, raw = _span_values(seq)
    start = _at(seq)
    for optional in ("status", "span_type", "parent_span_id", "temperature"):
        raw.pop(optional)
    record = dict(reversed([("started_at", _iso(start)), ("record_type", "span"), *raw.items()]))
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "spans",
                _row("spans", **{**typed, "status": "completed", "span_type": "custom", "parent_span_id": None,
                                 "temperature": None}, timestamp=start, metadata={}))


def nested_metadata_span(seq: int) -> Line:
    """A retrieval span with a nested ``metadata`` object and bound context keys."""
    typed, raw = _span_values(seq)
    start = _at(seq)
    for llm_only in ("model", "input_tokens", "output_tokens", "cost_usd", "temperature"):
        raw.pop(llm_only)
        typed[llm_only] = None
    meta = {"index": "main", "filters": {"tenant": "acme", "tags": ["a", "b"]}, "k": 8}
    record = {"record_type": "span", **raw, "name": "vector search", "span_type": "retrieval",
              "result_count": 8, "started_at": _iso(start), "user_tier": "pro", "metadata": meta}
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "spans",
                _row("spans", **{**typed, "name": "vector search", "span_type": "retrieval"}, result_count=8,
                     timestamp=start, metadata={"user_tier": "pro", **meta}))


def trace_end(seq: int) -> Line:
    """A finished trace (its start record is :func:`trace_start` of the same ``seq``)."""
    start = _at(seq)
    trace_id = f"{10**6 + seq:032x}"
    record = {"record_type": "trace", "trace_id": trace_id, "name": "answer question", "started_at": _iso(start),
              "operation_type": "rag_query", "status": "completed", "ended_at": _iso(start + timedelta(seconds=2)),
              "duration_ms": 2000, "total_input_tokens": 3000, "total_output_tokens": 400,
              "total_cost_usd": 0.0125, "event": "trace", "timestamp": _iso(start + timedelta(seconds=2))}
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "traces",
                _row("traces", trace_id=trace_id, timestamp=start, name="answer question",
                     operation_type="rag_query", status="completed", ended_at=start + timedelta(seconds=2),
                     duration_ms=2000, total_input_tokens=3000, total_output_tokens=400,
                     total_cost_usd=Decimal("0.012500"), metadata={}))


def trace_start(seq: int) -> Line:
    """A trace's start record: ``in_progress`` by default, merged with its end on the key."""
    start = _at(seq)
    trace_id = f"{10**6 + seq:032x}"
    record = {"event": "trace", "record_type": "trace", "timestamp": _iso(start), "trace_id": trace_id,
              "name": "answer question", "started_at": _iso(start), "operation_type": "rag_query",
              "session_id": f"s-{seq % 97}"}
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "traces",
                _row("traces", trace_id=trace_id, timestamp=start, name="answer question",
                     operation_type="rag_query", session_id=f"s-{seq % 97}", status="in_progress", metadata={}))


def chat_message(seq: int) -> Line:
    """A chat message with an app-given id, sources and a custom key order."""
    at = _at(seq)
    mid = uuid.uuid5(_NS, str(seq))
    sources = [{"document_id": str(uuid.uuid5(_NS, f"doc{seq % 13}")), "chunk": seq % 7, "score": 0.5}]
    record = {"content": f"answer {seq}", "role": "assistant", "record_type": "chat_message", "id": str(mid),
              "timestamp": _iso(at), "trace_id": f"{seq // 10 + 1:032x}", "conversation_id": f"conv-{seq % 50}",
              "turn_number": seq % 20, "model": "gpt-4o-mini", "latency_ms": 850, "sources": sources,
              "channel": "web"}
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "chat_messages",
                _row("chat_messages", id=str(mid), timestamp=at, trace_id=f"{seq // 10 + 1:032x}",
                     conversation_id=f"conv-{seq % 50}", turn_number=seq % 20, role="assistant",
                     content=f"answer {seq}", model="gpt-4o-mini", latency_ms=850, sources=sources,
                     metadata={"channel": "web"}))


def document_event(seq: int) -> Line:
    """A document event with an app-given id and a flat unknown key."""
    at = _at(seq)
    eid, doc = uuid.uuid5(_NS, f"event{seq}"), uuid.uuid5(_NS, f"doc{seq % 13}")
    record = {"record_type": "document_event", "event": "document_event", "id": str(eid), "timestamp": _iso(at),
              "document_id": str(doc), "event_type": "embed", "status": "completed", "duration_ms": 120,
              "chunk_count": 12, "token_count": 3400, "file_size_bytes": 2**33, "source": "s3"}
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "document_events",
                _row("document_events", id=str(eid), timestamp=at, document_id=str(doc), event_type="embed",
                     status="completed", duration_ms=120, chunk_count=12, token_count=3400,
                     file_size_bytes=2**33, metadata={"source": "s3"}))


def metric(seq: int) -> Line:
    """An interval of a histogram series as ``agent.emit`` writes it (with a counter's shape every
    other time): attributes, resource, exponential buckets."""
    at, start, mid = _at(seq), _at(seq) - timedelta(seconds=10), uuid.uuid5(_NS, f"metric{seq}")
    attributes = {"route": f"/r{seq % 5}"}
    resource = {"service.name": "rag-api", "process.pid": 4242}
    base = {"record_type": "metric", "event": "metric", "level": "info", "name": "http.latency_ms",
            "attributes": attributes, "resource": resource, "start_time": _iso(start), "temporality": "delta",
            "id": str(mid)}
    if seq % 2:
        record = {**base, "name": "cache.hits", "kind": "counter", "value": seq % 97, "count": seq % 97,
                  "timestamp": _iso(at)}
        return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "metrics",
                    _row("metrics", id=str(mid), timestamp=at, start_time=start, name="cache.hits", kind="counter",
                         temporality="delta", attributes=attributes, resource=resource, value=float(seq % 97),
                         count=seq % 97, metadata={}))
    buckets = {"scale": 5, "zero_count": 0, "positive": {"offset": 180 + seq % 7, "bucket_counts": [3, 0, 5, 1]}}
    record = {**base, "kind": "histogram", "count": 9, "sum": 512.25, "min": 48.5, "max": 61.0, "buckets": buckets,
              "trace_id": f"{seq // 10 + 1:032x}", "timestamp": _iso(at)}
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "metrics",
                _row("metrics", id=str(mid), timestamp=at, start_time=start, name="http.latency_ms", kind="histogram",
                     temporality="delta", attributes=attributes, resource=resource, count=9, sum=512.25,
                     min=48.5, max=61.0, buckets=buckets, trace_id=f"{seq // 10 + 1:032x}", metadata={}))


def workflow_transition(seq: int) -> Line:
    """A workflow transition as ``agent.emit`` writes it, with a bound context key in metadata."""
    at, tid = _at(seq), uuid.uuid5(_NS, f"transition{seq}")
    wid = f"doc-{seq % 31}"
    record = {"record_type": "workflow_transition", "event": "workflow_transition", "level": "info",
              "id": str(tid), "workflow_id": wid, "state": "embedded", "seq": seq, "from_state": "parsed",
              "workflow_type": "document", "timestamp": _iso(at), "request_id": f"req-{seq}"}
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, "workflow_transitions",
                _row("workflow_transitions", id=str(tid), timestamp=at, workflow_id=wid, workflow_type="document",
                     state="embedded", from_state="parsed", seq=seq, metadata={"request_id": f"req-{seq}"}))


def app_log(seq: int) -> Line:
    """An ordinary application log line: no discriminator, not a record."""
    record = {"event": "cache miss", "level": "info", "timestamp": _iso(_at(seq)), "key": f"k{seq}"}
    return Line(orjson.dumps(record), c.DEFAULT_RECORD_TYPE_KEY, None, {})


Shape = Callable[[int], Line]
SHAPES: dict[str, Shape] = {
    "emit_span": emit_span, "derived_start_span": derived_start_span, "custom_key_span": custom_key_span,
    "shuffled_span": shuffled_span, "nested_metadata_span": nested_metadata_span, "trace_start": trace_start,
    "trace_end": trace_end, "chat_message": chat_message, "document_event": document_event, "metric": metric,
    "workflow_transition": workflow_transition, "app_log": app_log,
}
# One cycle of the mixed file: mostly spans (14 of 22), every other shape once or twice.
_CYCLE: tuple[Shape, ...] = (
    emit_span, derived_start_span, custom_key_span, shuffled_span, nested_metadata_span,
    emit_span, derived_start_span, custom_key_span, shuffled_span, nested_metadata_span,
    emit_span, derived_start_span, custom_key_span, shuffled_span,
    trace_start, trace_end, chat_message, document_event, metric, workflow_transition, app_log, app_log,
)


def mixed(n: int) -> Iterator[Line]:
    """``n`` lines of the mixed file, deterministic; a trace's start comes before its end."""
    for _, line in mixed_shapes(n):
        yield line


def mixed_shapes(n: int) -> Iterator[tuple[str, Line]]:
    """:func:`mixed`, each line with the name of its shape (a key of :data:`SHAPES`)."""
    names = {shape: name for name, shape in SHAPES.items()}
    for seq in range(n):
        shape = _CYCLE[seq % len(_CYCLE)]
        yield names[shape], shape(seq - 1 if shape is trace_end else seq)  # the end pairs with the start before it


def write_mixed(n: int, default_path: Any, custom_path: Any) -> tuple[int, int]:
    """Write the mixed file as two files: lines with the default discriminator key and lines with
    :data:`CUSTOM_KEY` (two sources, as two programs would); returns the byte sizes."""
    with open(default_path, "wb") as default, open(custom_path, "wb") as custom:
        for line in mixed(n):
            (custom if line.key == CUSTOM_KEY else default).write(line.data + b"\n")
        return default.tell(), custom.tell()


BENCH_LINES = 200_000  # bench/e2e.py's default size of the mixed file
