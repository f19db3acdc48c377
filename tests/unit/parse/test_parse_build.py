"""Both parse paths against the field-by-field reference, on app lines of every shape.

Whatever a line carries besides the contract's fields - unknown keys, ``metadata`` objects that
clash, values that need a repair, any key order, another discriminator key - the row must be the
reference's value for value, compared by type and ``repr``, so a ``Decimal`` exponent, a ``-0.0``
or one byte of text counts (the metadata column as a JSON value: jsonb keeps no key order). It
must be so on the tolerant path (``Parser.tolerant``) and, when it takes the line, on the typed
path (``Parser.typed``, with the app keys it learned from the line). The field types' typed
decoding is held to their converters directly.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent import contract as c
from agent.model import DeadLetter, Row
from agent.parse import Parser, typed
from agent.parse import fields as pf
from agent.parse.fieldtypes import TYPES, converter, decode_as, finisher
from tests.reference_parse import reference
from tests.strategies import FALLBACK_ID, Case, cases, cases_with_invalid_optional, json_values

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TID = "0af7651916cd43dd8448eb211c80319c"
SID = "b7ad6b7169203331"


def nested(depth: int) -> orjson.Fragment:
    """JSON text spliced in as is: deeper than ``orjson.dumps`` writes (254) when asked."""
    return orjson.Fragment("[" * depth + '"leaf"' + "]" * depth)


def line_of(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


def strict(row: Any) -> Any:
    """A row as (type, repr) per value: equal rows whose values differ in form compare unequal.

    The metadata column is compared as the JSON value it holds, keys sorted: jsonb keeps no key
    order, so the typed path's order of learned keys is not a difference.
    """
    if not isinstance(row, Row):
        return row
    meta = c.COLUMNS[row.table].index(c.METADATA)
    values = [(type(v), repr(v)) for v in row.values]
    values[meta] = (str, orjson.dumps(orjson.loads(row.values[meta]), option=orjson.OPT_SORT_KEYS).decode())
    return row.table, values, row.merge, row.warnings


def fid() -> str:
    return FALLBACK_ID


def both_paths(data: bytes, key: str = c.DEFAULT_RECORD_TYPE_KEY) -> Any:
    """The line's result, checked to be the same on both paths and the reference's (for records)."""
    want = reference(data, key, fallback_id=fid)
    parser = Parser(key)
    slow = parser.tolerant(data, fid)  # teaches the typed path the line's app keys
    fast = parser.typed(data, fid)
    if want is not None:
        assert strict(slow) == strict(want), data
    if fast is not None:
        assert strict(fast) == strict(slow), data
    assert strict(parser.parse(data, fid)) == strict(slow)
    if isinstance(slow, DeadLetter):
        assert isinstance(want, DeadLetter) and (slow.reason, slow.field) == (want.reason, want.field)
    return slow


# --- what app lines carry besides the contract's fields -----------------------------------------

_LIMITED = [f for f in c.FIELDS[c.SPAN] if f.max_len and f.type in (c.VARCHAR_T, c.TEXT_T) and f.name != "status"]
_SPECIAL = c.RECORD_KEYS[c.SPAN] | c.BOOKKEEPING | {c.EVENT, c.DEFAULT_RECORD_TYPE_KEY, "kind"}
CLEAN_KEYS = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=10)
# keys that collide with what the generic path treats specially (bookkeeping, event, metadata)
TRICKY_KEYS = st.sampled_from(["_invalid", "event", "level", "timestamp", "logger", "metadata", "name",
                               "record_type", "kind", "started_at", "seq", "k\x00", "\\u0000", ""])


def clean_values() -> st.SearchStrategy[Any]:
    """Values the fast path must take: JSON without NUL, within orjson's integer range."""
    text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                        st.floats(allow_nan=False, allow_infinity=False), text)
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=8)


def adversarial_values() -> st.SearchStrategy[Any]:
    """Values that need (or look like they need) a guard: NUL, escapes, depth, huge numbers."""
    return st.one_of(
        json_values(6),  # text with NUL among them
        st.sampled_from(["a\x00b", "\\u0000", "\x00", {"k\x00": 1}, [["\x00"]], {"a": {"b": "\x00"}},
                         2**64 - 1, -(2**63), -0.0, 1e308, 5e-324, "\ufffd", "\u2028", ""]),
        st.sampled_from([nested(127), nested(128), nested(129), nested(253), nested(254), nested(300),
                         orjson.Fragment(str(10**30)), orjson.Fragment(str(-(10**25))), orjson.Fragment("-0"),
                         orjson.Fragment("1.5e300")]),
    )


