"""Hypothesis strategies for log-line records, with the row each one must become.

A :class:`Case` is a record as a JSON-native dict (what ``agent.emit`` or any app writes) plus the
expected column values, computed here from the typed values the strategy drew - not by calling
the parser - so that a round-trip test compares two independent accounts of the contract.
Reusable by other stages: ``cases()`` for valid records of every kind, ``wild_records()`` for
records whose known fields hold arbitrary JSON, ``json_values()`` for jsonb payloads.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from agent import contract as c

FALLBACK_ID = "00000000-0000-4000-8000-00000000f00d"  # what a FallbackId gives: uuid text
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INT4 = st.integers(0, c.INT4_MAX)
_ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), None]


@dataclass
class Case:
    """A record and what parsing it must give (``expected`` maps column -> value)."""

    kind: str
    record: dict[str, Any]
    expected: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def table(self) -> str:
        return c.TABLE_OF_KIND[self.kind]

    @property
    def merge(self) -> bool:
        return c.merges(self.kind, self.expected.get("status") or "")


def no_nul(text: str) -> str:
    return text.replace("\x00", c.NUL_REPLACEMENT)


def expected_json(value: Any) -> Any:
    """What a JSON value looks like after the jsonb guards (NUL replaced in strings and keys)."""
    if isinstance(value, str):
        return no_nul(value)
    if isinstance(value, dict):
        return {no_nul(k): expected_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expected_json(v) for v in value]
    return value


# --- scalar pieces: (raw value for the line, expected column value) ---------------------------

def hex_ids(size: int) -> st.SearchStrategy[tuple[str, str]]:
    """W3C ids, sometimes upper case (normalised to lower), never all zero."""
    digits = st.text("0123456789abcdef", min_size=size, max_size=size).filter(lambda s: s.strip("0"))
    return digits.flatmap(lambda s: st.sampled_from([(s, s), (s.upper(), s)]))


def uuid_texts() -> st.SearchStrategy[tuple[str, str]]:
    """UUIDs in the text forms apps write; expected is the canonical text (lower case, hyphens)."""
    def render(u: uuid.UUID) -> st.SearchStrategy[tuple[str, str]]:
        text = str(u)
        return st.sampled_from([(text, text), (text.upper(), text), (u.hex, text), ("{" + text + "}", text)])
    return st.uuids().flatmap(render)


def times() -> st.SearchStrategy[tuple[Any, datetime]]:
    """RFC 3339 text with offsets, ``Z``, naive (UTC) text and epoch seconds/milliseconds."""
    wide = st.datetimes(min_value=datetime(1, 1, 1, 0, 0, 0, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999998))
    aware = st.builds(lambda dt, tz: dt.replace(tzinfo=tz), wide, st.sampled_from([UTC, None]))
    middle = st.datetimes(min_value=datetime(1973, 3, 4), max_value=datetime(5000, 1, 1),
                          timezones=st.sampled_from(_ZONES[:3]))
    return st.one_of(aware.map(_iso_case), middle.flatmap(_any_case))


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _iso_case(dt: datetime) -> tuple[Any, datetime]:
    return dt.isoformat(), _utc(dt)


def _any_case(dt: datetime) -> st.SearchStrategy[tuple[Any, datetime]]:
    exact = _utc(dt)
    whole = exact.replace(microsecond=0)
    quarter = whole + timedelta(microseconds=(exact.microsecond // 250_000) * 250_000)
    seconds = int((whole - _EPOCH).total_seconds())
    millis = exact.replace(microsecond=exact.microsecond // 1000 * 1000)
    ms = (millis - _EPOCH) // timedelta(milliseconds=1)
    return st.sampled_from([
        (dt.isoformat(), exact),
        (exact.isoformat().replace("+00:00", "Z"), exact),
        (exact.replace(tzinfo=None).isoformat(), exact),
        (seconds, whole),
        (seconds + (quarter - whole).total_seconds(), quarter),  # binary-exact fractions
        (ms, millis),
    ])


def texts(max_size: int, *, min_size: int = 0) -> st.SearchStrategy[str]:
    """Unicode text (never lone surrogates, sometimes NUL), at most ``max_size`` characters."""
    return st.text(st.characters(codec="utf-8"), min_size=min_size, max_size=max_size)


def cut_texts(limit: int, *, min_size: int = 0) -> st.SearchStrategy[tuple[str, str]]:
    """Text that may exceed ``limit``; expected is the NUL-replaced, truncated value."""
    long = st.builds(lambda a, b: a + b, texts(limit, min_size=limit), texts(20))
    source = st.one_of(texts(min(limit, 60), min_size=min_size), long)
    return source.map(lambda s: (s, no_nul(s)[:limit]))


def numerics() -> st.SearchStrategy[tuple[Any, Decimal]]:
    top = Decimal("9999.999999")
    dec = st.decimals(min_value=-top, max_value=top, places=c.NUMERIC_SCALE, allow_nan=False)
    return dec.flatmap(lambda d: st.sampled_from([(float(d), d), (str(d), d)]))


def counts() -> st.SearchStrategy[tuple[Any, int]]:
    return INT4.flatmap(lambda n: st.sampled_from([(n, n), (float(n), n)]))


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """JSON-native values orjson can write: 64-bit ints, finite floats, any text."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                        st.floats(allow_nan=False, allow_infinity=False), texts(20))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(texts(8), inner, max_size=4)), max_leaves=max_leaves)


