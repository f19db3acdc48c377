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
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from agent import contract as c
from agent.model import Row
from agent.parse import fields as pf

_TRACE_F: Final = c.Field("trace_id", c.TRACE_ID_T, 32)
_SPAN_F: Final = c.Field("span_id", c.SPAN_ID_T, 16)
_TIME_F: Final = c.Field(c.WRITTEN_AT, c.TIME_T, required=True)
_RANK: Final[dict[str, int]] = {name: i for i, name in enumerate(c.LOG_LEVELS)}


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


def _text(value: Any, top: int) -> str | None:
    if value is None:
        return None
    text = pf.clean_str(value if type(value) is str else pf.json_text(value))
    return text[:top]


def _id(raw: Any, f: c.Field, invalid: dict[str, Any]) -> str | None:
    """A W3C id, or None with the raw value kept (an app's own id scheme is not a reason to drop)."""
    if raw is None:
        return None
    try:
        return pf.trace_id(raw, f) if f is _TRACE_F else pf.span_id(raw, f)
    except pf.Invalid:
        invalid[f.name] = raw
        return None


def _now() -> datetime:
    return datetime.now(UTC)


def log_row(fields: dict[str, Any], *, log_id: uuid.UUID, source: str,
            clock: Callable[[], datetime] = _now) -> Row:
    """The ``logs`` row of one decoded log line (``fields`` is consumed). It always is one:
    nothing about an ordinary log line is required."""
    pop = fields.pop
    invalid: dict[str, Any] = {}
    raw_time = pop(c.WRITTEN_AT, None)
    try:
        at = pf.to_time(raw_time, _TIME_F)
    except pf.Invalid:
        at = clock()
        fields[c.LOG_TIME_FROM_AGENT] = True
        if raw_time is not None:
            invalid[c.WRITTEN_AT] = raw_time
    trace = _id(pop("trace_id", None), _TRACE_F, invalid)
    span = _id(pop("span_id", None), _SPAN_F, invalid)
    level = _text(pop("level", None), c.LOG_LEVEL_MAX)
    logger = _text(pop("logger", None), c.LOGGER_MAX)
    event = _text(pop(c.EVENT, None), 1 << 20)
    if invalid:
        fields[c.INVALID_MARKER] = invalid
    meta = pf.json_text(fields) if fields else "{}"
    values = (log_id, at, trace, span, level.lower() if level else None, logger, event, source[: c.SOURCE_MAX], meta)
    return Row(c.LOGS, values, False, tuple(invalid))
