"""One row builder per record kind, generated once from the contract: the single parse path.

Why generated: a loop over a kind's field table pays, on every line, a tuple unpack, a converter
call and a dict store per field, present or not; that was ten times the cost of decoding the JSON.
Here each kind gets one straight-line function - written out with ``exec`` at import, as
:mod:`dataclasses` writes ``__init__`` - that pops each field by name, so key order, absent
optional fields, a derived start and unknown keys cost nothing extra, and checks the common
well-formed value inline (a lower-case hex id, a short string without NUL, an int in range).
Only a value that fails the inline check calls the field's converter, which normalises it
(upper-case hex, NUL, over-long text) or raises :class:`~agent.parse.fields.Invalid`. The inline
checks accept exactly the values their converter returns unchanged, so the result is the same as
calling the converter every time; tests hold the builders to a plain field-by-field reference.

Nothing from a line ever reaches the generated source: it is built from the contract alone.

The semantics, per kind, in this order (the first failure names its field):
1. ``started_at`` (traces, spans), ``timestamp`` and ``metadata`` are taken out of the record;
2. each field in contract order: missing or invalid required fields make a dead letter; an invalid
   optional one keeps its raw value under ``metadata["_invalid"]`` and a warning (an invalid
   app-given ``id`` of a chat message or document event is a dead letter: it is the row's key);
3. defaults: a span's status and type, a trace's status, a missing id (the caller's fallback);
4. the time column: the start of a trace or span (or ``timestamp`` minus ``duration_ms``), else
   ``timestamp``;
5. ``metadata``: the unknown keys as they appear, then a non-default ``event``, then the entries
   of the app's ``metadata`` object (which win on a clash), then ``_invalid``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import orjson

from agent import contract as c
from agent.model import Row
from agent.parse import fields as pf

FallbackId = Callable[[], uuid.UUID]
Builder = Callable[[dict[str, Any], bytes, "FallbackId | None"], Row]

_CONVERTERS: Final[dict[str, Callable[[Any, c.Field], Any]]] = {
    c.TRACE_ID_T: pf.trace_id, c.SPAN_ID_T: pf.span_id, c.UUID_T: pf.to_uuid, c.TIME_T: pf.to_time,
    c.VARCHAR_T: pf.to_text, c.TEXT_T: pf.to_text, c.INT4_T: pf.to_int4, c.INT8_T: pf.to_int8,
    c.NUMERIC_T: pf.to_numeric, c.FLOAT8_T: pf.to_float, c.JSONB_T: lambda v, f: pf.json_text(v),
}
_TIMED: Final = frozenset({c.TRACE, c.SPAN})  # kinds whose time column is their start
_ID_KEYED: Final = frozenset({c.CHAT_MESSAGE, c.DOCUMENT_EVENT})  # optional app-given uuid key
_HEX: Final = "0123456789abcdef"
_ID_SIZES: Final = {c.TRACE_ID_T: 32, c.SPAN_ID_T: 16}
_STARTED_F: Final = c.Field(c.STARTED_AT, c.TIME_T, required=True)
_WRITTEN_F: Final = c.Field(c.WRITTEN_AT, c.TIME_T, required=True)
_LATER_BOOKKEEPING: Final = tuple(sorted(c.BOOKKEEPING - {c.WRITTEN_AT}))  # popped with the metadata


def _converter(kind: str, field: c.Field) -> Callable[[Any, c.Field], Any]:
    if field.name == "status" and kind in c.STATUSES:
        return pf.to_enum(c.STATUSES[kind])
    return _CONVERTERS[field.type]


def _inline_check(kind: str, field: c.Field, v: str) -> str | None:
    """A condition true only for values the field's converter returns unchanged (None: none).

    Lower-case hex of the right size, not all zero, is what ``_w3c_id`` returns as is;
    ``str.strip`` with the hex digits leaves nothing exactly for such text.
    """
    t = field.type
    if t in _ID_SIZES:
        size = _ID_SIZES[t]
        return f"type({v}) is str and len({v}) == {size} and not {v}.strip(HEX) and {v} != {'0' * size!r}"
    if field.name == "status" and kind in c.STATUSES:
        return f"type({v}) is str and {v} in S_status"
    if t in (c.VARCHAR_T, c.TEXT_T):
        check = f"type({v}) is str and '\\x00' not in {v}"
        if field.max_len is not None:
            check += f" and len({v}) <= {field.max_len}"
        if field.required and t == c.VARCHAR_T:
            check += f" and {v} != ''"
        return check
    if t in (c.INT4_T, c.INT8_T):
        top = c.INT4_MAX if t == c.INT4_T else c.INT8_MAX
        return f"type({v}) is int and 0 <= {v} <= {top}"
    if t == c.FLOAT8_T:
        return f"type({v}) is float"
    return None


def _field_lines(kind: str, i: int, field: c.Field) -> list[str]:
    """Pop one field, check it inline, convert it if needed: a dead letter or a warning on failure."""
    v, name = f"v{i}", field.name
    check = _inline_check(kind, field, v)
    call = f"C{i}({v}, F{i})"
    convert = f"{v} = {call}"
    if field.type == c.NUMERIC_T:  # to_numeric's own first branch inline: a float needing no range check
        convert = f"{v} = Dec(repr({v})).quantize(Q6) if type({v}) is float and -CMAX <= {v} <= CMAX else {call}"
    lines = [f"    {v} = pop({name!r}, None)"]
    fatal = field.required or (name == "id" and kind in _ID_KEYED)
    if field.required:
        lines.append(f"    if {v} is None:")
        lines.append(f"        raise Invalid({name!r}, 'a value', None, missing=True)")
    guard = f"{v} is not None" if not field.required else ""
    if check is not None:
        guard = f"{guard} and not ({check})" if guard else f"not ({check})"
    if fatal:
        if guard:
            lines += [f"    if {guard}:", f"        {convert}"]
        else:
            lines.append(f"    {convert}")
        return lines
    return [
        *lines,
        f"    if {guard}:",
        "        try:",
        f"            {convert}",
        "        except Invalid:",
        "            if inv is None:",
        "                inv = {}",
        f"            inv[{name!r}] = {v}",
        f"            {v} = None",
    ]


def _default_lines(kind: str, var: dict[str, str]) -> list[str]:
    """Defaults the contract gives absent values (see agent.contract on statuses)."""
    if kind == c.SPAN:
        return [f"    if {var['status']} is None:", f"        {var['status']} = {c.COMPLETED!r}",
                f"    if {var['span_type']} is None:", f"        {var['span_type']} = {c.DEFAULT_SPAN_TYPE!r}"]
    if kind == c.TRACE:
        ended = f"{var['ended_at']} is not None or {var['duration_ms']} is not None"
        return [f"    if {var['status']} is None:",
                f"        {var['status']} = {c.COMPLETED!r} if {ended} else {c.IN_PROGRESS!r}"]
    return [f"    if {var['id']} is None:", "        " + f"{var['id']} = fallback(data, fallback_id)"]


def _source(kind: str) -> tuple[str, dict[str, Any]]:
    """The builder's source for ``kind`` and the names it uses (converters, fields, constants)."""
    fields = [f for f in c.FIELDS[kind] if f.name != c.METADATA]
    scope: dict[str, Any] = {
        "Invalid": pf.Invalid, "Row": Row, "new": tuple.__new__, "HEX": _HEX, "json_text": pf.json_text,
        "time_column": time_column, "fallback": fallback, "S_status": c.STATUSES.get(kind, frozenset()),
        "fromiso": datetime.fromisoformat, "UTC": UTC, "TMIN": pf.TIME_MIN, "TMAX": pf.TIME_MAX,
        "dumps": orjson.dumps, "EncodeError": orjson.JSONEncodeError, "NUL_ESC": b"\\u0000",
        "Dec": Decimal, "Q6": Decimal(1).scaleb(-c.NUMERIC_SCALE), "CMAX": pf.NUMERIC_FLOAT_BOUND,
    }
    var = {f.name: f"v{i}" for i, f in enumerate(fields)}
    body = ["def build(obj, data, fallback_id):", "    pop = obj.pop", "    inv = None"]
    timed = kind in _TIMED
    body.append(f"    started = pop({c.STARTED_AT!r}, None)" if timed else "    started = None")
    body += [f"    written = pop({c.WRITTEN_AT!r}, None)", f"    meta_in = pop({c.METADATA!r}, None)"]
    for i, f in enumerate(fields):
        scope[f"C{i}"], scope[f"F{i}"] = _converter(kind, f), f
        body += _field_lines(kind, i, f)
    body += _default_lines(kind, var)
    duration = var.get("duration_ms", "None")
    at = "started" if timed else "written"
    body += [  # the common case inline: RFC 3339 text (``time_column`` decides everything else)
        "    ts = None",
        f"    if type({at}) is str:",
        "        try:",
        f"            ts = fromiso({at})",
        "            if ts.tzinfo is not UTC:",
        "                ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)",
        "            if not TMIN < ts < TMAX:",
        "                ts = None",
        "        except (ValueError, OverflowError):",
        "            ts = None",
        "    if ts is None:",
        f"        ts = time_column({timed}, started, written, {duration})"]
    body += [f"    event = pop({c.EVENT!r}, None)", *(f"    pop({k!r}, None)" for k in _LATER_BOOKKEEPING),
             f"    if event is not None and event != {kind!r}:", f"        obj[{c.EVENT!r}] = event",
             "    if meta_in is not None:", "        if type(meta_in) is dict:", "            obj.update(meta_in)",
             "        else:", f"            obj[{c.METADATA!r}] = meta_in",
             "    if inv:", f"        obj[{c.INVALID_MARKER!r}] = inv",
             "    if obj:",  # one orjson.dumps in the common case; json_text repairs what it refuses
             "        try:",
             "            out = dumps(obj)",
             "        except (TypeError, EncodeError):",
             "            out = NUL_ESC",
             "        meta = out.decode() if NUL_ESC not in out else json_text(obj)",
             "    else:",
             "        meta = '{}'"]
    table = c.TABLE_OF_KIND[kind]
    values = [("ts" if col == c.TIME_COLUMN else "meta" if col == c.METADATA else var[col])
              for col in c.COLUMNS[table]]
    merge = "True" if kind == c.TRACE else f"{var['status']} == {c.IN_PROGRESS!r}" if kind == c.SPAN else "False"
    body.append(f"    return new(Row, ({table!r}, ({', '.join(values)},), {merge}, tuple(inv) if inv else ()))")
    return "\n".join(body) + "\n", scope