# --- records -----------------------------------------------------------------------------------

_PIECES: dict[str, st.SearchStrategy[tuple[Any, Any]]] = {
    c.TRACE_ID_T: hex_ids(32), c.SPAN_ID_T: hex_ids(16), c.UUID_T: uuid_texts(), c.TIME_T: times(),
    c.INT4_T: counts(), c.INT8_T: st.integers(0, c.INT8_MAX).map(lambda n: (n, n)),
    c.NUMERIC_T: numerics(),
    c.FLOAT8_T: st.floats(allow_nan=False, allow_infinity=False).map(lambda f: (f, f)),
    c.JSONB_T: json_values().map(lambda v: (v, expected_json(v))),
}


def _bounded_text(size: int, low: int) -> st.SearchStrategy[tuple[str, str]]:
    short = texts(min(size, 60), min_size=low)
    exact = short.map(lambda s: s + "x" * (size - len(s)))  # right at the varchar limit
    return st.one_of(short, exact).map(lambda s: (s, no_nul(s)))


def _plain_piece(kind: str, f: c.Field) -> st.SearchStrategy[tuple[Any, Any]]:
    """Values already in their final form, as ``agent.emit`` writes them."""
    if f.name == "status" and kind in c.STATUSES:
        return st.sampled_from(sorted(c.STATUSES[kind])).map(lambda s: (s, s))
    if f.type in (c.TRACE_ID_T, c.SPAN_ID_T):
        size = 32 if f.type == c.TRACE_ID_T else 16
        return st.text("0123456789abcdef", min_size=size, max_size=size).filter(
            lambda s: s.strip("0")).map(lambda s: (s, s))
    if f.type in (c.VARCHAR_T, c.TEXT_T):
        clean = st.characters(codec="utf-8", exclude_characters="\x00")
        low = 1 if f.required and f.type == c.VARCHAR_T else 0
        return st.text(clean, min_size=low, max_size=min(f.max_len or 80, 80)).map(lambda s: (s, s))
    if f.type == c.INT4_T:
        return INT4.map(lambda n: (n, n))
    return _PIECES[f.type]


def _piece(kind: str, f: c.Field, plain: bool = False) -> st.SearchStrategy[tuple[Any, Any]]:
    if plain:
        return _plain_piece(kind, f)
    if f.name == "status" and kind in c.STATUSES:
        return st.sampled_from(sorted(c.STATUSES[kind])).flatmap(
            lambda s: st.sampled_from([(s, s), (s.upper(), s)]))
    if f.type in (c.VARCHAR_T, c.TEXT_T):
        if f.truncate:
            return cut_texts(f.max_len or 2000, min_size=1 if f.required else 0)
        if f.max_len is None:
            return texts(200).map(lambda s: (s, no_nul(s)))
        return _bounded_text(f.max_len, 1 if f.required else 0)
    return _PIECES[f.type]


