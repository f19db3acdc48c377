"""agent.parse: every rule of the contract, then properties over generated input."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import contract as c
from agent.model import AppLog, DeadLetter, Row
from agent.parse import parse
from tests.reference_parse import reference
from tests.strategies import FALLBACK_ID, Case, cases, cases_with_invalid_optional, wild_records

TID = "0af7651916cd43dd8448eb211c80319c"
SID = "b7ad6b7169203331"
PSID = "00f067aa0ba902b7"
T0 = "2024-05-01T12:00:00.123456+00:00"
DT0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def line(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def span_line(**over: Any) -> bytes:
    record = {"record_type": "span", "span_id": SID, "trace_id": TID, "parent_span_id": PSID,
              "name": "retrieve", "span_type": "retrieval", "status": "completed", "started_at": T0,
              "duration_ms": 12, "event": "span", "level": "info", "timestamp": "2024-05-01T12:00:00.2Z"}
    record.update(over)
    return orjson.dumps({k: v for k, v in record.items() if v is not ...})


def col(row: Row, name: str) -> Any:
    return row.values[c.COLUMNS[row.table].index(name)]


def row_of(data: bytes, **kw: Any) -> Row:
    result = parse(data, **kw)
    assert isinstance(result, Row), result
    return result


def dead(data: bytes) -> DeadLetter:
    result = parse(data)
    assert isinstance(result, DeadLetter), result
    return result


# --- shapes of lines ---------------------------------------------------------------------------

def test_span_line_becomes_typed_row_in_column_order() -> None:
    row = row_of(span_line(result_count=5))
    assert row.table == "spans" and not row.merge and row.warnings == ()
    assert row.values == (SID, DT0, TID, PSID, "retrieve", "retrieval", "completed", 12, None, None, None,
                          None, None, None, None, None, None, None, None, 5, "{}")


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty line"),
    (b"   ", "empty line"),
    (b"{", "invalid JSON"),
    (b"\xff\xfe{}", "invalid UTF-8 at byte 0"),
    (b'{"a": "\xed\xa0\x80"}', "invalid UTF-8"),
    (b"[1, 2]", "not a JSON object: got array"),
    (b'"text"', "not a JSON object: got string"),
    (b"42", "not a JSON object: got number"),
    (b"null", "not a JSON object: got null"),
    (b'{"a": NaN}', "invalid JSON"),
    (b'{"a": 1e400}', "invalid JSON"),
    (b'{"a": "\\ud800"}', "invalid JSON"),
])
def test_undecodable_lines_are_dead_letters_with_a_reason(data: bytes, reason: str) -> None:
    assert dead(data).reason.startswith(reason)


def test_line_without_discriminator_is_an_app_log() -> None:
    assert parse(b'{"event": "user logged in", "level": "warning"}') == AppLog("warning")
    assert parse(b'{"event": "x", "level": 3}') == AppLog(None)
    assert parse(b'{"event":"x"}', record_type_key="kind") == AppLog(None)
    assert isinstance(parse(b'{"kind":"span"}', record_type_key="kind"), DeadLetter)


@pytest.mark.parametrize("value", ["spans", "", None, 1, ["span"], "SPAN"])
def test_unknown_record_kind_is_a_dead_letter_naming_the_key(value: Any) -> None:
    letter = dead(line(record_type=value, name="x"))
    assert letter.field == "record_type"
    assert letter.reason.startswith("record_type: expected one of trace, span, chat_message, document_event")


def test_bom_and_trailing_cr_are_tolerated() -> None:
    assert isinstance(parse(b"\xef\xbb\xbf" + span_line()), DeadLetter)  # BOM inside a file: reported
    assert parse(b"\xef\xbb\xbf" + span_line()).reason.startswith("byte order mark")  # type: ignore[union-attr]
    assert isinstance(parse(span_line() + b"\r"), Row)
    assert isinstance(parse(b"  " + span_line() + b" \r\n"), Row)


def test_parse_never_raises_even_on_non_bytes() -> None:
    assert isinstance(parse(None), DeadLetter)  # type: ignore[arg-type]
    assert isinstance(parse(memoryview(span_line())), Row)  # type: ignore[arg-type]


# --- identifiers -------------------------------------------------------------------------------

def test_ids_are_lower_cased() -> None:
    row = row_of(span_line(span_id=SID.upper(), trace_id=TID.upper(), parent_span_id=PSID.upper()))
    assert (col(row, "span_id"), col(row, "trace_id"), col(row, "parent_span_id")) == (SID, TID, PSID)


@pytest.mark.parametrize(("key", "value"), [
    ("span_id", "0" * 16), ("span_id", SID[:-1]), ("span_id", SID + "0"), ("span_id", "g" * 16),
    ("span_id", 12), ("span_id", ...), ("trace_id", "0" * 32), ("trace_id", TID + "\x00"),
    ("trace_id", " " + TID[1:]), ("trace_id", "0x" + TID[2:]), ("name", ...), ("name", ""), ("name", 5),
    ("started_at", "yesterday"), ("started_at", True),
])
def test_invalid_required_span_field_is_a_dead_letter_naming_it(key: str, value: Any) -> None:
    letter = dead(span_line(**{key: value}))
    assert letter.field == key
    assert letter.reason.startswith(f"{key}: expected ")
    assert "got" in letter.reason


def test_dead_letter_reason_shortens_the_value() -> None:
    letter = dead(span_line(span_id="z" * 5000))
    assert len(letter.reason) < 200 and letter.reason.endswith("…")


def test_invalid_parent_span_id_is_only_a_warning() -> None:
    row = row_of(span_line(parent_span_id="0" * 16))
    assert col(row, "parent_span_id") is None and row.warnings == ("parent_span_id",)
    assert orjson.loads(col(row, "metadata")) == {"_invalid": {"parent_span_id": "0" * 16}}


# --- time --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (T0, DT0),
    ("2024-05-01T12:00:00.123456Z", DT0),
    ("2024-05-01T14:00:00.123456+02:00", DT0),
    ("2024-05-01T12:00:00.123456", DT0),  # naive: UTC
    ("2024-05-01 12:00:00.123456+00:00", DT0),
    (1714564800, DT0.replace(microsecond=0)),  # epoch seconds
    (1714564800.5, DT0.replace(microsecond=500000)),
    (1714564800123, DT0.replace(microsecond=123000)),  # epoch milliseconds (>= 1e11)
    (1714564800123.5, DT0.replace(microsecond=123500)),
    (0, datetime(1970, 1, 1, tzinfo=UTC)),
    (99_999_999_999, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=99_999_999_999)),
    (100_000_000_000, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=100_000_000_000)),
])
def test_time_forms(value: Any, expected: datetime) -> None:
    at = col(row_of(span_line(started_at=value)), "timestamp")
    assert at == expected and at.tzinfo is UTC


@pytest.mark.parametrize("value", [10**14, -(10**14), "2024-13-01T00:00:00Z", "0000-01-01T00:00:00Z",
                                   "2024-05-01T12:00:00+25:00", "", [2024], float(2**70)])
def test_bad_times_are_dead_letters(value: Any) -> None:
    assert dead(span_line(started_at=value)).field == "started_at"


def test_time_extremes_that_overflow_utc_are_dead_letters() -> None:
    assert dead(span_line(started_at="0001-01-01T00:00:00+05:00")).field == "started_at"
    # asyncpg would write these two instants as -infinity / infinity
    assert dead(span_line(started_at="0001-01-01T00:00:00Z")).field == "started_at"
    assert dead(span_line(started_at="9999-12-31T23:59:59.999999Z")).field == "started_at"
    assert dead(span_line(started_at="9999-12-31T23:59:59.999999")).field == "started_at"
    assert col(row_of(span_line(started_at="0001-01-01T00:00:00.000001Z")), "timestamp").year == 1
    assert col(row_of(span_line(started_at="9999-12-31T23:59:59-00:00")), "timestamp").year == 9999


def test_time_column_falls_back_to_timestamp_minus_duration() -> None:
    row = row_of(span_line(started_at=..., timestamp="2024-05-01T12:00:01Z", duration_ms=1500))
    assert col(row, "timestamp") == datetime(2024, 5, 1, 11, 59, 59, 500000, tzinfo=UTC)
    row = row_of(span_line(started_at=..., timestamp="2024-05-01T12:00:01Z", duration_ms=...))
    assert col(row, "timestamp") == datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
    assert dead(span_line(started_at=..., timestamp=...)).field == "started_at"
    assert dead(span_line(started_at=..., timestamp="nope")).field == "timestamp"
    assert dead(span_line(started_at=..., timestamp="0001-01-01T00:00:00Z", duration_ms=5)).field == "timestamp"


def test_timestamp_is_ignored_when_started_at_is_given() -> None:
    row = row_of(span_line(timestamp="garbage"))
    assert col(row, "timestamp") == DT0 and "timestamp" not in orjson.loads(col(row, "metadata"))


# --- values ------------------------------------------------------------------------------------

def test_long_labels_are_cut_and_long_identifiers_are_invalid() -> None:
    row = row_of(span_line(name="n" * 300, error_message="e" * 2000, input_preview="p" * 600,
                           error_type="t" * 400, model="m" * 101, span_type="s" * 51))
    assert len(col(row, "name")) == 255 and len(col(row, "error_message")) == c.ERROR_MESSAGE_MAX
    assert len(col(row, "input_preview")) == c.PREVIEW_MAX and len(col(row, "error_type")) == 255
    assert col(row, "model") is None and col(row, "span_type") == "custom"
    assert set(row.warnings) == {"model", "span_type"}


def test_nul_in_text_is_replaced() -> None:
    row = row_of(span_line(name="a\x00b", error_message="\x00"))
    assert col(row, "name") == "a\ufffdb" and col(row, "error_message") == "\ufffd"


@pytest.mark.parametrize(("value", "expected"), [
    (0.0012, Decimal("0.001200")), ("0.0000005", Decimal("0.000000")), (1, Decimal("1.000000")),
    ("9999.999999", Decimal("9999.999999")), (-3.5, Decimal("-3.500000")),
])
def test_cost_becomes_numeric_10_6(value: Any, expected: Decimal) -> None:
    got = col(row_of(span_line(cost_usd=value)), "cost_usd")
    assert got == expected and got.as_tuple().exponent == -6


@pytest.mark.parametrize("value", [10000, 9999.9999995, "1e400", "NaN", "Infinity", True, "x" * 50, [1]])
def test_cost_out_of_numeric_range_is_invalid(value: Any) -> None:
    row = row_of(span_line(cost_usd=value))
    assert col(row, "cost_usd") is None and row.warnings == ("cost_usd",)


@pytest.mark.parametrize(("value", "ok"), [
    (0, True), (2**31 - 1, True), (2**31, False), (-1, False), (3.0, True), (3.5, False), (True, False),
    ("3", False), (2**64 - 1, False),
])
def test_integer_columns_stay_in_int4(value: Any, ok: bool) -> None:
    row = row_of(span_line(input_tokens=value))
    assert (col(row, "input_tokens") == int(value)) if ok else row.warnings == ("input_tokens",)


def test_file_size_is_int8() -> None:
    base = {"record_type": "document_event", "event_type": "upload", "status": "completed", "timestamp": T0}
    assert col(row_of(line(**base, file_size_bytes=2**40)), "file_size_bytes") == 2**40
    assert row_of(line(**base, file_size_bytes=2**63)).warnings == ("file_size_bytes",)


def test_temperature_is_a_finite_float() -> None:
    assert col(row_of(span_line(temperature=1)), "temperature") == 1.0
    assert row_of(span_line(temperature="hot")).warnings == ("temperature",)


def test_uuid_forms() -> None:
    u = uuid.UUID("8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f")
    for text in (str(u), str(u).upper(), u.hex, "{" + str(u) + "}", "urn:uuid:" + str(u)):
        assert col(row_of(span_line(document_id=text)), "document_id") == str(u)  # canonical text
    assert row_of(span_line(document_id="8d3a7f0e")).warnings == ("document_id",)


def test_status_rules() -> None:
    assert row_of(span_line(status="in_progress")).merge
    assert col(row_of(span_line(status="FAILED")), "status") == "failed"
    assert col(row_of(span_line(status=...)), "status") == "completed"
    bad = row_of(span_line(status="ok"))
    assert col(bad, "status") == "completed" and bad.warnings == ("status",)


# --- metadata ----------------------------------------------------------------------------------

def test_unknown_keys_and_app_metadata_go_to_metadata() -> None:
    row = row_of(span_line(tenant="acme", request_id=7, logger="app", metadata={"k": [1, 2]},
                           event="retrieval done"))
    assert orjson.loads(col(row, "metadata")) == {"tenant": "acme", "request_id": 7, "k": [1, 2],
                                                  "event": "retrieval done"}


def test_non_object_metadata_is_kept_under_its_key() -> None:
    assert orjson.loads(col(row_of(span_line(metadata=[1])), "metadata")) == {"metadata": [1]}


def test_jsonb_guards() -> None:
    base = span_line(nul="a\x00b", keys={"k\x00": 1}, big=18446744073709551615, neg=-(2**63))
    extra = b',"deep":' + b"[" * 300 + b'"leaf"' + b"]" * 300 + b',"huge":' + str(10**30).encode()
    row = row_of(base[:-1] + extra + b"}")
    meta = orjson.loads(col(row, "metadata"))
    assert meta["nul"] == "a\ufffdb" and meta["keys"] == {"k\ufffd": 1}
    assert meta["big"] == 18446744073709551615 and meta["neg"] == -(2**63)
    assert meta["huge"] == 1e30  # orjson reads integers beyond 64 bits as floats
    depth, node = 0, meta["deep"]
    while isinstance(node, list):
        depth, node = depth + 1, node[0]
    assert node == c.JSON_TOO_DEEP and depth < c.JSON_MAX_DEPTH
    assert "\\u0000" not in col(row, "metadata")


def test_clean_json_handles_what_orjson_cannot_write() -> None:
    from agent.parse.fields import clean_json, json_text
    assert orjson.loads(json_text({"a": 2**70, "b": float("nan"), "c": "\ud800x", "d": (1, 2)})) == {
        "a": str(2**70), "b": None, "c": "?x", "d": [1, 2]}
    assert clean_json({1: {2}, "k\x00": Exception("e\x00")}) == {"1": [2], "k\ufffd": "e\ufffd"}


# --- kinds -------------------------------------------------------------------------------------

def test_trace_start_and_end_both_merge_on_the_same_key() -> None:
    start = row_of(line(record_type="trace", trace_id=TID, name="answer", status="in_progress", started_at=T0,
                        user_id="8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f"))
    end = row_of(line(record_type="trace", trace_id=TID, name="answer", status="completed", started_at=T0,
                      ended_at="2024-05-01T12:00:01.123456Z", duration_ms=1000, total_input_tokens=10,
                      total_output_tokens=5, total_cost_usd=0.01, error_type=None))
    assert start.merge and end.merge
    assert start.values[:2] == end.values[:2] == (TID, DT0)
    assert col(end, "ended_at") == DT0 + timedelta(seconds=1) and col(end, "total_cost_usd") == Decimal("0.01")


def test_trace_status_default_depends_on_an_end() -> None:
    base = {"record_type": "trace", "trace_id": TID, "name": "x", "started_at": T0}
    assert col(row_of(line(**base)), "status") == "in_progress"
    assert col(row_of(line(**base, duration_ms=3)), "status") == "completed"


def test_chat_message_fields_and_deterministic_ids() -> None:
    record = {"record_type": "chat_message", "role": "assistant", "content": "", "timestamp": T0,
              "sources": [{"doc": "a\x00", "score": 0.5}], "citations": [1, 2], "trace_id": TID}
    data = line(**record)
    row = row_of(data)
    assert col(row, "id") == row_of(data).values[0]  # uuid5 of the line: stable
    assert col(row, "id") != row_of(data + b" ").values[0]
    assert row_of(data, fallback_id=lambda: FALLBACK_ID).values[0] == FALLBACK_ID
    assert orjson.loads(col(row, "sources")) == [{"doc": "a\ufffd", "score": 0.5}]
    assert col(row, "content") == "" and col(row, "role") == "assistant" and not row.merge

    def broken() -> str:
        raise RuntimeError("callback failed")
    assert row_of(data, fallback_id=broken).values[0] == col(row, "id")


@pytest.mark.parametrize(("record", "field"), [
    ({"role": "user", "content": 5, "timestamp": T0}, "content"),
    ({"role": "", "content": "x", "timestamp": T0}, "role"),
    ({"content": "x", "timestamp": T0}, "role"),
    ({"role": "user", "content": "x"}, "timestamp"),
    ({"role": "user", "content": "x", "timestamp": T0, "id": "nope"}, "id"),
])
def test_chat_required_fields(record: dict[str, Any], field: str) -> None:
    letter = dead(line(record_type="chat_message", **record))
    assert letter.field == field and letter.reason.startswith(field + ": expected")


@pytest.mark.parametrize("event_type", ["upload", "parse", "chunk", "embed", "index", "delete", "ocr"])
def test_document_events(event_type: str) -> None:
    row = row_of(line(record_type="document_event", event_type=event_type, status="started", timestamp=T0,
                      document_id="8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f", chunk_count=3))
    assert col(row, "event_type") == event_type and col(row, "status") == "started"
    assert dead(line(record_type="document_event", event_type=event_type, status="done",
                     timestamp=T0)).field == "status"


# --- properties --------------------------------------------------------------------------------

def assert_row_matches(row: Row | DeadLetter | AppLog, case: Case) -> None:
    assert isinstance(row, Row), (row, case.record)
    assert row.table == case.table and row.merge == case.merge and row.warnings == case.warnings
    for name, got in zip(c.COLUMNS[case.table], row.values, strict=True):
        want = case.expected[name]
        if c.FIELD_BY_NAME[case.kind].get(name, c.Field(name, c.TIME_T)).type == c.JSONB_T:
            assert got is None if want is None else orjson.loads(got) == want, name
        else:
            assert got == want, (name, got, want)
            if isinstance(got, datetime):
                assert got.tzinfo is UTC


@SETTINGS
@given(st.one_of(cases(), cases(plain=True)))
def test_valid_records_round_trip_field_for_field(case: Case) -> None:
    assert_row_matches(parse(orjson.dumps(case.record), fallback_id=lambda: FALLBACK_ID), case)


@SETTINGS
@given(cases_with_invalid_optional())
def test_invalid_optional_field_keeps_the_row(case: Case) -> None:
    assert_row_matches(parse(orjson.dumps(case.record), fallback_id=lambda: FALLBACK_ID), case)


def strict(row: Any) -> Any:
    """A row as (type, repr) per value: equal rows whose values differ in form compare unequal."""
    if not isinstance(row, Row):
        return row
    return row.table, [(type(v), repr(v)) for v in row.values], row.merge, row.warnings


@SETTINGS
@given(st.one_of(cases(), cases(plain=True), cases_with_invalid_optional()))
def test_generated_builders_equal_the_field_by_field_reference(case: Case) -> None:
    data = orjson.dumps(case.record)
    got = parse(data, fallback_id=lambda: FALLBACK_ID)
    want = reference(data, fallback_id=lambda: FALLBACK_ID)
    assert strict(got) == strict(want)


@SETTINGS
@given(st.binary(max_size=300))
def test_parse_never_raises_on_bytes(data: bytes) -> None:
    assert type(parse(data)) in (Row, DeadLetter, AppLog)


@SETTINGS
@given(wild_records(), st.sampled_from(["keep", "drop", "flip"]), st.integers(0, 10_000))
def test_parse_never_raises_on_wild_records(record: dict[str, Any], how: str, pos: int) -> None:
    data = orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS) if all(
        -(2**63) <= v < 2**64 for v in record.values() if type(v) is int) else b"{}"
    if how == "drop" and data:
        data = data[: pos % len(data)]
    elif how == "flip" and data:
        i = pos % len(data)
        data = data[:i] + bytes([data[i] ^ 0x80]) + data[i + 1:]
    result = parse(data)
    assert type(result) in (Row, DeadLetter, AppLog)
    if isinstance(result, DeadLetter):
        assert result.reason and "\x00" not in result.reason
        assert not result.reason.startswith("internal"), result.reason


def _droppable(case: Case) -> list[str]:
    """Keys whose absence leaves the expected row as it is: bookkeeping, and optional fields
    holding what absence gives anyway (a span's default status and type, a trace's derived status)."""
    out = ["level", "logger"] + ([c.EVENT] if case.record.get(c.EVENT) == case.kind else [])
    if case.kind in (c.TRACE, c.SPAN) and c.STARTED_AT in case.record:
        out.append(c.WRITTEN_AT)  # ignored when started_at is given
    if case.kind == c.SPAN:
        out += [k for k, default in (("status", c.COMPLETED), ("span_type", c.DEFAULT_SPAN_TYPE))
                if case.record.get(k) == default]
    return [k for k in out if k in case.record]


@SETTINGS
@given(st.one_of(cases(), cases(plain=True)), st.data())
def test_shuffled_keys_and_dropped_optional_fields_give_the_same_row(case: Case, data: st.DataObject) -> None:
    """Key order never matters, and an optional key whose absence means the same value can go."""
    record = dict(case.record)
    dropped = data.draw(st.lists(st.sampled_from(_droppable(case)), unique=True) if _droppable(case) else st.just([]))
    for k in dropped:
        del record[k]
    order = data.draw(st.permutations(list(record)))
    key = data.draw(st.sampled_from(["record_type", "kind", "type"]))
    shuffled = {("__rt__" if k == "record_type" else k): record[k] for k in order}
    if key in shuffled:  # the chosen discriminator must not clash with a key the record has
        key = "record_type"
    line = orjson.dumps({(key if k == "__rt__" else k): v for k, v in shuffled.items()})
    want = parse(orjson.dumps(case.record), fallback_id=lambda: FALLBACK_ID)
    got = parse(line, record_type_key=key, fallback_id=lambda: FALLBACK_ID)
    assert isinstance(want, Row) and isinstance(got, Row)
    assert got.table == want.table and got.merge == want.merge and got.warnings == want.warnings
    meta = c.COLUMNS[got.table].index(c.METADATA)
    for i, (a, b) in enumerate(zip(got.values, want.values, strict=True)):
        if i == meta:
            assert orjson.loads(a) == orjson.loads(b)  # same object; key order may differ
        else:
            assert (type(a), a) == (type(b), b), c.COLUMNS[got.table][i]
    assert_row_matches(got, case)


def test_compiled_shapes_are_kept_per_discriminator_key() -> None:
    data = span_line()
    assert col(row_of(data), "metadata") == "{}"  # compiled for "record_type"
    other = row_of(data, record_type_key="event")  # same shape, other key: record_type is unknown now
    assert orjson.loads(col(other, "metadata")) == {"record_type": "span"}
    assert col(row_of(data), "metadata") == "{}"
