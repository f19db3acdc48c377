"""The contract's field types, each in one entry: how the tolerant path converts a value, and how
the typed decoder reads it.

A field type is three things:

* ``convert`` (:mod:`agent.parse.fields`): any JSON value -> the column value, or
  :class:`~agent.parse.fields.Invalid`. The tolerant path (:mod:`agent.parse.build`) runs it on
  what ``orjson.loads`` gave; it is the contract.
* ``decode_as``: the msgspec type the typed decoder (:mod:`agent.parse.typed`) reads the field as.
  It must accept only values for which ``finish`` (or, without one, the value itself) equals what
  ``convert`` returns: a string within its length (NUL never reaches it: a line that escapes one
  takes the tolerant path), an integer within its range, a status spelled as the contract spells it.
  Whatever it refuses - a value to repair, to cut or to report - sends the line to the tolerant path.
* ``finish``: what is left to do in Python on a decoded value (lower-case hex ids, uuid text,
  Decimal, jsonb text), or ``None``. It raises :class:`~agent.parse.fields.Invalid` to hand the line
  to the tolerant path, which then says what is wrong.

Adding a type means adding one entry to :data:`TYPES`; tests hold every entry's ``decode_as`` and
``finish`` to its ``convert``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import msgspec
import orjson

from agent import contract as c
from agent.parse import fields as pf

Converter = Callable[[Any, c.Field], Any]

_HEX: Final = c.HEX_DIGITS
_Q6: Final = Decimal(1).scaleb(-c.NUMERIC_SCALE)
_dumps: Final = orjson.dumps
_fromhex: Final = bytes.fromhex


@dataclass(frozen=True, slots=True)
class FieldType:
    """One contract type tag: the tolerant converter, the typed decoder's type, the finishing step."""

    convert: Converter
    decode_as: Callable[[c.Field], Any]
    finish: Converter | None = None


def _str_of(field: c.Field) -> Any:
    """A string the converter keeps: within ``max_len`` (cut or not: cutting is the tolerant
    path's), not empty for a required varchar."""
    low = 1 if field.required and field.type == c.VARCHAR_T else None
    if field.max_len is None and low is None:
        return str
    return Annotated[str, msgspec.Meta(min_length=low, max_length=field.max_len)]


def _sized_str(field: c.Field) -> Any:
    size = _ID_SIZES[field.type]
    return Annotated[str, msgspec.Meta(min_length=size, max_length=size)]


def _count(top: int) -> Callable[[c.Field], Any]:
    return lambda field: Annotated[int, msgspec.Meta(ge=0, le=top)]


def _any(field: c.Field) -> Any:
    return Any


def _finish_w3c(value: str, field: c.Field) -> str:
    """Lower-case hex (the decoder checked the size), not all zero: kept as it is; else converted.

    ``bytes.fromhex`` reads hex of any case (and skips whitespace); its ``hex()`` is lower case, so
    the round trip equals ``value`` exactly for lower-case hex (several times faster than a regex,
    or than ``str.strip`` with the sixteen digits).
    """
    try:
        if _fromhex(value).hex() == value and value not in _ZEROS:
            return value
    except ValueError:
        pass
    return pf.trace_id(value, field) if field.type == c.TRACE_ID_T else pf.span_id(value, field)


def _finish_uuid(value: Any, field: c.Field) -> str:
    return value if type(value) is str and pf.is_canonical_uuid(value) else pf.to_uuid(value, field)


def _finish_numeric(value: float, field: c.Field) -> Decimal:
    """``to_numeric``'s float branch: the decoder kept the value within NUMERIC_FLOAT_BOUND."""
    return Decimal(repr(value)).quantize(_Q6)


def _finish_jsonb(value: Any, field: c.Field) -> str:
    """One ``orjson.dumps``; what it refuses (integers beyond 64 bits, which ``orjson.loads`` would
    have read as floats, or nesting past 254) goes to the tolerant path, which repairs it."""
    try:
        return _dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        raise pf.Invalid(field.name, "JSON orjson writes as it is", value) from None


_ID_SIZES: Final = {c.TRACE_ID_T: 32, c.SPAN_ID_T: 16}
_ZEROS: Final = tuple("0" * size for size in _ID_SIZES.values())
_BOUND: Final = pf.NUMERIC_FLOAT_BOUND

TYPES: Final[dict[str, FieldType]] = {
    c.TRACE_ID_T: FieldType(pf.trace_id, _sized_str, _finish_w3c),
    c.SPAN_ID_T: FieldType(pf.span_id, _sized_str, _finish_w3c),
    c.UUID_T: FieldType(pf.to_uuid, lambda f: Annotated[str, msgspec.Meta(max_length=45)], _finish_uuid),
    c.TIME_T: FieldType(pf.to_time, _any, pf.to_time),
    c.VARCHAR_T: FieldType(pf.to_text, _str_of),
    c.TEXT_T: FieldType(pf.to_text, _str_of),
    c.INT4_T: FieldType(pf.to_int4, _count(c.INT4_MAX)),
    c.INT8_T: FieldType(pf.to_int8, _count(c.INT8_MAX)),
    # msgspec reads an integer into a float field as float(n): to_numeric and to_float give the same
    c.NUMERIC_T: FieldType(pf.to_numeric, lambda f: Annotated[float, msgspec.Meta(ge=-_BOUND, le=_BOUND)],
                           _finish_numeric),
    c.FLOAT8_T: FieldType(pf.to_float, lambda f: float),
    c.JSONB_T: FieldType(lambda v, f: pf.json_text(v), _any, _finish_jsonb),
}


def is_enum(kind: str, field: c.Field) -> bool:
    """Whether the field is one of the kind's closed sets of values (a status)."""
    return field.name == "status" and kind in c.STATUSES


def converter(kind: str, field: c.Field) -> Converter:
    """The tolerant path's conversion of ``field`` of ``kind``."""
    if is_enum(kind, field):
        return pf.to_enum(c.STATUSES[kind])
    return TYPES[field.type].convert


def decode_as(kind: str, field: c.Field) -> Any:
    """The typed decoder's msgspec type for ``field`` of ``kind`` (``None`` allowed if optional)."""
    t: Any = Literal[tuple(sorted(c.STATUSES[kind]))] if is_enum(kind, field) else TYPES[field.type].decode_as(field)
    return t if field.required else t | None


def finisher(kind: str, field: c.Field) -> Converter | None:
    """What is left to do on the typed decoder's value, or ``None`` when it is the column value."""
    return None if is_enum(kind, field) else TYPES[field.type].finish
