"""Field converters for :mod:`agent.parse`: one JSON value in, one COPY-ready Python value out.

Each converter either returns a value that asyncpg's binary COPY encodes and PostgreSQL stores
without complaint, or raises :class:`Invalid` naming the field, what was expected and the
(shortened) value. The parser decides what an :class:`Invalid` means: a dead letter for a required
field, a warning plus ``metadata["_invalid"]`` for an optional one. Guarding here, before COPY, is
what keeps one bad line from failing a whole batch.

Values arrive from ``orjson.loads``, which already refuses invalid UTF-8, lone surrogates,
NaN/Infinity and nesting beyond 1024; what remains to guard is NUL, lengths, ranges and the
re-serialisation limits of ``orjson.dumps`` (64-bit integers, 254 levels).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

from agent import contract as c

_Q6: Final = Decimal(1).scaleb(-c.NUMERIC_SCALE)
_NUMERIC_LIMIT: Final = Decimal(c.NUMERIC_LIMIT)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# A float within this bound needs no range check in to_numeric: repr() is monotonic, so its
# decimal is within +-(10**4 - 10**-6), and so is that rounded to 6 places.
NUMERIC_FLOAT_BOUND: Final = float(_NUMERIC_LIMIT - _Q6)
# asyncpg writes exactly datetime.min / datetime.max as -infinity / infinity: both are refused.
TIME_MIN: Final = datetime.min.replace(tzinfo=UTC)
TIME_MAX: Final = datetime.max.replace(tzinfo=UTC)
_LINE_NS: Final = uuid.UUID("6f1c1d0e-8f43-4b8e-9a51-3b7f6c2d9e10")  # uuid5 namespace for lines
_LINE_NS_BYTES: Final = _LINE_NS.bytes
_SHORT: Final = 80


class Invalid(Exception):
    """A value that does not fit its field. ``str()`` is the dead-letter reason."""

    def __init__(self, field: str, expected: str, value: Any, *, missing: bool = False) -> None:
        self.field = field
        self.value = value
        shown = "nothing" if missing else shorten(value)
        super().__init__(f"{field}: expected {expected}, got {shown}")


def shorten(value: Any) -> str:
    """A short, printable rendering of a JSON value for reasons (never NUL, never a surrogate)."""
    if isinstance(value, str):
        text = repr(value[:_SHORT])
        return text + "…" if len(value) > _SHORT else text
    if isinstance(value, dict | list):
        kind = "object" if isinstance(value, dict) else "array"
        return f"{kind} of {len(value)}"
    return repr(value)[:_SHORT]


def line_uuid(data: bytes) -> str:
    """Deterministic id of a line's bytes, for records without an app-given id (uuid5 style)."""
    return uuid5_text(hashlib.sha1(_LINE_NS_BYTES + bytes(data), usedforsecurity=False).digest())


# The variant nibble of a uuid5 from a digest's nibble: its two low bits under the RFC 4122 bits 10.
_VARIANT: Final = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def uuid5_text(digest: bytes) -> str:
    """The canonical text of ``uuid.UUID(bytes=digest[:16], version=5)``, without building one.

    Row values carry uuids as text (asyncpg's COPY encodes ``str`` for uuid columns), and a
    ``uuid.UUID`` costs about a microsecond in Python: the version nibble becomes 5 and the
    variant's two top bits 10, exactly as ``uuid.UUID(..., version=5)`` sets them.
    """
    x = digest[:16].hex()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:]}"


# --- identifiers -------------------------------------------------------------------------------

def _w3c_id(value: Any, field: c.Field, size: int) -> str:
    """Any-case hex of ``size`` digits, not all zero -> its lower-case text (:func:`contract.w3c_id`)."""
    text = c.w3c_id(value, size)
    if text is None:
        raise Invalid(field.name, f"{size} hex digits, not all zero", value)
    return text


def trace_id(value: Any, field: c.Field) -> str:
    """W3C trace id: 32 hex digits, lower-cased, not all zero."""
    return _w3c_id(value, field, 32)


def span_id(value: Any, field: c.Field) -> str:
    """W3C span id: 16 hex digits, lower-cased, not all zero."""
    return _w3c_id(value, field, 16)


def to_uuid(value: Any, field: c.Field) -> str:
    """A UUID in any of the text forms ``uuid.UUID`` reads (hyphens, braces, urn prefix), as its
    canonical text: lower case, hyphenated (what PostgreSQL prints and asyncpg's COPY takes)."""
    if type(value) is str and len(value) <= 45:
        if is_canonical_uuid(value):
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise Invalid(field.name, "a UUID", value)


_HEX_DASH: Final = "0123456789abcdef-"


def is_canonical_uuid(value: str) -> bool:
    """Whether ``value`` is already ``str(uuid.UUID(value))``: 8-4-4-4-12 lower-case hex digits."""
    return (len(value) == 36 and value[8] == value[13] == value[18] == value[23] == "-"
            and not value.strip(_HEX_DASH) and value.count("-") == 4)


# --- time --------------------------------------------------------------------------------------

