"""Ordinary application log lines -> rows of ``observability.logs`` (issue 13).

A line without the discriminator key is not a record, but it is what a user reads beside a
trace's spans, so (per source, ``app_logs = "store"``) it becomes a row: its time, level,
logger, event, the ``trace_id``/``span_id`` that :func:`agent.emit.processors` adds to every
log line written inside a trace, and every other key in ``metadata``. The row id comes from
(agent, file identity, byte offset), exactly like a chat message without an id, so a line read
again after a crash is the same row and the exactly-once guarantee holds for logs too.

What may not lose a line: a bad ``trace_id``/``span_id`` leaves the column NULL and keeps the raw
value in ``metadata._invalid`` (as for a record's optional field); a level outside the known
names is never filtered out by ``app_logs_min_level``; and a line without a readable
``timestamp`` is stored at the time the agent read it, marked ``metadata._time_from_agent`` (and
the unreadable value kept in ``metadata._invalid``). That time is not reproducible, and need not
be: exactly-once comes from the checkpoint that commits with the row, so a line is only ever
read again when its row was never committed.

Two ways in, one row: :func:`log_row` takes what ``orjson.loads`` gave (the tolerant path), and
:class:`LogDecoder` reads the line with a typed msgspec decoder (the common path, learning the
app's keys as :mod:`agent.parse.typed` does for records); both end in :func:`row_of`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import orjson
from msgspec.structs import astuple

from agent import contract as c
from agent.model import AppLog, Row
from agent.parse import fields as pf
from agent.parse.typed import learnable, learned_values

_TRACE_F: Final = c.Field("trace_id", c.TRACE_ID_T, 32)
_SPAN_F: Final = c.Field("span_id", c.SPAN_ID_T, 16)
_TIME_F: Final = c.Field(c.WRITTEN_AT, c.TIME_T, required=True)
_RANK: Final[dict[str, int]] = {name: i for i, name in enumerate(c.LOG_LEVELS)}
# The keys a log line's columns come from, in the order row_of takes them.
LOG_KEYS: Final = (c.WRITTEN_AT, "trace_id", "span_id", "level", "logger", c.EVENT)
_EVENT_MAX: Final = 1 << 20
_fromiso: Final = datetime.fromisoformat
_new: Final = tuple.__new__
MAX_LEARNED: Final = 32
_UNSET: Final = msgspec.UNSET


def level_rank(level: str | None) -> int | None:
    """The place of ``level`` among :data:`contract.LOG_LEVELS` (aliases folded), or None if unknown."""
    if level is None:
        return None
    low = level.lower()
    return _RANK.get(c.LOG_LEVEL_ALIASES.get(low, low))


@dataclass(frozen=True, slots=True)
class AppLogPolicy:
    """What one source does with its ordinary log lines."""

    store: bool = True
    min_level: str | None = None

    def keeps(self, level: str | None) -> bool:
        """Whether a line of ``level`` is stored: unknown or absent levels always are."""
        if not self.store:
            return False
        if self.min_level is None:
            return True
        rank = level_rank(level)
        floor = level_rank(self.min_level)
        return rank is None or floor is None or rank >= floor


def _no_nul(text: str) -> str:
    """Decoded JSON text holds no lone surrogate (orjson and msgspec refuse them): only NUL to repair."""
    return text.replace("\x00", c.NUL_REPLACEMENT) if "\x00" in text else text


def level_of(value: Any) -> str | None:
    """The level a line's ``level`` names (what ``app_logs_min_level`` compares), or None."""
    return _no_nul(value[: c.LOG_LEVEL_MAX]) if type(value) is str else None


def _text(value: Any, top: int, json: Callable[[Any], str]) -> str | None:
    if value is None:
        return None
    return _no_nul(value[:top]) if type(value) is str else json(value)[:top]


def _id(raw: Any, f: c.Field, invalid: dict[str, Any]) -> str | None:
    """A W3C id, or None with the raw value kept (an app's own id scheme is not a reason to drop)."""
    if raw is None:
        return None
    text = c.w3c_id(raw, f.max_len or 0)
    if text is None:
        invalid[f.name] = raw
    return text


def _now() -> datetime:
    return datetime.now(UTC)


def _strict_json(value: Any) -> str:
    """One ``orjson.dumps``, raising (TypeError) on what only the tolerant path's repair would
    change: integers beyond 64 bits, nesting past 254 (NUL never comes: Parser.typed)."""
    return orjson.dumps(value).decode()


