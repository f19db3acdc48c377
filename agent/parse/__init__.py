"""Bytes -> one :class:`Row`, :class:`DeadLetter` or :class:`AppLog`; pure, and it never raises.

The contract lives in :mod:`agent.contract`, the per-field conversions in
:mod:`agent.parse.fields`, and the row of each record kind is built by the one builder
:mod:`agent.parse.build` generates for it from the contract. This module decodes the line,
tells a record from an ordinary log line and names what is wrong with a line that is neither.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from agent import contract as c
from agent.model import AppLog, DeadLetter, Row
from agent.parse import fields as pf
from agent.parse.build import BUILDERS, FallbackId

__all__ = ["parse"]

_BOM: Final = b"\xef\xbb\xbf"
_KINDS_TEXT: Final = ", ".join(c.RECORD_KINDS)
_MISSING: Final = object()
_loads: Final = orjson.loads
_builder: Final = BUILDERS.get


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
        if type(obj) is not dict:
            return DeadLetter(f"not a JSON object: got {_json_kind(obj)}")
        kind = obj.pop(record_type_key, _MISSING)
        build = _builder(kind) if type(kind) is str else None
        if build is None:
            return _not_a_record(obj, kind, record_type_key)
        try:
            return build(obj, data, fallback_id)
        except pf.Invalid as exc:
            return DeadLetter(str(exc), exc.field)
    except Exception as exc:  # the promise is "never raises": an internal bug is a dead letter
        return DeadLetter(f"internal parser error: {type(exc).__name__}")


def _not_a_record(obj: dict[str, Any], kind: Any, key: str) -> DeadLetter | AppLog:
    """A line without the discriminator is an ordinary log line; one with an unknown kind is not."""
    if kind is _MISSING:
        level = obj.get("level")
        return AppLog(pf.clean_str(level[:32]) if type(level) is str else None, obj)
    return DeadLetter(f"{key}: expected one of {_KINDS_TEXT}, got {pf.shorten(kind)}", key)


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