@st.composite
def app_lines(draw: st.DrawFn) -> tuple[bytes, str]:
    """(line, discriminator key): a record of any kind with app keys, clashes and odd values."""
    kind = draw(st.sampled_from(c.RECORD_KINDS))
    case: Case = draw(cases(kind, plain=draw(st.booleans())))
    record = dict(case.record)
    for _ in range(draw(st.integers(0, 4))):
        which = draw(st.integers(0, 2))
        if which == 0:
            key, value = draw(CLEAN_KEYS), draw(clean_values())
        elif which == 1:
            key, value = draw(TRICKY_KEYS), draw(st.one_of(clean_values(), adversarial_values()))
            if key in (c.DEFAULT_RECORD_TYPE_KEY, "kind"):
                continue  # the discriminator itself stays
        else:
            key, value = draw(CLEAN_KEYS), draw(adversarial_values())
        record[key] = value
    limited = [f for f in c.FIELDS[kind] if f.max_len and f.type in (c.VARCHAR_T, c.TEXT_T) and f.name != "status"]
    if limited and draw(st.integers(0, 3)) == 0:  # text right at, or one past, its column's limit
        f = draw(st.sampled_from(limited))
        record[f.name] = "x" * (f.max_len + draw(st.integers(-1, 1)))  # type: ignore[operator]
    which = draw(st.integers(0, 5))
    if which == 1:  # what agent.emit writes for extra keyword arguments
        record[c.METADATA] = draw(st.dictionaries(CLEAN_KEYS, clean_values(), max_size=4))
    elif which == 2:  # clashing with the unknown keys and with bookkeeping
        keys = st.one_of(st.sampled_from(sorted(k for k in record if isinstance(k, str))), TRICKY_KEYS, CLEAN_KEYS)
        record[c.METADATA] = draw(st.dictionaries(keys, st.one_of(clean_values(), adversarial_values()), max_size=4))
    elif which == 3:  # not an object: kept under its own key
        record[c.METADATA] = draw(st.one_of(clean_values(), adversarial_values()))
    if draw(st.booleans()):
        record[c.EVENT] = draw(st.one_of(st.sampled_from([kind, "retrieval done", None, 3, ""]), clean_values()))
    if draw(st.booleans()):  # a start derived from timestamp - duration_ms
        record.pop(c.STARTED_AT, None)
    order = draw(st.permutations(list(record)))
    record = {k: record[k] for k in order}
    key = c.DEFAULT_RECORD_TYPE_KEY
    if draw(st.integers(0, 5)) == 0 and "kind" not in record:
        key = "kind"
        record = {("kind" if k == c.DEFAULT_RECORD_TYPE_KEY else k): v for k, v in record.items()}
    return line_of(record), key


# examples the generator may not find on its own: emit's nested metadata, e2e's unknown key,
# a NUL in metadata, depth past orjson.dumps's limit, a metadata object overriding an unknown key
DEEP300, DEEP200 = ("[" * 300 + '"leaf"' + "]" * 300), ("[" * 200 + '"leaf"' + "]" * 200)
_BASE = (f'"span_id":"{SID}","trace_id":"{TID}","name":"llm","started_at":"2024-05-01T12:00:00+00:00",'
         '"record_type":"span","event":"span","level":"info","timestamp":"2024-05-01T12:00:01Z"')


@SETTINGS
@given(app_lines())
@example((("{" + _BASE + ',"metadata":{"seq":1,"user_tier":"pro"}}').encode(), "record_type"))
@example((("{" + _BASE + ',"seq":7,"cost_usd":0.000321,"temperature":0.2}').encode(), "record_type"))
@example((("{" + _BASE + ',"seq":"a\\u0000b"}').encode(), "record_type"))
@example((("{" + _BASE + ',"deep":' + DEEP300 + "}").encode(), "record_type"))
@example((("{" + _BASE + ',"deep":' + DEEP200 + "}").encode(), "record_type"))
@example((("{" + _BASE + ',"a":1,"metadata":{"a":2,"event":"x","level":"debug"},"b":3}').encode(), "record_type"))
@example((("{" + _BASE + ',"metadata":null,"x":1}').encode(), "record_type"))
@example((("{" + _BASE + ',"cost_usd":2.5e-06,"temperature":1}').encode(), "record_type"))  # a tie
@example((("{" + _BASE + ',"cost_usd":-1.0000005,"x":1}').encode(), "record_type"))
@example((("{" + _BASE + ',"big":18446744073709551615,"neg":-9223372036854775808}').encode(), "record_type"))
@example((("{" + _BASE + ',"span_id":"B7AD6B7169203331","status":"FAILED","name":"a\\u0000"}').encode(), "record_type"))
def test_both_paths_equal_the_reference_on_app_lines(args: tuple[bytes, str]) -> None:
    both_paths(*args)