@st.composite
def cases(draw: st.DrawFn, kind: str | None = None, *, plain: bool = False) -> Case:
    """A valid record of ``kind`` (any kind if ``None``) and its expected row.

    ``plain`` draws records like ``agent.emit`` writes them: RFC 3339 start, no unknown keys.
    """
    kind = kind or draw(st.sampled_from(c.RECORD_KINDS))
    case = Case(kind, {c.DEFAULT_RECORD_TYPE_KEY: kind})
    for f in c.FIELD_BY_NAME[kind].values():
        if f.name == c.METADATA:
            continue
        if f.required or draw(st.booleans()):
            raw, expected = draw(_piece(kind, f, plain))
            case.record[f.name], case.expected[f.name] = raw, expected
        else:
            case.expected[f.name] = None
    if plain:
        _plain_time(draw, case)
    else:
        _time(draw, case)
    _defaults(case)
    _metadata(draw, case, plain)
    return case


def _plain_time(draw: st.DrawFn, case: Case) -> None:
    at = draw(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(3000, 1, 1), timezones=st.just(UTC)))
    case.record[c.STARTED_AT if case.kind in (c.TRACE, c.SPAN) else c.WRITTEN_AT] = at.isoformat()
    case.expected[c.TIME_COLUMN] = at


def _defaults(case: Case) -> None:
    """Defaults the contract gives absent (or invalid) optional fields."""
    exp = case.expected
    if case.kind == c.TRACE and exp["status"] is None:
        ended = exp["ended_at"] is not None or exp["duration_ms"] is not None
        exp["status"] = c.COMPLETED if ended else c.IN_PROGRESS
    if case.kind == c.SPAN:
        exp["status"] = exp["status"] or c.COMPLETED
        exp["span_type"] = c.DEFAULT_SPAN_TYPE if exp["span_type"] is None else exp["span_type"]
    if case.kind in (c.CHAT_MESSAGE, c.DOCUMENT_EVENT, c.METRIC, c.WORKFLOW_TRANSITION) and exp["id"] is None:
        exp["id"] = FALLBACK_ID


def _time(draw: st.DrawFn, case: Case) -> None:
    raw, at = draw(times())
    timed = case.kind in (c.TRACE, c.SPAN)
    if timed and draw(st.integers(0, 4)):
        case.record[c.STARTED_AT] = raw
        if draw(st.booleans()):  # structlog's write time: ignored when started_at is given
            case.record[c.WRITTEN_AT] = draw(times())[0]
    else:
        duration = case.expected.get("duration_ms") if timed else None
        if duration and at - datetime(1, 1, 1, tzinfo=UTC) <= timedelta(milliseconds=duration):
            del case.record["duration_ms"]
            case.expected["duration_ms"] = duration = None
        case.record[c.WRITTEN_AT] = raw
        at = at - timedelta(milliseconds=duration) if duration else at
    case.expected[c.TIME_COLUMN] = at


_UNKNOWN = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).map(lambda s: "x_" + s)


def _metadata(draw: st.DrawFn, case: Case, plain: bool) -> None:
    meta: dict[str, Any] = {}
    if plain:
        case.record.update({c.EVENT: case.kind, "level": "info"})
        case.record.setdefault(c.WRITTEN_AT, "2024-05-01T12:00:00Z")
        case.expected[c.METADATA] = meta
        return
    for key, value in draw(st.dictionaries(_UNKNOWN, json_values(6), max_size=3)).items():
        case.record[key] = value
        meta[key] = expected_json(value)
    event = draw(st.sampled_from([None, case.kind, "something happened"]))
    if event is not None:
        case.record[c.EVENT] = event
        if event != case.kind:
            meta[c.EVENT] = event
    if draw(st.booleans()):
        case.record["level"] = draw(st.sampled_from(["info", "warning"]))
    if draw(st.booleans()):
        explicit = draw(st.dictionaries(texts(8), json_values(6), max_size=3))
        case.record[c.METADATA] = explicit
        meta.update(expected_json(explicit))
    case.expected[c.METADATA] = meta


_BAD: dict[str, Any] = {
    c.TRACE_ID_T: "xyz", c.SPAN_ID_T: "0" * 16, c.UUID_T: "not-a-uuid", c.TIME_T: "yesterday",
    c.INT4_T: -1, c.INT8_T: 2**63, c.NUMERIC_T: 12345.5, c.FLOAT8_T: "warm",
}


