"""Bytes -> one :class:`Row`, :class:`DeadLetter` or :class:`AppLog`; pure, and it never raises.

The contract lives in :mod:`agent.contract`, the per-field conversions in
:mod:`agent.parse_fields`. Two paths build rows:

* the *generic* path (:func:`_build`) walks the contract's field table for any kind, and is the
  single place where defaults, warnings, dead-letter reasons and metadata are decided;
* the *span fast path* (:mod:`agent.parse_fast`) handles the overwhelmingly common line - a span
  as :mod:`agent.emit` or an app writes it, with or without app keys and a ``metadata`` object,
  every value already well-formed - with a function compiled for its key layout. It either
  returns exactly the row the generic path would (metadata text included, byte for byte), or
  ``None`` to hand the line over; it never decides anything on its own. Tests hold the two to
  equality. :func:`parse` looks the compiled function up inline, before any other call.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, Final

import orjson

from agent import contract as c
from agent import parse_fields as pf
from agent.model import AppLog, DeadLetter, Row
from agent.parse_fast import SHAPES as _shapes
from agent.parse_fast import UNSEEN as _UNSEEN
from agent.parse_fast import FastFn, compile_shape

__all__ = ["parse"]

Converter = Callable[[Any, c.Field], Any]
FallbackId = Callable[[], uuid.UUID]

_CONVERTERS: Final[dict[str, Converter]] = {
    c.TRACE_ID_T: pf.trace_id, c.SPAN_ID_T: pf.span_id, c.UUID_T: pf.to_uuid, c.TIME_T: pf.to_time,
    c.VARCHAR_T: pf.to_text, c.TEXT_T: pf.to_text, c.INT4_T: pf.to_int4, c.INT8_T: pf.to_int8,
    c.NUMERIC_T: pf.to_numeric, c.FLOAT8_T: pf.to_float, c.JSONB_T: lambda v, f: pf.json_text(v),
}
_BOM: Final = b"\xef\xbb\xbf"
_TIMED: Final = frozenset({c.TRACE, c.SPAN})  # kinds whose time column is their start
_ID_KEYED: Final = frozenset({c.CHAT_MESSAGE, c.DOCUMENT_EVENT})  # optional app-given uuid key
_KINDS_TEXT: Final = ", ".join(c.RECORD_KINDS)
_MISSING: Final = object()
_SPAN: Final = c.SPAN
_loads: Final = orjson.loads
_NO_SHAPES: Final[dict[tuple[str, ...], FastFn | None]] = {}


def _converter(kind: str, field: c.Field) -> Converter:
    if field.name == "status" and kind in c.STATUSES:
        return pf.to_enum(c.STATUSES[kind])
    return _CONVERTERS[field.type]


_SPECS: Final[dict[str, tuple[tuple[str, bool, c.Field, Converter], ...]]] = {
    kind: tuple((f.name, f.required, f, _converter(kind, f)) for f in fields if f.name != c.METADATA)
    for kind, fields in c.FIELDS.items()
}
# kind -> (table, the row dict's values in COPY column order) - one C call instead of a genexpr
_TABLES: Final[dict[str, tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]]] = {
    kind: (table, itemgetter(*c.COLUMNS[table])) for kind, table in c.TABLE_OF_KIND.items()
}
assert all(cols[1] == c.TIME_COLUMN for cols in c.COLUMNS.values())


def parse(
    data: bytes,
    *,
    record_type_key: str = c.DEFAULT_RECORD_TYPE_KEY,
    fallback_id: FallbackId | None = None,
) -> Row | DeadLetter | AppLog:
    """Turn one line (without its newline) into exactly one row, dead letter or app log.

    ``fallback_id`` supplies the deterministic id of a chat message or document event that has
    no ``id`` of its own (the caller derives it from agent, file identity and offset); without it
    the id is a uuid5 of the line's bytes. Any unexpected failure becomes a dead letter too.
    """
    try:
        try:
            obj = _loads(data)
        except orjson.JSONDecodeError:
            return _undecodable(data)
        if type(obj) is dict and obj.get(record_type_key) == _SPAN:  # the hot path, inlined
            shape = tuple(obj)
            found = _shapes.get(record_type_key, _NO_SHAPES).get(shape, _UNSEEN)
            fast: FastFn | None = compile_shape(shape, record_type_key) if found is _UNSEEN else found
            if fast is not None:
                row = fast(obj)
                if row is not None:
                    return row
        return _parse(data, obj, record_type_key, fallback_id)
    except Exception as exc:  # the promise is "never raises": an internal bug is a dead letter
        return DeadLetter(f"internal parser error: {type(exc).__name__}")


def _parse(data: bytes, obj: Any, key: str, fallback_id: FallbackId | None) -> Row | DeadLetter | AppLog:
    if type(obj) is not dict:
        return DeadLetter(f"not a JSON object: got {_json_kind(obj)}")
    kind = obj.get(key, _MISSING)
    if kind is _MISSING:
        level = obj.get("level")
        return AppLog(pf.clean_str(level[:32]) if type(level) is str else None, obj)
    if type(kind) is not str or kind not in c.TABLE_OF_KIND:
        return DeadLetter(f"{key}: expected one of {_KINDS_TEXT}, got {pf.shorten(kind)}", key)
    del obj[key]
    try:
        return _build(kind, obj, data, fallback_id)
    except pf.Invalid as exc:
        return DeadLetter(str(exc), exc.field)


def _undecodable(data: bytes) -> DeadLetter:
    """Why a line is not JSON; retries once without a BOM, which some writers prepend."""
    if not isinstance(data, bytes | bytearray | memoryview | str):
        return DeadLetter(f"not a line of bytes: got {type(data).__name__}")
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.startswith(_BOM):
        try:
            orjson.loads(raw[3:])
        except orjson.JSONDecodeError:
            raw = raw[3:]
        else:
            return DeadLetter("byte order mark inside the file (not at offset 0)")
    if not raw.strip():
        return DeadLetter("empty line")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DeadLetter(f"invalid UTF-8 at byte {exc.start}")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return DeadLetter(f"invalid JSON: {pf.clean_str(str(exc))[:200]}")
    return DeadLetter("invalid JSON")


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


# --- generic path ------------------------------------------------------------------------------

def _build(kind: str, obj: dict[str, Any], data: bytes, fallback_id: FallbackId | None) -> Row:
    """The contract applied field by field; raises :class:`pf.Invalid` for a dead letter."""
    pop = obj.pop
    started = pop(c.STARTED_AT, None) if kind in _TIMED else None
    written = pop(c.WRITTEN_AT, None)
    explicit_meta = pop(c.METADATA, None)
    invalid: dict[str, Any] = {}
    row: dict[str, Any] = {}
    for name, required, field, convert in _SPECS[kind]:
        raw = pop(name, None)
        if raw is None:
            if required:
                raise pf.Invalid(name, "a value", None, missing=True)
            row[name] = None
            continue
        try:
            row[name] = convert(raw, field)
        except pf.Invalid:
            if required or (name == "id" and kind in _ID_KEYED):
                raise
            invalid[name] = raw
            row[name] = None
    _FIXUPS[kind](row, data, fallback_id)
    row[c.TIME_COLUMN] = _time_column(kind, started, written, row.get("duration_ms"))
    row[c.METADATA] = _metadata(kind, obj, explicit_meta, invalid)
    table, values = _TABLES[kind]
    return Row(table, values(row), c.merges(kind, row.get("status") or ""), tuple(invalid))


def _fix_trace(row: dict[str, Any], data: bytes, fallback_id: FallbackId | None) -> None:
    if row["status"] is None:
        ended = row["ended_at"] is not None or row["duration_ms"] is not None
        row["status"] = c.COMPLETED if ended else c.IN_PROGRESS


def _fix_span(row: dict[str, Any], data: bytes, fallback_id: FallbackId | None) -> None:
    if row["status"] is None:
        row["status"] = c.COMPLETED
    if row["span_type"] is None:
        row["span_type"] = c.DEFAULT_SPAN_TYPE


def _fix_id(row: dict[str, Any], data: bytes, fallback_id: FallbackId | None) -> None:
    if row["id"] is None:
        row["id"] = _fallback(data, fallback_id)


_FIXUPS: Final = {c.TRACE: _fix_trace, c.SPAN: _fix_span, c.CHAT_MESSAGE: _fix_id, c.DOCUMENT_EVENT: _fix_id}


def _fallback(data: bytes, fallback_id: FallbackId | None) -> uuid.UUID:
    """The caller's deterministic id, or a uuid5 of the line if there is no caller's (or it fails)."""
    if fallback_id is not None:
        try:
            value = fallback_id()
            if isinstance(value, uuid.UUID):
                return value
        except Exception:  # a broken callback must not lose the line
            pass
    return pf.line_uuid(data)


_STARTED_F: Final = c.Field(c.STARTED_AT, c.TIME_T, required=True)
_WRITTEN_F: Final = c.Field(c.WRITTEN_AT, c.TIME_T, required=True)


def _time_column(kind: str, started: Any, written: Any, duration_ms: int | None) -> datetime:
    """The row's time: a trace's or span's start; else when the line was written."""
    if kind in _TIMED and started is not None:
        return pf.to_time(started, _STARTED_F)
    if written is None:
        name = c.STARTED_AT if kind in _TIMED else c.WRITTEN_AT
        raise pf.Invalid(name, "a time (started_at or timestamp)" if kind in _TIMED else "a time",
                         None, missing=True)
    at = pf.to_time(written, _WRITTEN_F)
    if kind in _TIMED and duration_ms:
        try:
            at -= timedelta(milliseconds=duration_ms)
        except OverflowError:
            at = pf.TIME_MIN
        if at <= pf.TIME_MIN:
            raise pf.Invalid(c.WRITTEN_AT, "a time later than duration_ms after year 1", written)
    return at


def _metadata(kind: str, rest: dict[str, Any], explicit: Any, invalid: dict[str, Any]) -> str:
    """Unknown keys, a non-default ``event``, the app's ``metadata`` and invalid raw values."""
    event = rest.pop(c.EVENT, None)
    for key in c.BOOKKEEPING:
        rest.pop(key, None)
    if event is not None and event != kind:
        rest[c.EVENT] = event
    if explicit is not None:
        if type(explicit) is dict:
            rest.update(explicit)
        else:
            rest[c.METADATA] = explicit
    if invalid:
        rest[c.INVALID_MARKER] = invalid
    return pf.json_text(rest) if rest else "{}"
