"""The parse step as the runner drives it: one tailed :class:`~agent.model.Block` to its items.

An :class:`agent.parse.Parser` per source turns bytes into a row, an app log or a dead letter (an
OTLP line into its rows), with the source's format, discriminator key and app-log policy (its
typed decoders learn the source's app keys); this module adds what only the runner knows: the
line's place in its file (for the deterministic id of a record the app gave none, and of a stored
log line) and the lines the tailer could not hand over whole (oversize, NUL runs). What is the
same for every line of a block (its source's parser, the id prefix of its file) is looked up once
per block.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from functools import partial

from agent import contract
from agent.config import Settings
from agent.model import NUL_RUN, Block, DeadLetter, Item, Line, ParseResult
from agent.ops.metrics import Metrics
from agent.parse import Parser
from agent.parse.applogs import AppLogPolicy
from agent.parse.fields import uuid5_text

ROW_ID_NAMESPACE = uuid.UUID("6f1c4a2e-52b8-4d7e-9a51-2f0c7d1e8b33")
_new_item = partial(tuple.__new__, Item)


class RowIds:
    """Deterministic ids for the lines of one file: a replayed line gets the same id.

    It is the text of ``uuid5(ROW_ID_NAMESPACE, f"{agent_id}\\x1f{file_key}\\x1f{offset}")``
    (row values carry uuids as text), with the SHA-1 state of everything before the offset
    computed once per file instead of once per line, and the text made from the digest directly.
    """

    __slots__ = ("_prefix",)

    def __init__(self, agent_id: str, file_key: str) -> None:
        self._prefix = hashlib.sha1(ROW_ID_NAMESPACE.bytes, usedforsecurity=False)
        self._prefix.update(f"{agent_id}\x1f{file_key}\x1f".encode())

    def __call__(self, offset: int) -> str:
        h = self._prefix.copy()
        h.update(b"%d" % offset)
        return uuid5_text(h.digest())


def reason_class(dl: DeadLetter) -> str:
    """A low-cardinality metric label for a dead letter: the field at fault, or the reason's kind."""
    if dl.field:
        return f"field:{dl.field}"
    head = dl.reason.split(":", 1)[0]
    return re.sub(r"(?<![\w-])\d+", "N", head)[:60] or "unknown"


class LineParser:
    """Per-source parse settings, read once from the config, and the parse of one block."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._parsers = {
            s.name: Parser(s.record_type_key, source=s.name, format=s.format,
                           app_logs=AppLogPolicy(s.app_logs == contract.APP_LOGS_STORE, s.app_logs_min_level))
            for s in settings.sources}

    def parse_block(self, block: Block) -> list[Item]:
        """Each line of ``block`` with its one result: a row, a dead letter, or an app log (a
        ``logs`` row where its source stores them); an OTLP line's rows. Records without an id get
        one derived from the line's place."""
        lines = block.lines()
        if block.oversize:
            return [Item(line, self._not_whole(line)) for line in lines]
        source = block.file.source
        parser = self._parsers.get(source)
        if parser is None:  # a source the settings do not name: its defaults (and its own parser)
            parser = self._parsers[source] = Parser(source=source, app_logs=AppLogPolicy())
        ids = RowIds(self.settings.agent.id, block.file.identity.key)
        parse = parser.parse
        # bounds has one entry more than data: each line's start
        results: list[ParseResult] = [parse(data, partial(ids, start))
                                      for data, start in zip(block.data, block.bounds, strict=False)]
        return list(map(_new_item, zip(lines, results, strict=True)))

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
