"""Generated OTLP lines: the parse never raises, every span with valid ids and a start is exactly one
row, and the typed and the tolerant paths give the same rows."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.model import DeadLetter, Rows
from agent.parse.otlp import OtlpDecoder, without_nul
from agent.parse.otlp.common import LineIds
from tests.otlp import T0, attrs

LINE_ID = "6f1c1d0e-8f43-4b8e-9a51-3b7f6c2d9e10"
scalars = st.one_of(st.text(max_size=8), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=8)


@st.composite
def an_id(draw: st.DrawFn, size: int) -> tuple[str, bool]:
    """(an id as some encoder may write it, whether it is a valid one)."""
    raw = draw(st.binary(min_size=size, max_size=size))
    valid = any(raw)
    form = draw(st.sampled_from(["hex", "HEX", "base64", "short", "empty", "text"]))
    if form == "hex":
        return raw.hex(), valid
    if form == "HEX":
        return raw.hex().upper(), valid
    if form == "base64":
        return base64.b64encode(raw).decode(), valid
    if form == "short":
        return raw.hex()[:-1], False
    if form == "empty":
        return "", False
    return draw(st.text(max_size=40)), False


@st.composite
def a_span(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """(a span, whether it can be a row)."""
    trace_id, trace_ok = draw(an_id(16))
    span_id, span_ok = draw(an_id(8))
    s: dict[str, Any] = {"traceId": trace_id, "spanId": span_id}
    start = draw(st.one_of(st.none(), st.integers(0, 2**64 + 5)))
    start_ok = start is not None and 0 < start < 2**64  # a fixed64 (years 1970 to 2554)
    if start is not None:
        s["startTimeUnixNano"] = draw(st.sampled_from([str(start), start])) if start < 2**63 else str(start)
    if draw(st.booleans()):
        s["endTimeUnixNano"] = str((start or T0) + draw(st.integers(-(10**9), 10**12)))
    if draw(st.booleans()):
        s["parentSpanId"] = draw(an_id(8))[0]
    if draw(st.booleans()):
        s["name"] = draw(st.text(max_size=300))
    if draw(st.booleans()):
        s["kind"] = draw(st.one_of(st.integers(0, 9), st.sampled_from(["SPAN_KIND_CLIENT", "3", "odd"])))
    if draw(st.booleans()):
        s["attributes"] = attrs(draw(st.dictionaries(st.text(max_size=12), values, max_size=4)))
    if draw(st.booleans()):
        s["status"] = {"code": draw(st.sampled_from([0, 1, 2, "STATUS_CODE_ERROR"])),
                       "message": draw(st.text(max_size=5))}
    return s, trace_ok and span_ok and start_ok


def paths(decoder: OtlpDecoder, line: bytes) -> tuple[Any, Any]:
    """(the typed path's result, or None where it refuses the line; the tolerant path's)."""
    line = without_nul(line)
    try:
        typed_batches = decoder._typed(line)
    except msgspec.ValidationError:
        typed = None
    else:
        typed = decoder._rows(typed_batches or [], LineIds(lambda: LINE_ID))
    tolerant_batches = decoder._tolerant(line)
    assert isinstance(tolerant_batches, list)
    return typed, decoder._rows(tolerant_batches, LineIds(lambda: LINE_ID))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(a_span(), min_size=1, max_size=6))
def test_every_valid_span_is_one_row_on_either_path(spans: list[tuple[dict[str, Any], bool]]) -> None:
    line = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [s for s, _ in spans]}]}]})
    decoder = OtlpDecoder("otel")
    result = decoder.parse(line, lambda: LINE_ID)
    valid = sum(ok for _, ok in spans)
    assert isinstance(result, Rows | DeadLetter)
    got = result.rows if isinstance(result, Rows) else ()
    assert sum(r.table == "spans" for r in got) == valid
    dead = result.dead if isinstance(result, Rows) else result
    assert (dead is None) == (valid == len(spans))
    typed, tolerant = paths(decoder, line)
    assert tolerant == result
    if typed is not None:
        assert typed == tolerant