def _bad_value(f: c.Field) -> st.SearchStrategy[Any]:
    if f.type in (c.VARCHAR_T, c.TEXT_T):
        typed = "y" * ((f.max_len or 0) + 1) if f.max_len and not f.truncate else 12345
    else:
        typed = _BAD[f.type]
    return st.sampled_from([typed, True, [1, 2], {"a": None}])


@st.composite
def cases_with_invalid_optional(draw: st.DrawFn, kind: str | None = None) -> Case:
    """A valid record whose one optional field holds a value of the wrong type or size.

    The row keeps going: the field is NULL (or its default), the raw value sits under
    ``metadata["_invalid"]`` and the field is named in ``warnings``.
    """
    case = draw(cases(kind))
    optional = [f for f in c.FIELD_BY_NAME[case.kind].values() if not f.required and f.type != c.JSONB_T
                and f.name not in ("id", "duration_ms")]
    f = draw(st.sampled_from(optional))
    bad = draw(_bad_value(f))
    case.record[f.name] = bad
    case.expected[f.name] = None
    if (case.kind == c.TRACE and "status" not in case.record) or f.name in ("status", "span_type"):
        case.expected["status" if f.name != "span_type" else "span_type"] = None
    _defaults(case)
    case.expected[c.METADATA] = {**case.expected[c.METADATA], c.INVALID_MARKER: {f.name: bad}}
    case.warnings = (f.name,)
    return case


def wild_records() -> st.SearchStrategy[dict[str, Any]]:
    """Records of a random kind whose known keys hold arbitrary JSON: every branch of the parser."""
    keys = sorted({f for fields in c.FIELD_BY_NAME.values() for f in fields} | {c.STARTED_AT, c.WRITTEN_AT})
    value = st.one_of(json_values(4), st.sampled_from(["", "0" * 32, "0" * 16, "2024-05-01T00:00:00Z"]),
                      st.integers(-(2**70), 2**70), hex_ids(32).map(lambda p: p[0]),
                      hex_ids(16).map(lambda p: p[0]), uuid_texts().map(lambda p: p[0]), times().map(lambda p: p[0]))
    body = st.dictionaries(st.sampled_from(keys), value, max_size=12)
    return st.builds(lambda kind, b: {c.DEFAULT_RECORD_TYPE_KEY: kind, **b},
                     st.sampled_from([*c.RECORD_KINDS, "bogus"]), body)


# --- the JSONTestSuite corpus (vendored in tests/corpora, MIT; see its README) ------------------

CORPORA = Path(__file__).resolve().parent / "corpora"
JSON_SUITE = CORPORA / "jsontestsuite" / "test_parsing"


def corpus_files() -> list[Path]:
    """Every file of the JSONTestSuite parsing corpus (fails loudly if the corpus is missing)."""
    files = sorted(JSON_SUITE.iterdir())
    assert len(files) > 300, f"corpus missing or incomplete at {JSON_SUITE}"
    return files


def corpus_as_lines(data: bytes) -> list[bytes]:
    """One file as a log line: newlines removed, and as-is."""
    return [data.replace(b"\r", b"").replace(b"\n", b""), data]


_SPAN_PREFIX = (b'{"record_type":"span","span_id":"b7ad6b7169203331","trace_id":"0af7651916cd43dd8448eb211c80319c",'
                b'"name":"corpus","started_at":"2024-05-01T12:00:00+00:00","corpus":')
_CHAT_PREFIX = (b'{"record_type":"chat_message","role":"user","content":"c","timestamp":"2024-05-01T12:00:00Z",'
                b'"metadata":{"m":1},"sources":')


def corpus_in_records(data: bytes) -> list[bytes]:
    """The file's JSON text spliced into valid records: as an unknown key (metadata) and as sources.

    Splicing the bytes (rather than re-serialising) keeps what orjson would refuse to write:
    huge numbers, deep nesting, escaped NULs.
    """
    return [_SPAN_PREFIX + data + b"}", _CHAT_PREFIX + data + b"}"]
