"""Bytes -> one :class:`Row`, :class:`DeadLetter` or :class:`AppLog` (an OTLP line: :class:`Rows`);
pure, and it never raises.

Two paths, one result. The typed path (:mod:`agent.parse.typed` for records,
:class:`~agent.parse.applogs.LogDecoder` for ordinary log lines) decodes and checks a common line
in C; whatever it does not take as it is goes to the tolerant path: ``orjson.loads``, then the
contract applied field by field (:mod:`agent.parse.build`, converters in
:mod:`agent.parse.fields`), which also names what is wrong with a line that is no row. The typed
path takes a line only when its row is the tolerant path's, so which path ran never shows in
the result (tests hold the two, and a reference, equal on generated lines of every kind).

A :class:`Parser` is one source's parse: its format, discriminator key, what it does with ordinary
log lines, and the app keys its typed decoders have learned. A source of ``format = "otlp_json"``
reads OTLP JSON Lines (:mod:`agent.parse.otlp`: one line, the rows of all its spans, log records or
metric data points) and any other line as the structlog format does. :func:`parse` is the same for one line
with a shared parser per discriminator key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import orjson

from agent import contract as c
from agent.model import AppLog, DeadLetter, Row, Rows
from agent.parse import fields as pf
from agent.parse.applogs import AppLogPolicy, LogDecoder, level_of, log_row
from agent.parse.build import PLANS, FallbackId, build_row, fallback
from agent.parse.otlp import OtlpDecoder
from agent.parse.typed import REFUSED, RecordDecoder

__all__ = ["FallbackId", "Parser", "parse"]

Result = Row | DeadLetter | AppLog | Rows
STRUCTLOG: Final = "structlog"
OTLP_JSON: Final = "otlp_json"
FORMATS: Final = (STRUCTLOG, OTLP_JSON)
_BOM: Final = b"\xef\xbb\xbf"
_KINDS_TEXT: Final = ", ".join(c.RECORD_KINDS)
_MISSING: Final = object()
_BACKSLASH: Final = ord("\\")
_NUL_ESCAPE: Final = b"\\u0000"
_loads: Final = orjson.loads
_MAX_SHARED: Final = 64  # parsers parse() keeps, one per discriminator key


class Parser:
    """One source's parse of single lines.

    ``app_logs`` is the source's policy for ordinary log lines: a line it stores becomes its
    ``logs`` row (``fallback_id`` gives its id), one it does not is an :class:`AppLog` that is only
    counted. Without a policy every ordinary log line is an :class:`AppLog` carrying its decoded
    fields (for :func:`~agent.parse.applogs.log_row`).
    """

    def __init__(self, record_type_key: str = c.DEFAULT_RECORD_TYPE_KEY, *,
                 app_logs: AppLogPolicy | None = None, source: str = "", format: str = STRUCTLOG) -> None:
        self.key = record_type_key
        self.app_logs = app_logs
        self.source = source
        self._otlp = OtlpDecoder(source, app_logs) if format == OTLP_JSON else None
        self._records = _typed(RecordDecoder, record_type_key)
        self._logs = _typed(LogDecoder, record_type_key) if app_logs is not None else None
        self._key_bytes = orjson.dumps(record_type_key)

    def parse(self, data: bytes, fallback_id: FallbackId | None = None) -> Result:
        """Turn one line (without its newline) into exactly one row, dead letter or app log.

        ``fallback_id`` supplies the deterministic id of a record without an id of its own and of
        a stored log line (the caller derives it from agent, file identity and offset); without it
        the id is a uuid5 of the line's bytes. Any unexpected failure becomes a dead letter too.
        An OTLP line (``format = "otlp_json"``) becomes :class:`Rows`, its records' ids derived
        from the line's.
        """
        try:
            if self._otlp is not None:
                rows = self._otlp.parse(data, lambda: fallback(data, fallback_id))
                if rows is not None:
                    return rows
            result = self.typed(data, fallback_id)
            return self.tolerant(data, fallback_id) if result is None else result
        except Exception as exc:  # the promise is "never raises": an internal bug is a dead letter
            return DeadLetter(f"internal parser error: {type(exc).__name__}")

    def typed(self, data: bytes, fallback_id: FallbackId | None = None) -> Result | None:
        """The line's result from the typed path, or ``None`` when the tolerant path must decide
        (a line that escapes NUL always does)."""
        if type(data) is not bytes or (_BACKSLASH in data and _NUL_ESCAPE in data):
            return None
        if self._key_bytes in data:
            decode = None if self._records is None else self._records.decode
            if decode is None:
                return None
            try:
                s = decode(data)
                return s.row(s, data, fallback_id)  # type: ignore[no-any-return]
            except REFUSED:
                return None
        if self._logs is not None and self.app_logs is not None:
            return self._logs.result(data, self.app_logs, lambda: fallback(data, fallback_id), self.source)
        return None

    def tolerant(self, data: bytes, fallback_id: FallbackId | None = None) -> Result:
        """The line's result from the tolerant path (which also teaches the typed path its app keys)."""
        try:
            obj = _loads(data)
        except orjson.JSONDecodeError:
            return _undecodable(data)
        if type(obj) is not dict:
            return DeadLetter(f"not a JSON object: got {_json_kind(obj)}")
        kind = obj.pop(self.key, _MISSING)
        plan = PLANS.get(kind) if type(kind) is str else None
        if plan is None:
            return self._not_a_record(obj, kind, data, fallback_id)
        if self._records is not None:
            self._records.learn(plan.kind, obj)
        try:
            return build_row(plan, obj, data, fallback_id)
        except pf.Invalid as exc:
            return DeadLetter(str(exc), exc.field)

    def _not_a_record(self, obj: dict[str, Any], kind: Any, data: bytes,
                      fallback_id: FallbackId | None) -> Result:
        """A line without the discriminator is an ordinary log line; one with an unknown kind is not."""
        if kind is not _MISSING:
            return DeadLetter(f"{self.key}: expected one of {_KINDS_TEXT}, got {pf.shorten(kind)}", self.key)
        level = level_of(obj.get("level"))
        if self.app_logs is None:
            return AppLog(level, obj)
        if not self.app_logs.keeps(level):
            return AppLog(level)
        if self._logs is not None:
            self._logs.learn(obj)
        return log_row(obj, log_id=fallback(data, fallback_id), source=self.source)


D = TypeVar("D")


def _typed(make: Callable[[str], D], key: str) -> D | None:
    """A typed decoder for ``key``, or ``None`` for a key msgspec cannot name (the tolerant path
    then parses every line of the source)."""
    try:
        return make(key)
    except (TypeError, ValueError):
        return None


_SHARED: Final[dict[str, Parser]] = {}


def parse(data: bytes, *, record_type_key: str = c.DEFAULT_RECORD_TYPE_KEY,
          fallback_id: FallbackId | None = None) -> Result:
    """:meth:`Parser.parse` of one line, with a parser kept per discriminator key (ordinary log
    lines are :class:`AppLog` s with their fields)."""
    parser = _SHARED.get(record_type_key)
    if parser is None:
        parser = Parser(record_type_key)
        if len(_SHARED) < _MAX_SHARED:
            _SHARED[record_type_key] = parser
    return parser.parse(data, fallback_id)


def _undecodable(data: Any) -> DeadLetter:
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