def row_of(values: tuple[Any, ...], rest: dict[str, Any], *, log_id: str, source: str,
           clock: Callable[[], datetime] = _now, json: Callable[[Any], str] = pf.json_text) -> Row:
    """The ``logs`` row of one line: ``values`` holds its :data:`LOG_KEYS` (``None`` if absent),
    ``rest`` every other key (it is consumed). ``json`` writes JSON values as text."""
    raw_time, raw_trace, raw_span, level, logger, event = values
    invalid: dict[str, Any] = {}
    at = _time(raw_time)
    if at is None:
        at = clock()
        rest[c.LOG_TIME_FROM_AGENT] = True
        if raw_time is not None:
            invalid[c.WRITTEN_AT] = raw_time
    trace = None if raw_trace is None else _id(raw_trace, _TRACE_F, invalid)
    span = None if raw_span is None else _id(raw_span, _SPAN_F, invalid)
    if level is not None:
        level = _text(level, c.LOG_LEVEL_MAX, json).lower()  # type: ignore[union-attr]
    if invalid:
        rest[c.INVALID_MARKER] = invalid
    meta = json(rest) if rest else "{}"
    columns = (log_id, at, trace, span, level or None, _text(logger, c.LOGGER_MAX, json),
               _text(event, _EVENT_MAX, json), source[: c.SOURCE_MAX], meta)
    return _new(Row, (c.LOGS, columns, False, tuple(invalid)))


def _time(raw: Any) -> datetime | None:
    """:func:`fields.to_time` of a log line's time (RFC 3339 text inline), ``None`` if unreadable."""
    if type(raw) is str:
        try:
            at = _fromiso(raw)
            if at.tzinfo is not UTC:
                at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        except (ValueError, OverflowError):
            return None
        return at if pf.TIME_MIN < at < pf.TIME_MAX else None
    try:
        return pf.to_time(raw, _TIME_F)
    except pf.Invalid:
        return None


def log_row(fields: dict[str, Any], *, log_id: str, source: str, clock: Callable[[], datetime] = _now) -> Row:
    """The ``logs`` row of one decoded log line (``fields`` is consumed). It always is one:
    nothing about an ordinary log line is required."""
    pop = fields.pop
    values = tuple(pop(k, None) for k in LOG_KEYS)
    return row_of(values, fields, log_id=log_id, source=source, clock=clock)


class LogDecoder:
    """The typed decoder of one source's log lines: the :data:`LOG_KEYS`, the source's
    discriminator (present means the line is not a log line), and the app keys it has learned."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.learned: tuple[str, ...] = ()
        self._decode: Any = self._decoder() if key not in LOG_KEYS else None

    def _decoder(self) -> Any:
        names = (*LOG_KEYS, self.key, *self.learned)
        fields = [(f"f{i}", Any, None if i < len(LOG_KEYS) else _UNSET) for i in range(len(names))]
        struct = msgspec.defstruct("log_line", fields, rename={f"f{i}": n for i, n in enumerate(names)},
                                   forbid_unknown_fields=True, gc=False)
        return msgspec.json.Decoder(struct).decode

    def result(self, data: bytes, policy: AppLogPolicy, log_id: Callable[[], str],
               source: str) -> Row | AppLog | None:
        """The line's logs row (or the AppLog the policy only counts); ``None``: the tolerant path decides."""
        if self._decode is None:
            return None
        try:
            values = astuple(self._decode(data))
        except (msgspec.MsgspecError, RecursionError):
            return None
        n = len(LOG_KEYS)
        if values[n] is not _UNSET:  # the discriminator: a record, or a dead letter
            return None
        level = level_of(values[3])
        if not policy.keeps(level):
            return AppLog(level)
        learned = self.learned
        if len(learned) == 1:
            rest = {} if values[-1] is _UNSET else {learned[0]: values[-1]}
        else:
            rest = learned_values(learned, values) if learned else {}
        try:
            return row_of(values[:n], rest, log_id=log_id(), source=source, json=_strict_json)
        except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits, nesting past 254, NUL
            return None

    def learn(self, keys: Iterable[str]) -> None:
        """Keys the tolerant path met in a log line: unknown ones become fields, within the cap."""
        if self._decode is None:
            return
        known = {*LOG_KEYS, self.key, *self.learned}
        new = tuple(k for k in keys if k not in known and learnable(k))
        if not new or len(self.learned) + len(new) > MAX_LEARNED:
            return
        before = self.learned
        self.learned = before + new
        try:
            self._decode = self._decoder()
        except (TypeError, ValueError):
            self.learned = before