@SETTINGS
@given(st.one_of(cases(), cases(plain=True), cases_with_invalid_optional()), st.data())
def test_a_line_and_its_variants_give_the_reference_row_on_both_paths(case: Case, data: st.DataObject) -> None:
    """Every kind: keys shuffled, optional fields dropped, numbers as text where the contract reads
    text (numeric), upper-case ids: the same row as the original line, the reference's on both paths."""
    record = dict(case.record)
    optional = [f.name for f in c.FIELDS[case.kind] if not f.required and f.name in record]
    for name in data.draw(st.lists(st.sampled_from(optional), unique=True) if optional else st.just([])):
        record.pop(name)
    for f in c.FIELDS[case.kind]:
        value = record.get(f.name)
        if f.type == c.NUMERIC_T and type(value) is float and f.name not in case.warnings and data.draw(st.booleans()):
            record[f.name] = repr(value)  # what the float means, as text
        size = 32 if f.type == c.TRACE_ID_T else 16
        valid_id = f.type in (c.TRACE_ID_T, c.SPAN_ID_T) and value and c.w3c_id(value, size) == value
        if valid_id and data.draw(st.booleans()):
            record[f.name] = value.upper()
    order = data.draw(st.permutations(list(record)))
    variant = orjson.dumps({k: record[k] for k in order})
    dropped_only = orjson.dumps({k: v for k, v in case.record.items() if k in record})
    assert strict(both_paths(variant)) == strict(both_paths(dropped_only))
    assert isinstance(both_paths(orjson.dumps(case.record)), Row)


def test_the_typed_path_takes_what_agent_emit_writes_once_it_has_met_the_app_keys() -> None:
    base = "{" + _BASE
    parser = Parser()
    first = (base + ',"seq":1,"tenant":"acme"}').encode()
    assert parser.typed(first) is None  # "seq" and "tenant" are new: the tolerant path decides
    assert isinstance(parser.parse(first), Row)
    for line in (first, (base + ',"seq":2}').encode(), (base + ',"tenant":"x","metadata":{"k":[1]}}').encode()):
        assert isinstance(parser.typed(line), Row), line
        assert strict(parser.typed(line)) == strict(reference(line))


def test_app_keys_are_learned_up_to_the_cap_and_lines_stay_exact_past_it() -> None:
    parser = Parser()
    lines = [("{" + _BASE + f',"k{i}":{i},"k{i}b":"v"}}').encode() for i in range(typed.MAX_LEARNED)]
    for line in lines:
        assert strict(parser.parse(line)) == strict(reference(line))
    learned = parser._records._structs[c.SPAN].layout.learned  # type: ignore[union-attr]
    assert len(learned) <= typed.MAX_LEARNED
    assert parser.typed(lines[0]) is not None and parser.typed(lines[-1]) is None  # past the cap
    odd = ("{" + _BASE + ',"\\nimport os\\nos._exit(3)\\n#":1,"a\\"b":2,"a b":3,"v0":4,"_":5,"pop":6}').encode()
    assert strict(parser.parse(odd)) == strict(reference(odd))
    assert orjson.loads(parser.parse(odd).values[-1]) == {  # type: ignore[union-attr]
        "\nimport os\nos._exit(3)\n#": 1, 'a"b': 2, "a b": 3, "v0": 4, "_": 5, "pop": 6}


# --- the field types: what the typed decoder takes is what the converter gives -------------------

_FIELDS = [(kind, f) for kind in c.RECORD_KINDS for f in c.FIELDS[kind] if f.name != c.METADATA]


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(_FIELDS), st.one_of(
    json_values(3), st.text("0123456789abcdefABCDEF-", min_size=15, max_size=37),
    st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["0" * 16, "0" * 32, "", "completed", "Completed", "failed", "started", "x" * 255, "x" * 256,
                     "x" * 1000, "x" * 1001, 0, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 1.0, -0.0, True, None,
                     "8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f", "8D3A7F0E-1C2B-4A5D-9E6F-0A1B2C3D4E5F",
                     "{8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f}", "2024-05-01T12:00:00Z", 1714564800, 9999.9999995,
                     pf.NUMERIC_FLOAT_BOUND, -pf.NUMERIC_FLOAT_BOUND, 2.5e-06, "1.5"])))
def test_a_field_type_decodes_only_what_its_converter_keeps(kf: tuple[str, c.Field], value: Any) -> None:
    """``decode_as`` then ``finish`` (when they take a value) give exactly ``convert``'s result."""
    kind, field = kf
    text = str(value).encode() if type(value) is int else orjson.dumps(value)  # any integer, as JSON text
    if b"\\u0000" in text:
        return  # a line that escapes NUL never reaches the typed decoder (Parser.typed)
    try:
        decoded = msgspec.json.decode(text, type=decode_as(kind, field))
    except msgspec.ValidationError:
        return  # refused: the tolerant path decides
    finish = finisher(kind, field)
    if decoded is None:
        assert orjson.loads(text) is None
        return
    try:
        got = decoded if finish is None else finish(decoded, field)
    except pf.Invalid:
        return  # refused by the finishing step: the tolerant path decides
    want = converter(kind, field)(orjson.loads(text), field)  # raises if the typed path took a bad value
    assert (type(got), repr(got)) == (type(want), repr(want)), (field, value)


