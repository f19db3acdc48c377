"""The contract applied field by field, as the parser did before its builders were generated.

A plain loop over the contract's field table, with every present value passed through its
converter: slow, but obviously the contract. Tests hold both parse paths (the typed decoder of
:mod:`agent.parse.typed` and the tolerant :func:`agent.parse.build.build_row`) to it value for value
(type and ``repr``), on every kind and shape. It shares the field-to-converter table
(:func:`agent.parse.fieldtypes.converter`): the converters are not under test here, the code
around them is.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any, Final

import orjson

from agent import contract as c
from agent.model import DeadLetter, Row
from agent.parse import fields as pf
from agent.parse.build import FallbackId, time_column
from agent.parse.build import fallback as _fallback
from agent.parse.fieldtypes import converter as _converter

Converter = Callable[[Any, c.Field], Any]

_TIMED: Final = frozenset({c.TRACE, c.SPAN})
# kinds whose optional app-given ``id`` is part of the row's key: an invalid one is a dead letter
_ID_KEYED: Final = frozenset(k for k in c.RECORD_KINDS if "id" in c.KEY_COLUMNS[c.TABLE_OF_KIND[k]])


_SPECS: Final[dict[str, tuple[tuple[str, bool, c.Field, Converter], ...]]] = {
    kind: tuple((f.name, f.required, f, _converter(kind, f)) for f in fields if f.name != c.METADATA)
    for kind, fields in c.FIELDS.items()
}
_TABLES: Final[dict[str, tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]]] = {
    kind: (table, itemgetter(*c.COLUMNS[table])) for kind, table in c.TABLE_OF_KIND.items()
}


def reference(data: bytes, key: str = c.DEFAULT_RECORD_TYPE_KEY, fallback_id: FallbackId | None = None) -> Any:
    """The row (or dead letter) of a record line with a valid kind; ``None`` for anything else."""
    obj = orjson.loads(data)
    if type(obj) is not dict or obj.get(key) not in c.TABLE_OF_KIND:
        return None
    kind = obj.pop(key)
    try:
        return _build(kind, obj, data, fallback_id)
    except pf.Invalid as exc:
        return DeadLetter(str(exc), exc.field)


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
    row[c.TIME_COLUMN] = time_column(kind in _TIMED, started, written, row.get("duration_ms"))
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


_FIXUPS: Final = {c.TRACE: _fix_trace, c.SPAN: _fix_span, c.CHAT_MESSAGE: _fix_id, c.DOCUMENT_EVENT: _fix_id,
                  c.METRIC: _fix_id, c.WORKFLOW_TRANSITION: _fix_id}


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