def to_time(value: Any, field: c.Field) -> datetime:
    """RFC 3339 text (naive means UTC) or epoch seconds / milliseconds -> aware UTC datetime."""
    try:
        if type(value) is str:
            at = _from_text(value)
        elif type(value) is int or type(value) is float:
            at = _from_epoch(value)
        else:
            raise ValueError("not a time")
        if TIME_MIN < at < TIME_MAX:
            return at
    except (ValueError, OverflowError, OSError):
        pass
    raise Invalid(field.name, "an RFC 3339 time or epoch seconds/milliseconds", value)


def _from_text(value: str) -> datetime:
    dt = datetime.fromisoformat(value)
    tz = dt.tzinfo
    if tz is UTC:
        return dt
    if tz is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _from_epoch(value: float) -> datetime:
    """Seconds below 1e11 (until year 5138), milliseconds below 1e14; integers stay exact."""
    size = abs(value)
    if size < c.EPOCH_MS_FROM:
        if type(value) is int:
            return _EPOCH + timedelta(seconds=value)
        return _EPOCH + timedelta(microseconds=round(value * 1_000_000))
    if size < c.EPOCH_MS_UNTIL:
        if type(value) is int:
            return _EPOCH + timedelta(milliseconds=value)
        return _EPOCH + timedelta(microseconds=round(value * 1000))
    raise ValueError("epoch out of range")


# --- numbers -----------------------------------------------------------------------------------

def _count(value: Any, field: c.Field, top: int, expected: str) -> int:
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and 0 <= value <= top:
        return value
    raise Invalid(field.name, expected, value)


def to_int4(value: Any, field: c.Field) -> int:
    """A non-negative integer within integer (int4) range; integral floats are accepted."""
    return _count(value, field, c.INT4_MAX, "an integer 0..2147483647")


def to_int8(value: Any, field: c.Field) -> int:
    """A non-negative integer within bigint (int8) range; integral floats are accepted."""
    return _count(value, field, c.INT8_MAX, "an integer 0..9223372036854775807")


def to_numeric(value: Any, field: c.Field) -> Decimal:
    """numeric(10, 6): a number (or numeric text) rounded to 6 places, |v| < 10**4."""
    try:
        if type(value) is float and -NUMERIC_FLOAT_BOUND <= value <= NUMERIC_FLOAT_BOUND:
            return Decimal(repr(value)).quantize(_Q6)  # the common case: no range check needed
        if type(value) is float or type(value) is int:
            dec = Decimal(repr(value))
        elif type(value) is str and len(value) <= 40:
            dec = Decimal(value)
        else:
            raise InvalidOperation
        if dec.is_finite() and abs(dec) < _NUMERIC_LIMIT:
            dec = dec.quantize(_Q6)
            if abs(dec) < _NUMERIC_LIMIT:
                return dec
    except (InvalidOperation, ValueError):
        pass
    raise Invalid(field.name, "a number with |v| < 10000", value)


def to_float(value: Any, field: c.Field) -> float:
    """double precision: a finite number (JSON cannot carry NaN or Infinity anyway)."""
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            pass
    raise Invalid(field.name, "a finite number", value)


# --- text --------------------------------------------------------------------------------------

def to_text(value: Any, field: c.Field) -> str:
    """A string; NUL becomes U+FFFD; over-long is cut (labels, messages) or invalid (ids, enums)."""
    if type(value) is not str:
        raise Invalid(field.name, "a string", value)
    text: str = value.replace("\x00", c.NUL_REPLACEMENT) if "\x00" in value else value
    top = field.max_len
    if top is not None and len(text) > top:
        if not field.truncate:
            raise Invalid(field.name, f"a string of at most {top} characters", value)
        text = text[:top]
    if not text and field.required and field.type == c.VARCHAR_T:
        raise Invalid(field.name, "a non-empty string", value)
    return text


def to_enum(allowed: frozenset[str]) -> Callable[[Any, c.Field], str]:
    """A converter accepting exactly ``allowed`` (case-insensitively), e.g. status values."""
    expected = "one of " + ", ".join(sorted(allowed))

    def convert(value: Any, field: c.Field) -> str:
        if type(value) is str:
            if value in allowed:
                return value
            low = value.lower()
            if low in allowed:
                return low
        raise Invalid(field.name, expected, value)

    return convert


# --- JSON --------------------------------------------------------------------------------------

def json_text(value: Any) -> str:
    """JSON text PostgreSQL's jsonb accepts: no U+0000, no lone surrogate, bounded depth.

    The common case is one ``orjson.dumps``; only values it refuses, or whose text has an escaped
    NUL, take the slower cleaning walk.
    """
    try:
        out = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(clean_json(value)).decode()
    if b"\\u0000" in out:
        return orjson.dumps(clean_json(value)).decode()
    return out.decode()


def clean_json(value: Any) -> Any:
    """A copy of ``value`` that ``orjson.dumps`` and jsonb both accept (:func:`contract.json_native`
    with the parser's depth limit, NUL replaced)."""
    return c.json_native(value, c.JSON_MAX_DEPTH, c.JSON_TOO_DEEP, nul=c.NUL_REPLACEMENT)


def clean_str(value: str) -> str:
    """NUL -> U+FFFD; lone surrogates -> '?', so the text encodes as UTF-8."""
    text: str = c.json_native(value, 0, "", nul=c.NUL_REPLACEMENT)
    return text