def _compile(kind: str) -> Builder:
    source, scope = _source(kind)
    exec(compile(source, f"<hypertail builder: {kind}>", "exec"), scope)  # source from the contract only
    builder: Builder = scope["build"]
    return builder


def fallback(data: bytes, fallback_id: FallbackId | None) -> uuid.UUID:
    """The caller's deterministic id, or a uuid5 of the line if there is no caller's (or it fails)."""
    if fallback_id is not None:
        try:
            value = fallback_id()
            if isinstance(value, uuid.UUID):
                return value
        except Exception:  # a broken callback must not lose the line
            pass
    return pf.line_uuid(data)


def time_column(timed: bool, started: Any, written: Any, duration_ms: int | None) -> datetime:
    """The row's time: a trace's or span's start; else when the line was written."""
    if timed and started is not None:
        return pf.to_time(started, _STARTED_F)
    if written is None:
        name = c.STARTED_AT if timed else c.WRITTEN_AT
        raise pf.Invalid(name, "a time (started_at or timestamp)" if timed else "a time", None, missing=True)
    at = pf.to_time(written, _WRITTEN_F)
    if timed and duration_ms:
        try:
            at -= timedelta(milliseconds=duration_ms)
        except OverflowError:
            at = pf.TIME_MIN
        if at <= pf.TIME_MIN:
            raise pf.Invalid(c.WRITTEN_AT, "a time later than duration_ms after year 1", written)
    return at


BUILDERS: Final[dict[str, Builder]] = {kind: _compile(kind) for kind in c.RECORD_KINDS}


def builder_source(kind: str) -> str:
    """The generated source of ``kind``'s builder (for readers and tests)."""
    return _source(kind)[0]
