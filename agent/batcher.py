"""Per-flush batches of parsed lines, and what one commit writes.

Pure logic, no I/O. A batch keeps the parsed :class:`~agent.model.Item` s in arrival order: lines
of one file arrive in file order, so any prefix of a batch holds a prefix of every file's lines.
That is what lets the sink split a batch the database refused (to find poison rows) and still
commit each part with a correct checkpoint, and lets it drop the lines another agent already
committed. A batch grows by whole blocks (:meth:`Batcher.add_block`), so it ends where a block
ends, and the block's tail hash is at hand for the file's checkpoint (:attr:`Batch.tails`).

**One rule for a repeated key**, the same within a batch, across batches and across restarts:

* ``traces`` and ``spans`` *merge*: records of one key (a trace's start and end, a span's start
  record, the same span written twice) become one row, each later record's non-null values
  winning, a final status never replaced by ``in_progress``, metadata objects combined
  (:func:`merge_values`; the sink's ``ON CONFLICT DO UPDATE`` applies the same rule to a row
  already stored).
* every other table keeps the *first* line of a key; a later line with the same key is dropped
  (``ON CONFLICT DO NOTHING``, within one statement as across statements).

A line that holds many records (an OTLP batch, :class:`~agent.model.Rows`) counts as its records
in the line's order, each under the same rule: an OTLP span exported twice is one row.

Within a batch only records that must merge are keyed in memory (:func:`build_tables`); plain
rows are grouped per table in arrival order and a repeated key is left to the database, which
finds it for free while checking the key anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any

import orjson

from agent import contract
from agent.model import AppLog, Block, DeadLetter, Item, Row, Rows

# Columns that merge with "the final state wins" rules instead of "newest non-null wins".
_STATUS = "status"
_METADATA = "metadata"
# Index of the key columns and of special columns in each table's value tuples.
KEY_INDEX: dict[str, tuple[int, ...]] = {
    t: tuple(contract.COLUMNS[t].index(c) for c in contract.KEY_COLUMNS[t]) for t in contract.COLUMNS
}
# The key of a row's values in one C call (every key has two columns, so itemgetter gives a tuple).
assert all(len(ix) == 2 for ix in KEY_INDEX.values())
_KEY_OF: dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {t: itemgetter(*ix) for t, ix in KEY_INDEX.items()}
_STATUS_INDEX = {t: cols.index(_STATUS) for t, cols in contract.COLUMNS.items() if _STATUS in cols}
_METADATA_INDEX = {t: cols.index(_METADATA) for t, cols in contract.COLUMNS.items()}
# Per-item overhead counted against the memory budget, on top of the line's bytes: measured with
# tracemalloc at ~840 bytes for a parsed span line (Line, Item, Row and its values). Counted once
# more for every row of a line that holds many (an OTLP batch).
ITEM_OVERHEAD = 1024

Tails = dict[str, tuple[int, str]]
"""File key -> (end offset of the file's last block in a batch, that block's tail hash)."""


@dataclass(slots=True)
class Batch:
    """Items in arrival order, the bytes they hold (for the memory budget), and each file's tail.

    The offsets a batch commits are derived by the sink from its items, after it has dropped the
    lines another agent already committed. ``tails`` gives the tail hash at the end of each
    file's last block. ``tables`` is what the items write, built when the batch is taken: by the
    reader, while the committer (the pipe's one serial path, which the database waits on) is busy
    with the batch before; the sink uses it when it drops no line.
    """

    items: list[Item] = field(default_factory=list)
    nbytes: int = 0
    created: float = field(default_factory=time.monotonic)
    tails: Tails = field(default_factory=dict)
    tables: Tables | None = None

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When a batch is ready: enough rows, enough bytes, or old enough."""

    max_rows: int
    max_bytes: int
    max_age_s: float


class Batcher:
    """Collects parsed blocks into the current batch and says when it should be flushed."""

    def __init__(self, policy: FlushPolicy) -> None:
        self.policy = policy
        self.current = Batch()

    def add_block(self, block: Block, items: list[Item]) -> None:
        """Add ``block``'s parsed lines; the caller flushes first when they would not fit
        (:meth:`fits`), so a batch never holds more than ``max_rows`` lines."""
        batch = self.current
        if not batch.items:
            batch.created = time.monotonic()
        batch.items += items
        batch.nbytes += sum(map(len, block.data)) + ITEM_OVERHEAD * (len(items) + _extra_rows(items))
        batch.tails[block.file.identity.key] = (block.end, block.tail)

    def fits(self, lines: int) -> bool:
        """Whether ``lines`` more lines fit the current batch (an empty batch takes anything)."""
        n = len(self.current.items)
        return n == 0 or n + lines <= self.policy.max_rows

    def full(self) -> bool:
        b = self.current
        return len(b.items) >= self.policy.max_rows or b.nbytes >= self.policy.max_bytes

    def due(self, now: float | None = None) -> bool:
        """True when the current batch is non-empty and full or older than the age limit."""
        if not self.current.items:
            return False
        now = time.monotonic() if now is None else now
        return self.full() or now - self.current.created >= self.policy.max_age_s

    def take(self) -> Batch:
        """The current batch, with its tables built; a new one becomes current."""
        batch, self.current = self.current, Batch()
        batch.tables = build_tables(batch.items)
        return batch


def _extra_rows(items: list[Item]) -> int:
    """The rows of the lines that hold many (an OTLP line: up to hundreds, each costing about what a
    line's row does)."""
    n = 0
    for r in map(_result_of, items):
        if type(r) is Rows:
            n += len(r.rows)
    return n


_result_of = attrgetter("result")


@dataclass(slots=True)
class Tables:
    """What one commit writes: plain rows to COPY, merged rows to upsert, and dead letters."""

    copy: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    merge: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    dead: list[tuple[Item, DeadLetter]] = field(default_factory=list)
    app_logs: int = 0
    warnings: int = 0
    rows: int = 0


def build_tables(items: Sequence[Item]) -> Tables:
    """Group items by table in arrival order; merge the records of a key that must merge.

    A plain row (COPY) whose key also has merge records in the batch joins them, at its place in
    arrival order, so one statement never touches a key twice and the merge sees the records in
    the order they were written. The rows of a :class:`~agent.model.Rows` (one OTLP line) take
    their line's place, in the line's order; its dead letter, if any, is the line's.
    """
    out = Tables()
    merging: set[str] = set()
    for item in items:
        result = item.result
        if type(result) is Row:
            _add_row(out, merging, result)
        elif type(result) is Rows:
            for row in result.rows:
                _add_row(out, merging, row)
            if result.dead is not None:
                out.dead.append((item, result.dead))
            out.app_logs += result.app_logs
        elif type(result) is DeadLetter:
            out.dead.append((item, result))
        elif type(result) is AppLog:
            out.app_logs += 1
    for table in merging:
        _merge_table(out, table, _rows_of(items, table))
    out.rows = sum(map(len, out.copy.values())) + sum(map(len, out.merge.values()))
    return out


def _add_row(out: Tables, merging: set[str], row: Row) -> None:
    table = row.table
    if row.merge:
        merging.add(table)
    else:
        rows = out.copy.get(table)
        if rows is None:
            rows = out.copy[table] = []
        rows.append(row.values)
    if row.warnings:
        out.warnings += len(row.warnings)


def _rows_of(items: Sequence[Item], table: str) -> list[Row]:
    """``table``'s rows among ``items``, in arrival order (a line's rows in the line's order)."""
    out: list[Row] = []
    for i in items:
        r = i.result
        if type(r) is Row:
            if r.table == table:
                out.append(r)
        elif type(r) is Rows:
            out.extend(row for row in r.rows if row.table == table)
    return out


def _merge_table(out: Tables, table: str, rows: list[Row]) -> None:
    """Split ``table``'s rows (in arrival order) into plain ones and merged keys."""
    key_of = _KEY_OF[table]
    keys = {key_of(r.values) for r in rows if r.merge}
    plain = [r.values for r in rows if key_of(r.values) not in keys]
    merged = merge_in_order(table, [r.values for r in rows if key_of(r.values) in keys])
    if plain:
        out.copy[table] = plain
    else:
        out.copy.pop(table, None)
    out.merge[table] = merged


def merge_in_order(table: str, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One row per key: the rows of a key (in arrival order) merged by :func:`merge_values`."""
    key_of = _KEY_OF[table]
    merged: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for values in rows:
        key = key_of(values)
        old = merged.get(key)
        merged[key] = values if old is None else merge_values(table, old, values)
    return list(merged.values())


def merge_values(table: str, old: tuple[Any, ...], new: tuple[Any, ...]) -> tuple[Any, ...]:
    """Merge two records of one key: the same rule as the sink's ``ON CONFLICT DO UPDATE``.

    Newest non-null value wins per column; a final status (completed/failed) is never replaced
    by ``in_progress``; metadata objects are combined (newest keys win). So a trace's start and
    end records give the same row in whichever order they arrive.
    """
    merged = [n if n is not None else o for o, n in zip(old, new, strict=True)]
    si = _STATUS_INDEX.get(table)
    if si is not None and new[si] == contract.IN_PROGRESS and old[si] is not None:
        merged[si] = old[si]
    mi = _METADATA_INDEX[table]
    merged[mi] = _merge_json_objects(old[mi], new[mi])
    return tuple(merged)


def _merge_json_objects(old: Any, new: Any) -> Any:
    """Combine two jsonb object texts the way ``old || new`` does."""
    if not old or old == "{}":
        return new
    if not new or new == "{}":
        return old
    a, b = orjson.loads(old), orjson.loads(new)
    if isinstance(a, dict) and isinstance(b, dict):
        return orjson.dumps({**a, **b}).decode()
    return new
