"""The parse step as the runner drives it: one tailed :class:`~agent.model.Line` to one result.

:func:`agent.parse.parse` turns bytes into a row, an app log or a dead letter; this module adds
what only the runner knows: the line's place in its file (for the deterministic row id of a
record the app gave none), its source's discriminator key and app-log policy, and the lines the
tailer could not hand over whole (oversize, NUL runs).
"""

from __future__ import annotations

import re
import uuid

from agent import contract
from agent.config import Settings
from agent.model import NUL_RUN, AppLog, DeadLetter, Line, ParseResult
from agent.ops.metrics import Metrics
from agent.parse import parse
from agent.parse.applogs import AppLogPolicy, log_row

_STORE_ALL = AppLogPolicy()
ROW_ID_NAMESPACE = uuid.UUID("6f1c4a2e-52b8-4d7e-9a51-2f0c7d1e8b33")


def row_id(agent_id: str, file_key: str, offset: int) -> uuid.UUID:
    """Deterministic id for a record the app gave none: a replayed line gets the same id."""
    return uuid.uuid5(ROW_ID_NAMESPACE, f"{agent_id}\x1f{file_key}\x1f{offset}")


def reason_class(dl: DeadLetter) -> str:
    """A low-cardinality metric label for a dead letter: the field at fault, or the reason's kind."""
    if dl.field:
        return f"field:{dl.field}"
    head = dl.reason.split(":", 1)[0]
    return re.sub(r"(?<![\w-])\d+", "N", head)[:60] or "unknown"


class LineParser:
    """Per-source parse settings, read once from the config, and the parse of one line."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._keys = {s.name: s.record_type_key for s in settings.sources}
        self._app_logs = {s.name: AppLogPolicy(s.app_logs == contract.APP_LOGS_STORE, s.app_logs_min_level)
                          for s in settings.sources}

    def parse_line(self, line: Line) -> ParseResult:
        """The one result of ``line``: a row, a dead letter, or an app log (a ``logs`` row where
        its source stores them). Records without an id get one derived from the line's place."""
        if line.oversize:
            return self._not_whole(line)
        agent_id, key, start = self.settings.agent.id, line.file.identity.key, line.start
        result = parse(
            line.data,
            record_type_key=self._keys.get(line.file.source, contract.DEFAULT_RECORD_TYPE_KEY),
            fallback_id=lambda: row_id(agent_id, key, start),
        )
        if type(result) is AppLog:
            return self._app_log(result, line)
        return result

    def _not_whole(self, line: Line) -> DeadLetter:
        """The dead letter of what the tailer could not hand over whole: a NUL run or an oversize line."""
        size = line.end - line.start
        if line.data == NUL_RUN:
            self.metrics.nul_bytes.inc(size)
            return DeadLetter(
                reason=f"run of {size} NUL bytes at offset {line.start} "
                "(a hole left by a writer without O_APPEND after a truncation); skipped",
                field=None,
            )
        return DeadLetter(
            reason=f"line is {size} bytes, longer than tail.max_line_bytes "
            f"({self.settings.tail.max_line_bytes}); its first bytes are kept",
            field=None,
        )

    def _app_log(self, result: AppLog, line: Line) -> ParseResult:
        """An ordinary log line becomes a ``logs`` row where its source stores them (the row id
        is the line's place, so a replayed line is the same row); else it is only counted."""
        source = line.file.source
        policy = self._app_logs.get(source, _STORE_ALL)
        if result.fields is None or not policy.keeps(result.level):
            return result
        log_id = row_id(self.settings.agent.id, line.file.identity.key, line.start)
        return log_row(result.fields, log_id=log_id, source=source)
