"""Ordinary application log lines -> rows of ``observability.logs`` (issue 13).

A line without the discriminator key is not a record, but it is what a user reads beside a
trace's spans, so (per source, ``app_logs = "store"``) it becomes a row: its time, level,
logger, event, the ``trace_id``/``span_id`` that :func:`agent.emit.processors` adds to every
log line written inside a trace, and every other key in ``metadata``. The row id comes from
(agent, file identity, byte offset), exactly like a chat message without an id, so a line read
again after a crash is the same row and the exactly-once guarantee holds for logs too.

What may not lose a line: a bad ``trace_id``/``span_id`` leaves the column NULL and keeps the raw
value in ``metadata._invalid`` (as for a record's optional field); a level outside the known
names is never filtered out by ``app_logs_min_level``. A line without a readable ``timestamp``
becomes a dead letter that says so: it could not get a stable place in a time-partitioned table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

from agent import contract as c
from agent import parse_fields as pf
from agent.model import DeadLetter, Row

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


def log_row(fields: dict[str, Any], *, log_id: uuid.UUID, source: str) -> Row | DeadLetter:
    """The ``logs`` row of one decoded log line (``fields`` is consumed), or why there is none."""
    try:
        at = pf.to_time(fields.pop(c.WRITTEN_AT, None), _TIME_F)
    except pf.Invalid as exc:
        return DeadLetter(f"app log line: {exc}", exc.field)
    invalid: dict[str, Any] = {}
    ids: list[str | None] = []
    for f in (_TRACE_F, _SPAN_F):
        raw = fields.pop(f.name, None)
        value = None
        if raw is not None:
            try:
                value = pf.trace_id(raw, f) if f is _TRACE_F else pf.span_id(raw, f)
            except pf.Invalid:
                invalid[f.name] = raw
        ids.append(value)
    level = _text(fields.pop("level", None), c.LOG_LEVEL_MAX)
    logger = _text(fields.pop("logger", None), c.LOGGER_MAX)
    event = _text(fields.pop(c.EVENT, None), 1 << 20)
    if invalid:
        fields[c.INVALID_MARKER] = invalid
    meta = pf.json_text(fields) if fields else "{}"
    values = (log_id, at, ids[0], ids[1], level.lower() if level else None, logger, event,
              source[: c.SOURCE_MAX], meta)
    return Row(c.LOGS, values, False, tuple(invalid))
