"""The generated builders against the field-by-field reference, on app lines of every shape.

Whatever a line carries besides the contract's fields - unknown keys, ``metadata`` objects that
clash, values that need a repair, any key order, another discriminator key - the row must be the
reference's value for value, compared by type and ``repr``, so a ``Decimal`` exponent, a ``-0.0``
or one byte of metadata text counts. The inline checks the builders use to skip a converter are
held to that converter directly.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent import contract as c
from agent.model import DeadLetter, Row
from agent.parse import build as parse_build
from agent.parse import fields as pf
from agent.parse import parse
from tests.reference_parse import reference
from tests.strategies import Case, cases, json_values

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TID = "0af7651916cd43dd8448eb211c80319c"
SID = "b7ad6b7169203331"


def nested(depth: int) -> orjson.Fragment:
    """JSON text spliced in as is: deeper than ``orjson.dumps`` writes (254) when asked."""
    return orjson.Fragment("[" * depth + '"leaf"' + "]" * depth)


def line_of(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


def strict(row: Any) -> Any:
    """A row as (type, repr) per value: equal rows whose values differ in form compare unequal."""
    if not isinstance(row, Row):
        return row
    return row.table, [(type(v), repr(v)) for v in row.values], row.merge, row.warnings


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
def test_builders_equal_the_reference_on_app_lines(args: tuple[bytes, str]) -> None:
    data, key = args
    want = reference(data, key)
    got = parse(data, record_type_key=key)
    assert strict(got) == strict(want), data
    if isinstance(want, DeadLetter):
        assert isinstance(got, DeadLetter) and (got.reason, got.field) == (want.reason, want.field)


def test_keys_from_lines_never_reach_the_generated_source() -> None:
    before = {kind: parse_build.builder_source(kind) for kind in c.RECORD_KINDS}
    evil = '"\\nimport os\\nos._exit(3)\\n#"'
    data = ("{" + _BASE + f',{evil}:1,"a b":2,"v0":3,"_":4,"C0":5,"pop":6}}').encode()
    row = parse(data)
    assert isinstance(row, Row) and orjson.loads(row.values[-1]) == {
        "\nimport os\nos._exit(3)\n#": 1, "a b": 2, "v0": 3, "_": 4, "C0": 5, "pop": 6}
    assert row.values[4] == "llm"
    assert {kind: parse_build.builder_source(kind) for kind in c.RECORD_KINDS} == before


_CHECKED = [(kind, f) for kind in c.RECORD_KINDS for f in c.FIELDS[kind]
            if parse_build._inline_check(kind, f, "v") is not None]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(_CHECKED), st.one_of(
    json_values(3), st.text("0123456789abcdefABCDEF", min_size=15, max_size=33),
    st.sampled_from(["0" * 16, "0" * 32, "", "\x00", "completed", "Completed", "failed", "started", "x" * 255,
                     "x" * 256, "x" * 1000, "x" * 1001, 0, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 1.0, True])))
def test_an_inline_check_passes_only_what_its_converter_keeps(kf: tuple[str, c.Field], value: Any) -> None:
    kind, field = kf
    check = parse_build._inline_check(kind, field, "v")
    assert check is not None
    scope = {"HEX": parse_build._HEX, "S_status": c.STATUSES.get(kind, frozenset()), "v": value}
    if eval(check, scope):
        kept = parse_build._converter(kind, field)(value, field)
        assert type(kept) is type(value) and kept == value, (field, value)


# --- the generic path's converters, against reference definitions -------------------------------

_HEX = {16: re.compile("[0-9a-fA-F]{16}"), 32: re.compile("[0-9a-fA-F]{32}")}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=34), st.text("0123456789abcdefABCDEF \t\n", min_size=14, max_size=34),
                 st.sampled_from(["0" * 16, "0" * 32, "0" * 15 + "A", " " * 16, "ab cd ef 01 23 4", "٣" * 16])),
       st.sampled_from([16, 32]))
def test_w3c_ids_match_their_definition(value: str, size: int) -> None:
    field = c.Field("x", c.SPAN_ID_T if size == 16 else c.TRACE_ID_T)
    ok = bool(_HEX[size].fullmatch(value)) and value.strip("0") != ""
    if ok:
        assert pf._w3c_id(value, field, size) == value.lower()
    else:
        with pytest.raises(pf.Invalid):
            pf._w3c_id(value, field, size)
    assert pf.hex_lower(value, size) == (bool(_HEX[size].fullmatch(value)) and value == value.lower())


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
