"""OTLP/JSON values -> column values: ids, times, numbers, enums, attributes.

Each function takes what :mod:`agent.parse.otlp.schema` decoded and returns the column's value,
or ``None`` when the field is absent or invalid (the caller decides whether that costs the record
its row: an id or a start time does, anything else does not). Nothing here raises for bad input.
"""

from __future__ import annotations

import binascii
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from agent import contract as c
from agent.parse.otlp.schema import AnyValue, KeyValue

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UINT64: Final = 2**64
_b64decode: Final = binascii.a2b_base64
_NUL: Final = "\x00"
_fromhex: Final = bytes.fromhex
_ZEROS: Final = {8: bytes(8), 16: bytes(16)}


def otlp_id(value: str, size: int) -> str | None:
    """A trace id (``size`` 16 bytes) or span id (8) as lower-case hex, or ``None``: absent (``""``),
    all zero, or neither hex of any case nor (defensively: proto3's own JSON mapping writes bytes
    so, and some encoders followed it) base64 of exactly ``size`` bytes."""
    if len(value) == 2 * size:
        try:
            raw = _fromhex(value)  # any case; whitespace would shorten it
        except ValueError:
            return None
        return raw.hex() if len(raw) == size and raw != _ZEROS[size] else None
    if not value:
        return None
    padded = value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4)
    try:
        raw = _b64decode(padded, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == size and raw != _ZEROS[size] else None


def nanos(value: int | str | float) -> int | None:
    """A ``*UnixNano`` field (a number, or its decimal text) as an integer; ``None`` for 0 (unset
    in proto3), negative numbers and anything that is not an unsigned 64-bit integer."""
    try:
        n = value if type(value) is int else int(value)
    except (ValueError, TypeError, OverflowError):
        return None
    return n if 0 < n < _UINT64 else None


def time_of(ns: int | None) -> datetime | None:
    """Nanoseconds since the epoch (as :func:`nanos` gives them: 0 < ns < 2**64, so 1970 to 2554,
    within what PostgreSQL stores) as an aware UTC datetime, to the microsecond (PostgreSQL's
    precision)."""
    return None if ns is None else _EPOCH + timedelta(microseconds=ns // 1000)


def integer(value: int | str | float | None) -> int | None:
    """A 64-bit integer field: a number or its decimal text (integral floats such as ``12.0`` too)."""
    if type(value) is int:
        return value
    if type(value) is str:
        try:
            return int(value)
        except ValueError:
            value = number(value)
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def number(value: float | int | str | None) -> float | None:
    """A finite double, or ``None`` (absent, ``"NaN"``, infinities, text that is no number)."""
    if value is None or type(value) is bool:
        return None
    try:
        f = float(value)
    except (ValueError, TypeError, OverflowError):
        return None
    return f if f - f == 0.0 else None


def enum(value: int | str, names: dict[str, int]) -> int:
    """An enum field as its number: an integer as it is, a name through ``names`` (0 if unknown)."""
    if type(value) is int:
        return value
    if type(value) is str:
        if value.isdigit():
            return int(value)
        return names.get(value, 0)
    return 0


def text(value: str, top: int) -> str:
    """A label cut to ``top`` characters, NUL replaced (text columns cannot hold it)."""
    if _NUL in value:
        value = value.replace(_NUL, c.NUL_REPLACEMENT)
    return value[:top]


def any_value(v: AnyValue | None) -> Any:
    """An ``AnyValue`` as a JSON value: strings, booleans, numbers (a 64-bit integer as an int;
    a double's ``"NaN"`` stays that text), arrays as lists, key-value lists as objects; bytes as
    their base64 text; an empty value as ``None``."""
    if v is None:
        return None
    s = v.string_value
    if s is not None:
        return s
    i = v.int_value
    if i is not None:
        n = integer(i)
        return i if n is None else n
    d = v.double_value
    if d is not None:
        if type(d) is str:
            f = number(d)
            return d if f is None else f
        return d
    b = v.bool_value
    if b is not None:
        return b
    if v.array_value is not None:
        return [any_value(x) for x in v.array_value.values]
    if v.kvlist_value is not None:
        return attributes(v.kvlist_value.values)
    return v.bytes_value


def attributes(kvs: list[KeyValue]) -> dict[str, Any]:
    """A key-value list as one object (a key given twice: the last one wins, as in the SDKs).
    Strings, most attributes, are taken without a call."""
    return {kv.key: s if (v := kv.value) is not None and (s := v.string_value) is not None else any_value(v)
            for kv in kvs}