def test_every_field_type_has_an_entry() -> None:
    assert {f.type for fields in c.FIELDS.values() for f in fields} <= set(TYPES)


# --- the tolerant path's converters, against reference definitions --------------------------------


_HEX = {16: re.compile("[0-9a-fA-F]{16}"), 32: re.compile("[0-9a-fA-F]{32}")}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=34), st.text("0123456789abcdefABCDEF \t\n", min_size=14, max_size=34),
                 st.sampled_from(["0" * 16, "0" * 32, "0" * 15 + "A", " " * 16, "ab cd ef 01 23 4", "٣" * 16])),
       st.sampled_from([16, 32]))
def test_w3c_ids_match_their_definition(value: str, size: int) -> None:
    field = c.Field("x", c.SPAN_ID_T if size == 16 else c.TRACE_ID_T)
    ok = bool(_HEX[size].fullmatch(value)) and value.strip("0") != ""
    assert c.w3c_id(value, size) == (value.lower() if ok else None)
    if ok:
        assert pf._w3c_id(value, field, size) == value.lower()
    else:
        with pytest.raises(pf.Invalid):
            pf._w3c_id(value, field, size)


_Q6 = Decimal("0.000001")


def numeric_reference(value: Any) -> Decimal | None:
    dec = Decimal(repr(value))
    if dec.is_finite() and abs(dec) < 10**4:
        dec = dec.quantize(_Q6)
        if abs(dec) < 10**4:
            return dec
    return None


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.floats(-1e4, 1e4),
                 st.sampled_from([pf.NUMERIC_FLOAT_BOUND, -pf.NUMERIC_FLOAT_BOUND, 9999.9999995, 9999.9999994,
                                  1 / 128, 0.0000005, 0.0000015, -0.0, 5e-324, 9999.999999999998])))
def test_numeric_fast_branch_matches_the_range_checked_one(value: float) -> None:
    field = c.FIELD_BY_NAME[c.SPAN]["cost_usd"]
    want = numeric_reference(value)
    if want is None:
        with pytest.raises(pf.Invalid):
            pf.to_numeric(value, field)
    else:
        got = pf.to_numeric(value, field)
        assert repr(got) == repr(want)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_a_lines_own_id_is_the_text_of_its_uuid5(data: bytes) -> None:
    digest = hashlib.sha1(pf._LINE_NS.bytes + data, usedforsecurity=False).digest()
    assert pf.line_uuid(data) == str(uuid.UUID(bytes=digest[:16], version=5))


def test_a_kind_new_to_the_contract_gets_both_paths_with_no_parse_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record kind the parse code has never heard of (here "metric"), declared only in the
    contract's tables: the typed path decodes it and gives the tolerant path's row."""
    from agent.parse import build as parse_build
    from agent.parse.typed import _struct

    fields = (c.Field("id", c.UUID_T), c.Field("name", c.VARCHAR_T, 50, required=True),
              c.Field("value", c.FLOAT8_T, required=True), c.Field("count", c.INT8_T),
              c.Field("trace_id", c.TRACE_ID_T, 32), c.Field("metadata", c.JSONB_T))
    monkeypatch.setitem(c.TABLE_OF_KIND, "metric", "metrics")
    monkeypatch.setitem(c.COLUMNS, "metrics", ("id", "timestamp", "name", "value", "count", "trace_id", "metadata"))
    monkeypatch.setitem(c.KEY_COLUMNS, "metrics", ("id", "timestamp"))
    monkeypatch.setitem(c.FIELDS, "metric", fields)
    monkeypatch.setitem(c.RECORD_KEYS, "metric", frozenset(f.name for f in fields) | {c.WRITTEN_AT})
    plan = parse_build.plan_of("metric")
    struct: Any = _struct(plan, c.DEFAULT_RECORD_TYPE_KEY, ("host",))
    line = (b'{"record_type":"metric","name":"latency","value":12,"count":3,"timestamp":"2024-05-01T12:00:00Z",'
            b'"trace_id":"0AF7651916CD43DD8448EB211C80319C","host":"a","event":"metric"}')
    s = msgspec.json.decode(line, type=struct)
    fast = s.row(s, line, fid)
    obj = orjson.loads(line)
    del obj["record_type"]
    slow = parse_build.build_row(plan, obj, line, fid)
    assert strict(fast) == strict(slow)
    assert fast.values[0] == FALLBACK_ID and fast.values[3] == 12.0 and fast.values[5] == TID  # derived id, lower-cased
    assert orjson.loads(fast.values[-1]) == {"host": "a"}
